//! HTTP handlers: extract → authenticate → resolve → relay → record.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::metrics::{ModelLabels, RouteLabels, RouteStatusLabels};
use crate::relay::{self, ShapedParts, Shaper, SSE_DONE};
use crate::request::{self, InferenceKind, ValidInferenceRequest};
use crate::{Caller, GatewayError, GatewayState, InteractionRecord, ResolvedModel, Usage};

pub async fn chat_completions(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer(state, headers, body, InferenceKind::Chat).await
}

pub async fn completions(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer(state, headers, body, InferenceKind::Completion).await
}

pub async fn list_models(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let caller = state.inner.directory.authenticate(&headers).await?;
    let models = state.inner.directory.list_models(&caller).await?;
    let data: Vec<Value> = models
        .into_iter()
        .map(|model| json!({"id": model.id, "object": "model", "created": model.created_unix, "owned_by": model.owned_by}))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

async fn infer(
    state: GatewayState,
    headers: HeaderMap,
    body: Bytes,
    kind: InferenceKind,
) -> Response {
    let started = Instant::now();
    let response = match prepare(&state, &headers, &body, kind).await {
        Ok(prepared) if prepared.request.stream => {
            stream_response(state.clone(), prepared, started).await
        }
        Ok(prepared) => unary_response(&state, prepared, started).await,
        Err(error) => Err(error),
    }
    .unwrap_or_else(IntoResponse::into_response);
    state
        .inner
        .metrics
        .requests
        .get_or_create(&RouteStatusLabels {
            route: kind.route(),
            status: response.status().as_u16(),
        })
        .inc();
    response
}

struct Prepared {
    caller: Caller,
    request: ValidInferenceRequest,
    resolved: ResolvedModel,
    upstream_body: Bytes,
    /// The id the client sees on every choice and the interaction is stored under.
    completion_id: uuid::Uuid,
    shaper: Shaper,
}

async fn prepare(
    state: &GatewayState,
    headers: &HeaderMap,
    body: &Bytes,
    kind: InferenceKind,
) -> Result<Prepared, GatewayError> {
    let caller = state.inner.directory.authenticate(headers).await?;
    let json: Value = serde_json::from_slice(body)
        .map_err(|error| GatewayError::InvalidRequest(format!("malformed JSON body: {error}")))?;
    let mut request = request::validate(kind, json)?;
    let resolved = state
        .inner
        .directory
        .resolve(&caller, &request.model)
        .await?;
    if resolved.replicas.is_empty() {
        return Err(GatewayError::ModelNotOnline(request.model.clone()));
    }
    request
        .upstream_body
        .insert("model".into(), Value::String(resolved.model_key.clone()));
    let upstream_body =
        Bytes::from(serde_json::to_vec(&request.upstream_body).map_err(|error| {
            GatewayError::internal("cannot encode the upstream request", error)
        })?);
    let completion_id = uuid::Uuid::new_v4();
    let shaper = Shaper {
        kind,
        completion_id: completion_id.to_string(),
        session_id: request.session_id.to_string(),
        model_label: format!("{}/{}", resolved.project_key, resolved.model_service_key),
    };
    Ok(Prepared {
        caller,
        request,
        resolved,
        upstream_body,
        completion_id,
        shaper,
    })
}

async fn unary_response(
    state: &GatewayState,
    prepared: Prepared,
    started: Instant,
) -> Result<Response, GatewayError> {
    let (lease, mut value) = relay::unary(
        state,
        &prepared.resolved,
        &prepared.request,
        &prepared.upstream_body,
    )
    .await?;
    let Value::Object(object) = &mut value else {
        return Err(GatewayError::Unavailable(
            "harmony answered a non-object body".into(),
        ));
    };
    let parts = prepared.shaper.shape(object, false);
    object
        .entry("usage")
        .or_insert_with(|| json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
    let elapsed = started.elapsed();
    observe(
        state,
        &prepared,
        &parts,
        Some(elapsed.as_secs_f64()),
        elapsed.as_secs_f64(),
    );
    // Recorded with or without `store`: usage counts every call.
    let record = build_record(
        &prepared,
        parts,
        &lease.replica.id,
        Some(elapsed.as_secs_f64() * 1000.0),
        elapsed.as_secs_f64() * 1000.0,
    );
    enqueue(state, record).await?;
    drop(lease);
    Ok(axum::Json(value).into_response())
}

async fn stream_response(
    state: GatewayState,
    prepared: Prepared,
    started: Instant,
) -> Result<Response, GatewayError> {
    let opened = relay::open_stream(
        &state,
        &prepared.resolved,
        &prepared.request,
        &prepared.upstream_body,
        started,
    )
    .await?;
    state
        .inner
        .metrics
        .ttft_seconds
        .get_or_create(&RouteLabels {
            route: prepared.request.kind.route(),
        })
        .observe(opened.ttft.as_secs_f64());
    let relay = StreamRelay {
        state,
        prepared,
        started,
        ttft_ms: opened.ttft.as_secs_f64() * 1000.0,
        text: String::new(),
        finish_reason: None,
        usage: None,
        pending: Some(opened.first_event),
        opened: Some(opened.body),
        parser: opened.parser,
        lease: Some(opened.lease),
        finished: false,
    };
    let body = Body::from_stream(futures::stream::unfold(relay, |mut relay| async move {
        let next = relay.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(next), relay))
    }));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The state of one relayed stream. Dropping it (client gone) drops the upstream body, which
/// closes the connection to harmony and cancels the generation there.
struct StreamRelay {
    state: GatewayState,
    prepared: Prepared,
    started: Instant,
    ttft_ms: f64,
    text: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    pending: Option<String>,
    opened: Option<relay::ByteStream>,
    parser: crate::sse::SseParser,
    lease: Option<crate::balancer::Lease>,
    finished: bool,
}

impl StreamRelay {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.finished {
                return None;
            }
            let event = match self.pending.take() {
                Some(event) => event,
                None => match self.next_event().await {
                    Ok(event) => event,
                    Err(error) => {
                        self.finished = true;
                        self.lease = None;
                        tracing::warn!(%error, "stream failed after the first token");
                        return Some(relay::sse_data(&error.to_body()));
                    }
                },
            };
            if event == "[DONE]" {
                self.finished = true;
                self.complete().await;
                return Some(Bytes::from_static(SSE_DONE));
            }
            let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&event) else {
                tracing::warn!("skipping a non-JSON event from harmony");
                continue;
            };
            if object.contains_key("error") {
                self.finished = true;
                self.lease = None;
                return Some(relay::sse_data(&Value::Object(object)));
            }
            let parts: ShapedParts = self.prepared.shaper.shape(&mut object, true);
            self.text.push_str(&parts.text);
            if parts.finish_reason.is_some() {
                self.finish_reason = parts.finish_reason;
            }
            if parts.usage.is_some() {
                self.usage = parts.usage;
            }
            if parts.usage_only && !self.prepared.request.include_usage {
                continue;
            }
            if !self.prepared.request.include_usage {
                object.remove("usage");
            }
            return Some(relay::sse_data(&Value::Object(object)));
        }
    }

    async fn next_event(&mut self) -> Result<String, GatewayError> {
        let idle_timeout = self.state.inner.config.idle_timeout;
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(event);
            }
            let Some(body) = self.opened.as_mut() else {
                return Err(GatewayError::Unavailable(
                    "the upstream stream is closed".into(),
                ));
            };
            match tokio::time::timeout(idle_timeout, body.next()).await {
                Err(_) => {
                    return Err(GatewayError::Timeout(
                        "the model stopped producing tokens (idle timeout)".into(),
                    ))
                }
                Ok(None) => {
                    return Err(GatewayError::Unavailable(
                        "the replica closed the stream before it finished".into(),
                    ))
                }
                Ok(Some(Err(error))) => {
                    return Err(GatewayError::Unavailable(format!(
                        "the replica's stream broke: {error}"
                    )))
                }
                Ok(Some(Ok(chunk))) => self.parser.push(&chunk),
            }
        }
    }

    async fn complete(&mut self) {
        let total_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let parts = ShapedParts {
            text: std::mem::take(&mut self.text),
            finish_reason: self.finish_reason.take(),
            usage: self.usage,
            usage_only: false,
        };
        observe(&self.state, &self.prepared, &parts, None, total_ms / 1000.0);
        let replica_id = self
            .lease
            .as_ref()
            .map(|lease| lease.replica.id.clone())
            .unwrap_or_default();
        self.lease = None;
        let record = build_record(
            &self.prepared,
            parts,
            &replica_id,
            Some(self.ttft_ms),
            total_ms,
        );
        if let Err(error) = enqueue(&self.state, record).await {
            tracing::error!(%error, "interaction not recorded");
        }
    }
}

fn observe(
    state: &GatewayState,
    prepared: &Prepared,
    parts: &ShapedParts,
    ttft_seconds: Option<f64>,
    total_seconds: f64,
) {
    let route = RouteLabels {
        route: prepared.request.kind.route(),
    };
    if let Some(ttft) = ttft_seconds {
        state
            .inner
            .metrics
            .ttft_seconds
            .get_or_create(&route)
            .observe(ttft);
    }
    state
        .inner
        .metrics
        .duration_seconds
        .get_or_create(&route)
        .observe(total_seconds);
    if let Some(usage) = parts.usage {
        let model = ModelLabels {
            model: prepared.resolved.model_key.clone(),
        };
        state
            .inner
            .metrics
            .tokens_processed
            .get_or_create(&model)
            .inc_by(usage.prompt_tokens);
        state
            .inner
            .metrics
            .tokens_generated
            .get_or_create(&model)
            .inc_by(usage.completion_tokens);
    }
}

fn build_record(
    prepared: &Prepared,
    parts: ShapedParts,
    replica_id: &str,
    ttft_ms: Option<f64>,
    total_ms: f64,
) -> InteractionRecord {
    let request = &prepared.request;
    let stored = request.store;
    InteractionRecord {
        completion_id: prepared.completion_id,
        stored,
        session_id: request.session_id,
        project_id: prepared.resolved.project_id.clone(),
        model_service_id: prepared.resolved.model_service_id.clone(),
        model_id: prepared.resolved.model_id.clone(),
        caller: prepared.caller.clone(),
        kind: request.kind.as_str().to_owned(),
        messages: if stored {
            request.messages.clone()
        } else {
            serde_json::Value::Null
        },
        completion: if stored { parts.text } else { String::new() },
        finish_reason: parts.finish_reason,
        labels: request.labels.clone(),
        tags: request.tags.clone(),
        metadata: request.metadata.clone(),
        parameters: request.parameters.clone(),
        usage: parts.usage.unwrap_or_default(),
        ttft_ms,
        total_ms,
        replica_id: replica_id.to_owned(),
        created_at: chrono::Utc::now(),
    }
}

async fn enqueue(state: &GatewayState, record: InteractionRecord) -> Result<(), GatewayError> {
    state.inner.recorder.record(record).await.map_err(|_| {
        GatewayError::Unavailable(
            "the server is shutting down; the interaction was not recorded".into(),
        )
    })
}
