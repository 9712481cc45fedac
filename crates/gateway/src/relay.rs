//! Calls to harmony: replica choice with retries before the first token, and the stream relay.
//!
//! A replica that cannot be reached, answers 5xx or 429, or whose stream breaks before its first
//! event is excluded and the request goes to another (up to `max_retries` more). Once the first
//! event has been relayed the client has seen output, so a later failure ends the stream with an
//! OpenAI-shaped error event instead.
//!
//! Each relayed event is parsed once, to add what the Adaptive API promises (`session_id`,
//! `completion_id` per choice, a complete `delta`) and to accumulate the completion for the
//! interaction record; events are re-emitted one for one, as they arrive, never buffered.

use std::collections::HashSet;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::time::Instant;

use adaptive_api_types::{ErrorCode, OpenAiErrorBody};

use crate::balancer::{Lease, RouteHints};
use crate::request::{InferenceKind, ValidInferenceRequest};
use crate::sse::SseParser;
use crate::{GatewayError, GatewayState, Replica, ResolvedModel, Usage};

pub type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An upstream stream that has produced its first event.
pub struct OpenedStream {
    pub lease: Lease,
    pub first_event: String,
    pub parser: SseParser,
    pub body: ByteStream,
    pub ttft: Duration,
}

/// What went wrong with one replica, and whether another may be tried.
enum AttemptError {
    Retryable(String),
    Final(GatewayError),
}

pub async fn open_stream(
    state: &GatewayState,
    resolved: &ResolvedModel,
    request: &ValidInferenceRequest,
    body: &Bytes,
    started: Instant,
) -> Result<OpenedStream, GatewayError> {
    with_retries(state, resolved, request, |lease| {
        let state = state.clone();
        let body = body.clone();
        let route = request.kind.route();
        async move {
            let response = send(&state, &lease.replica, route, body).await?;
            let mut body: ByteStream = Box::pin(response.bytes_stream());
            let mut parser = SseParser::default();
            let first_event = tokio::time::timeout(state.inner.config.first_token_timeout, async {
                loop {
                    if let Some(event) = parser.next_event() {
                        return Ok(event);
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => parser.push(&chunk),
                        Some(Err(error)) => {
                            return Err(AttemptError::Retryable(format!(
                                "stream broke before the first token: {error}"
                            )))
                        }
                        None => {
                            return Err(AttemptError::Retryable(
                                "stream ended before the first token".into(),
                            ))
                        }
                    }
                }
            })
            .await
            .map_err(|_| {
                AttemptError::Retryable("no first token within the first-token timeout".into())
            })??;
            Ok(OpenedStream {
                lease,
                first_event,
                parser,
                body,
                ttft: started.elapsed(),
            })
        }
    })
    .await
}

pub async fn unary(
    state: &GatewayState,
    resolved: &ResolvedModel,
    request: &ValidInferenceRequest,
    body: &Bytes,
) -> Result<(Lease, Value), GatewayError> {
    with_retries(state, resolved, request, |lease| {
        let state = state.clone();
        let body = body.clone();
        let route = request.kind.route();
        async move {
            let response = send(&state, &lease.replica, route, body).await?;
            let bytes =
                tokio::time::timeout(state.inner.config.first_token_timeout, response.bytes())
                    .await
                    .map_err(|_| {
                        AttemptError::Retryable("no response within the first-token timeout".into())
                    })?
                    .map_err(|error| {
                        AttemptError::Retryable(format!("reading the response failed: {error}"))
                    })?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|error| {
                AttemptError::Retryable(format!("harmony answered invalid JSON: {error}"))
            })?;
            Ok((lease, value))
        }
    })
    .await
}

async fn with_retries<T, F, Fut>(
    state: &GatewayState,
    resolved: &ResolvedModel,
    request: &ValidInferenceRequest,
    mut attempt: F,
) -> Result<T, GatewayError>
where
    F: FnMut(Lease) -> Fut,
    Fut: std::future::Future<Output = Result<T, AttemptError>>,
{
    let hints = RouteHints {
        session_key: request
            .session_given
            .then(|| request.session_id.to_string()),
        prefix_hash: state.balancer().prefix_hash(&request.prompt_text),
        estimated_tokens: request.estimated_tokens,
    };
    let mut excluded = HashSet::new();
    let mut last_failure = String::new();
    let mut all_overloaded = true;
    for attempt_index in 0..=state.inner.config.max_retries {
        let Some(lease) = state.balancer().pick(&resolved.replicas, &excluded, &hints) else {
            break;
        };
        let replica_id = lease.replica.id.clone();
        if attempt_index > 0 {
            state.inner.metrics.upstream_retries.inc();
        }
        match attempt(lease).await {
            Ok(value) => return Ok(value),
            Err(AttemptError::Final(error)) => return Err(error),
            Err(AttemptError::Retryable(reason)) => {
                if !reason.starts_with(OVERLOADED_PREFIX) {
                    all_overloaded = false;
                }
                tracing::warn!(replica = %replica_id, %reason, "replica failed before the first token");
                excluded.insert(replica_id);
                last_failure = reason;
            }
        }
    }
    if all_overloaded && !excluded.is_empty() {
        return Err(GatewayError::Overloaded {
            message: format!("model '{}' is overloaded, retry later", request.model),
            retry_after_secs: 1,
        });
    }
    Err(GatewayError::Unavailable(format!(
        "no replica of model '{}' could serve the request: {last_failure}",
        request.model
    )))
}

const OVERLOADED_PREFIX: &str = "overloaded";

async fn send(
    state: &GatewayState,
    replica: &Replica,
    route: &str,
    body: Bytes,
) -> Result<reqwest::Response, AttemptError> {
    let url = format!("{}{}", replica.url.trim_end_matches('/'), route);
    let response = state
        .inner
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|error| AttemptError::Retryable(format!("cannot reach replica: {error}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.as_u16() == 429 {
        return Err(AttemptError::Retryable(format!(
            "{OVERLOADED_PREFIX}: replica is at capacity"
        )));
    }
    if status.is_server_error() {
        return Err(AttemptError::Retryable(format!(
            "replica answered {status}"
        )));
    }
    // A 4xx is about the request itself (context too long, bad parameter): every replica would
    // answer the same, so it goes back to the client as harmony phrased it.
    let bytes = response.bytes().await.unwrap_or_default();
    let upstream: Option<OpenAiErrorBody> = serde_json::from_slice(&bytes).ok();
    let (code, message) = match upstream {
        Some(body) => (
            parse_code(&body.error.code, status.as_u16()),
            body.error.message,
        ),
        None => (
            ErrorCode::InvalidRequest,
            format!("harmony rejected the request with {status}"),
        ),
    };
    Err(AttemptError::Final(GatewayError::Upstream {
        code,
        message,
    }))
}

fn parse_code(code: &str, status: u16) -> ErrorCode {
    ErrorCode::ALL
        .into_iter()
        .find(|candidate| candidate.as_str() == code)
        .unwrap_or(match status {
            404 => ErrorCode::NotFound,
            _ => ErrorCode::InvalidRequest,
        })
}

// === Response shaping ===

/// Adds the Adaptive fields to a response or chunk and returns the text and finish reason it
/// carries for choice 0.
pub struct Shaper {
    pub kind: InferenceKind,
    pub completion_id: String,
    pub session_id: String,
    pub model_label: String,
}

#[derive(Default)]
pub struct ShapedParts {
    pub text: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// A chunk with no choices (the usage chunk).
    pub usage_only: bool,
}

impl Shaper {
    pub fn shape(&self, object: &mut Map<String, Value>, streaming: bool) -> ShapedParts {
        let mut parts = ShapedParts::default();
        object.insert("session_id".into(), Value::String(self.session_id.clone()));
        object.insert("model".into(), Value::String(self.model_label.clone()));
        if let Some(Value::Object(usage)) = object.get("usage") {
            parts.usage = Some(Usage {
                prompt_tokens: usage
                    .get("prompt_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                completion_tokens: usage
                    .get("completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            });
        }
        let choices = match object.get_mut("choices") {
            Some(Value::Array(choices)) => choices,
            _ => {
                object.insert("choices".into(), Value::Array(Vec::new()));
                parts.usage_only = true;
                return parts;
            }
        };
        parts.usage_only = choices.is_empty();
        for choice in choices.iter_mut() {
            let Value::Object(choice) = choice else {
                continue;
            };
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            choice.insert(
                "completion_id".into(),
                Value::String(self.completion_id.clone()),
            );
            choice.insert("model".into(), Value::String(self.model_label.clone()));
            if let Some(Value::String(reason)) = choice.get("finish_reason") {
                if index == 0 {
                    parts.finish_reason = Some(reason.clone());
                }
            }
            let text = match self.kind {
                InferenceKind::Completion => choice
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                InferenceKind::Chat => {
                    let message_field = if streaming { "delta" } else { "message" };
                    let message = choice
                        .entry(message_field)
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(message) = message {
                        message
                            .entry("id")
                            .or_insert_with(|| Value::String(self.completion_id.clone()));
                        message
                            .entry("role")
                            .or_insert_with(|| Value::String("assistant".into()));
                        let content = message
                            .entry("content")
                            .or_insert_with(|| Value::String(String::new()));
                        if content.is_null() {
                            *content = Value::String(String::new());
                        }
                        content.as_str().unwrap_or_default().to_owned()
                    } else {
                        String::new()
                    }
                }
            };
            if index == 0 {
                parts.text = text;
            }
        }
        parts
    }
}

pub fn sse_data(value: &impl serde::Serialize) -> Bytes {
    let mut line = b"data: ".to_vec();
    // Serializing our own Value or error body cannot fail.
    let _ = serde_json::to_writer(&mut line, value);
    line.extend_from_slice(b"\n\n");
    Bytes::from(line)
}

pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";
