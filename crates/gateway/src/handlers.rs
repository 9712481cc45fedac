//! HTTP handlers: extract → authenticate → resolve → relay → record.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::metrics::ModelLabels;
use crate::raw_json::RawObject;
use crate::relay::{self, ShapeMode, ShapedParts, Shaper, SSE_DONE};
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
        .count_request(kind, response.status().as_u16());
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
    let request = request::validate(kind, body)?;
    let resolved = state
        .inner
        .directory
        .resolve(&caller, &request.model)
        .await?;
    if resolved.replicas.is_empty() {
        return Err(GatewayError::ModelNotOnline(request.model.clone()));
    }
    let upstream_body = request.upstream_body(&resolved.model_key);
    let completion_id = crate::ids::random_uuid();
    let mut completion_id_text = uuid::Uuid::encode_buffer();
    let mut session_id_text = uuid::Uuid::encode_buffer();
    let shaper = Shaper::new(
        kind,
        completion_id
            .hyphenated()
            .encode_lower(&mut completion_id_text),
        request
            .session_id
            .hyphenated()
            .encode_lower(&mut session_id_text),
        &format!("{}/{}", resolved.project_key, resolved.model_service_key),
    );
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
    mut prepared: Prepared,
    started: Instant,
) -> Result<Response, GatewayError> {
    let (lease, body, parts) = relay::unary(
        state,
        &prepared.resolved,
        &prepared.request,
        &prepared.upstream_body,
        &prepared.shaper,
    )
    .await?;
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
        &mut prepared,
        parts,
        &lease.replica.id,
        Some(elapsed.as_secs_f64() * 1000.0),
        elapsed.as_secs_f64() * 1000.0,
    );
    enqueue(state, record).await?;
    drop(lease);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
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
        .observe_ttft(prepared.request.kind, opened.ttft.as_secs_f64());
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
        broken: None,
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
    opened: Option<crate::upstream::Exchange>,
    parser: crate::sse::SseParser,
    lease: Option<crate::balancer::Lease>,
    /// A failure of the upstream body met while looking for already-arrived events.
    broken: Option<hyper::Error>,
    finished: bool,
}

impl StreamRelay {
    /// The next bytes for the client: every event that has already arrived, shaped, in one
    /// chunk (one write), waiting only when none has.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut chunk: Vec<u8> = Vec::new();
        loop {
            if self.finished {
                return (!chunk.is_empty()).then(|| Bytes::from(chunk));
            }
            let event = match self.pending.take() {
                Some(event) => event,
                None if chunk.is_empty() => match self.next_event().await {
                    Ok(event) => event,
                    Err(error) => {
                        self.finished = true;
                        self.lease = None;
                        tracing::warn!(%error, "stream failed after the first token");
                        return Some(relay::sse_data(&error.to_body()));
                    }
                },
                None => match self.arrived_event() {
                    Some(event) => event,
                    None => return Some(Bytes::from(chunk)),
                },
            };
            if event == "[DONE]" {
                self.finished = true;
                self.complete().await;
                chunk.extend_from_slice(SSE_DONE);
                return Some(Bytes::from(chunk));
            }
            let Ok(object) = RawObject::parse_str(&event) else {
                tracing::warn!("skipping a non-JSON event from harmony");
                continue;
            };
            if object.get("error").is_some() {
                self.finished = true;
                self.lease = None;
                chunk.extend_from_slice(&relay::sse_event(event.as_bytes()));
                return Some(Bytes::from(chunk));
            }
            let include_usage = self.prepared.request.include_usage;
            let event_start = chunk.len();
            chunk.reserve(event.len() + 256);
            chunk.extend_from_slice(b"data: ");
            let parts: ShapedParts = self.prepared.shaper.shape(
                &object,
                ShapeMode::Stream {
                    keep_usage: include_usage,
                },
                &mut chunk,
            );
            self.text.push_str(&parts.text);
            if parts.finish_reason.is_some() {
                self.finish_reason = parts.finish_reason;
            }
            if parts.usage.is_some() {
                self.usage = parts.usage;
            }
            if parts.usage_only && !include_usage {
                chunk.truncate(event_start);
                continue;
            }
            chunk.extend_from_slice(b"\n\n");
        }
    }

    /// The next event if it has already been received, without waiting.
    fn arrived_event(&mut self) -> Option<String> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Some(event);
            }
            match self.opened.as_mut()?.ready_chunk()? {
                Some(Ok(bytes)) => self.parser.push(&bytes),
                Some(Err(error)) => {
                    self.broken = Some(error);
                    return None;
                }
                None => return None,
            }
        }
    }

    async fn next_event(&mut self) -> Result<String, GatewayError> {
        let idle_timeout = self.state.inner.config.idle_timeout;
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(event);
            }
            if let Some(error) = self.broken.take() {
                return Err(GatewayError::Unavailable(format!(
                    "the replica's stream broke: {error}"
                )));
            }
            let Some(body) = self.opened.as_mut() else {
                return Err(GatewayError::Unavailable(
                    "the upstream stream is closed".into(),
                ));
            };
            match tokio::time::timeout(idle_timeout, body.next_chunk()).await {
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
        // What follows [DONE] is the end of the body: reading it frees the connection for reuse.
        if let Some(body) = self.opened.as_mut() {
            while let Some(Some(Ok(_))) = body.ready_chunk() {}
        }
        self.opened = None;
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
            &mut self.prepared,
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
    let kind = prepared.request.kind;
    if let Some(ttft) = ttft_seconds {
        state.inner.metrics.observe_ttft(kind, ttft);
    }
    state.inner.metrics.observe_duration(kind, total_seconds);
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

/// Takes the request's content out of `prepared`: a request is recorded once.
fn build_record(
    prepared: &mut Prepared,
    parts: ShapedParts,
    replica_id: &str,
    ttft_ms: Option<f64>,
    total_ms: f64,
) -> InteractionRecord {
    let request = &mut prepared.request;
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
            std::mem::take(&mut request.messages)
        } else {
            crate::JsonText::null()
        },
        completion: if stored { parts.text } else { String::new() },
        finish_reason: parts.finish_reason,
        labels: std::mem::take(&mut request.labels),
        tags: std::mem::take(&mut request.tags),
        metadata: std::mem::take(&mut request.metadata),
        parameters: std::mem::take(&mut request.parameters),
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
