//! Calls to harmony: replica choice with retries before the first token, and the stream relay.
//!
//! A replica that cannot be reached, answers 5xx or 429, or whose stream breaks before its first
//! event is excluded and the request goes to another (up to `max_retries` more). Once the first
//! event has been relayed the client has seen output, so a later failure ends the stream with an
//! OpenAI-shaped error event instead.
//!
//! Each relayed event is read once, one level deep per object (see `raw_json`), to add what the
//! Adaptive API promises (`session_id`, `completion_id` per choice, a complete `delta`) and to
//! accumulate the completion for the interaction record; events are re-emitted one for one as
//! they arrive, never held back: the events that arrived together (one read from harmony) go to
//! the client in one write.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::time::Instant;

use adaptive_api_types::{ErrorCode, OpenAiErrorBody};

use crate::balancer::{Lease, RouteHints};
use crate::raw_json::{
    json_string, write_name, write_read_field, write_read_name, RawObject, ReadField,
};
use crate::request::{InferenceKind, ValidInferenceRequest};
use crate::sse::SseParser;
use crate::upstream::Exchange;
use crate::{GatewayError, GatewayState, Replica, ResolvedModel, Usage};

/// An upstream stream that has produced its first event.
pub struct OpenedStream {
    pub lease: Lease,
    pub first_event: String,
    pub parser: SseParser,
    pub body: Exchange,
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
            let mut body = response;
            let mut parser = SseParser::default();
            let first_event = tokio::time::timeout(state.inner.config.first_token_timeout, async {
                loop {
                    if let Some(event) = parser.next_event() {
                        return Ok(event);
                    }
                    match body.next_chunk().await {
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

/// A whole response, shaped for the client, and what it carries.
pub async fn unary(
    state: &GatewayState,
    resolved: &ResolvedModel,
    request: &ValidInferenceRequest,
    body: &Bytes,
    shaper: &Shaper,
) -> Result<(Lease, Bytes, ShapedParts), GatewayError> {
    with_retries(state, resolved, request, |lease| {
        let state = state.clone();
        let body = body.clone();
        let route = request.kind.route();
        async move {
            let mut response = send(&state, &lease.replica, route, body).await?;
            let bytes = tokio::time::timeout(
                state.inner.config.first_token_timeout,
                response.read_to_end(),
            )
            .await
            .map_err(|_| {
                AttemptError::Retryable("no response within the first-token timeout".into())
            })?
            .map_err(|error| {
                AttemptError::Retryable(format!("reading the response failed: {error}"))
            })?;
            let object = match RawObject::parse(&bytes) {
                Ok(object) => object,
                Err(error) if error.is_data() => {
                    return Err(AttemptError::Final(GatewayError::Unavailable(
                        "harmony answered a non-object body".into(),
                    )))
                }
                Err(error) => {
                    return Err(AttemptError::Retryable(format!(
                        "harmony answered invalid JSON: {error}"
                    )))
                }
            };
            let mut shaped = Vec::with_capacity(bytes.len() + 256);
            let parts = shaper.shape(&object, ShapeMode::Unary, &mut shaped);
            Ok((lease, Bytes::from(shaped), parts))
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
) -> Result<Exchange, AttemptError> {
    let (status, mut response) = state
        .inner
        .upstream
        .post_json(&replica.url, route, body)
        .await
        .map_err(|error| AttemptError::Retryable(format!("cannot reach replica: {error}")))?;
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
    let bytes = response.read_to_end().await.unwrap_or_default();
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
///
/// Works on the JSON text: the fields it sets are written fresh, the message (or delta) of each
/// choice is opened to default `id`, `role` and `content`, and every other field is copied as
/// harmony wrote it.
pub struct Shaper {
    kind: InferenceKind,
    /// The ids and label as JSON strings, encoded once per request.
    completion_id_json: String,
    session_id_json: String,
    model_label_json: String,
}

#[derive(Default)]
pub struct ShapedParts {
    pub text: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// A chunk with no choices (the usage chunk).
    pub usage_only: bool,
}

/// Where a shaped object goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeMode {
    /// A whole response: choices carry `message`, and a missing `usage` is reported as zeros.
    Unary,
    /// A stream chunk: choices carry `delta`; `usage` is dropped unless the client asked for it.
    Stream { keep_usage: bool },
}

#[derive(serde::Deserialize)]
struct UsageView {
    #[serde(default)]
    prompt_tokens: Value,
    #[serde(default)]
    completion_tokens: Value,
}

impl Shaper {
    pub fn new(
        kind: InferenceKind,
        completion_id: &str,
        session_id: &str,
        model_label: &str,
    ) -> Self {
        Self {
            kind,
            completion_id_json: json_string(completion_id),
            session_id_json: json_string(session_id),
            model_label_json: json_string(model_label),
        }
    }

    /// Appends `object` with the Adaptive fields to `out`.
    pub fn shape(&self, object: &RawObject<'_>, mode: ShapeMode, out: &mut Vec<u8>) -> ShapedParts {
        let mut parts = ShapedParts::default();
        let keep_usage = match mode {
            ShapeMode::Unary => true,
            ShapeMode::Stream { keep_usage } => keep_usage,
        };
        out.push(b'{');
        let mut has_usage = false;
        let mut choices_written = false;
        for field in &object.0 {
            let (name, value) = field;
            match name.as_ref() {
                "session_id" | "model" => continue,
                "usage" => {
                    has_usage = true;
                    if let Ok(usage) = serde_json::from_str::<UsageView>(value.get()) {
                        parts.usage = Some(Usage {
                            prompt_tokens: usage.prompt_tokens.as_u64().unwrap_or(0),
                            completion_tokens: usage.completion_tokens.as_u64().unwrap_or(0),
                        });
                    }
                    if !keep_usage {
                        continue;
                    }
                    write_read_field(out, field);
                }
                "choices" => {
                    if !self.write_choices(field, mode, &mut parts, out) {
                        continue;
                    }
                    choices_written = true;
                }
                _ => write_read_field(out, field),
            }
            out.push(b',');
        }
        if !choices_written {
            out.extend_from_slice(b"\"choices\":[],");
            parts.usage_only = true;
        }
        if mode == ShapeMode::Unary && !has_usage {
            out.extend_from_slice(
                b"\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0},",
            );
        }
        out.extend_from_slice(b"\"session_id\":");
        out.extend_from_slice(self.session_id_json.as_bytes());
        out.extend_from_slice(b",\"model\":");
        out.extend_from_slice(self.model_label_json.as_bytes());
        out.push(b'}');
        parts
    }

    /// Writes the `choices` field; `false` (and nothing written) when it is not an array.
    fn write_choices(
        &self,
        field: &ReadField<'_>,
        mode: ShapeMode,
        parts: &mut ShapedParts,
        out: &mut Vec<u8>,
    ) -> bool {
        let choices = field.1;
        // Choices are objects: read them in the same pass as the array. Only an array holding
        // something else is read again, to copy what is not an object as it is.
        if let Ok(objects) = serde_json::from_str::<Vec<RawObject>>(choices.get()) {
            write_choice_array(field, &objects, parts, out, |choice, parts, out| {
                self.shape_choice_object(choice, mode, parts, out)
            });
            return true;
        }
        let Ok(values) = serde_json::from_str::<Vec<&RawValue>>(choices.get()) else {
            return false;
        };
        write_choice_array(field, &values, parts, out, |choice, parts, out| {
            self.shape_choice(choice, mode, parts, out)
        });
        true
    }

    fn shape_choice(
        &self,
        choice: &RawValue,
        mode: ShapeMode,
        parts: &mut ShapedParts,
        out: &mut Vec<u8>,
    ) {
        let Ok(choice) = RawObject::parse_str(choice.get()) else {
            out.extend_from_slice(choice.get().as_bytes());
            return;
        };
        self.shape_choice_object(&choice, mode, parts, out);
    }

    fn shape_choice_object(
        &self,
        choice: &RawObject<'_>,
        mode: ShapeMode,
        parts: &mut ShapedParts,
        out: &mut Vec<u8>,
    ) {
        let index = choice
            .get("index")
            .and_then(|index| serde_json::from_str::<u64>(index.get()).ok())
            .unwrap_or(0);
        let message_field = match (self.kind, mode) {
            (InferenceKind::Completion, _) => None,
            (InferenceKind::Chat, ShapeMode::Unary) => Some("message"),
            (InferenceKind::Chat, ShapeMode::Stream { .. }) => Some("delta"),
        };
        out.push(b'{');
        let mut text = None;
        let mut message_written = false;
        for field in &choice.0 {
            let (name, value) = field;
            match name.as_ref() {
                "completion_id" | "model" => continue,
                "finish_reason" if index == 0 => {
                    parts.finish_reason = string_or_null(value);
                    write_read_field(out, field);
                }
                "text" if self.kind == InferenceKind::Completion => {
                    text = string_or_null(value);
                    write_read_field(out, field);
                }
                message if Some(message) == message_field => {
                    write_read_name(out, field);
                    text = Some(self.shape_message(value, out));
                    message_written = true;
                }
                _ => write_read_field(out, field),
            }
            out.push(b',');
        }
        if let (Some(field), false) = (message_field, message_written) {
            write_name(out, field);
            out.push(b'{');
            self.write_message_defaults(true, true, true, out);
            out.extend_from_slice(b"},");
            text = Some(String::new());
        }
        out.extend_from_slice(b"\"completion_id\":");
        out.extend_from_slice(self.completion_id_json.as_bytes());
        out.extend_from_slice(b",\"model\":");
        out.extend_from_slice(self.model_label_json.as_bytes());
        out.push(b'}');
        if index == 0 {
            parts.text = text.unwrap_or_default();
        }
    }

    /// Writes a message or delta with `id`, `role` and `content` defaulted; returns its content.
    fn shape_message(&self, message: &RawValue, out: &mut Vec<u8>) -> String {
        let Ok(message) = RawObject::parse_str(message.get()) else {
            out.extend_from_slice(message.get().as_bytes());
            return String::new();
        };
        out.push(b'{');
        let mut text = String::new();
        let (mut has_id, mut has_role, mut has_content) = (false, false, false);
        for field in &message.0 {
            let (name, value) = field;
            match name.as_ref() {
                "id" => has_id = true,
                "role" => has_role = true,
                "content" => {
                    has_content = true;
                    if value.get() == "null" {
                        write_read_name(out, field);
                        out.extend_from_slice(b"\"\"");
                        out.push(b',');
                        continue;
                    }
                    text = serde_json::from_str::<String>(value.get()).unwrap_or_default();
                }
                _ => {}
            }
            write_read_field(out, field);
            out.push(b',');
        }
        self.write_message_defaults(!has_id, !has_role, !has_content, out);
        out.push(b'}');
        text
    }

    /// Writes the missing defaults, each followed by a comma except the last written, then
    /// removes a trailing comma.
    fn write_message_defaults(&self, id: bool, role: bool, content: bool, out: &mut Vec<u8>) {
        if id {
            out.extend_from_slice(b"\"id\":");
            out.extend_from_slice(self.completion_id_json.as_bytes());
            out.push(b',');
        }
        if role {
            out.extend_from_slice(b"\"role\":\"assistant\",");
        }
        if content {
            out.extend_from_slice(b"\"content\":\"\",");
        }
        if out.last() == Some(&b',') {
            out.pop();
        }
    }
}

/// Writes `"choices":[…]`, each choice by `write_choice`; an empty array marks a usage-only
/// chunk.
fn write_choice_array<T>(
    field: &ReadField<'_>,
    choices: &[T],
    parts: &mut ShapedParts,
    out: &mut Vec<u8>,
    mut write_choice: impl FnMut(&T, &mut ShapedParts, &mut Vec<u8>),
) {
    parts.usage_only = choices.is_empty();
    write_read_name(out, field);
    out.push(b'[');
    for (position, choice) in choices.iter().enumerate() {
        if position > 0 {
            out.push(b',');
        }
        write_choice(choice, parts, out);
    }
    out.push(b']');
}

/// The string `value` holds; `None` for `null` (the usual `finish_reason` of a stream chunk,
/// checked first: a failed parse builds an error message) or any other non-string.
fn string_or_null(value: &RawValue) -> Option<String> {
    if value.get() == "null" {
        return None;
    }
    serde_json::from_str::<String>(value.get()).ok()
}

/// `data: <text>` and the blank line that ends the event.
pub fn sse_event(json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

pub fn sse_data(value: &impl serde::Serialize) -> Bytes {
    let mut line = b"data: ".to_vec();
    // Serializing our own Value or error body cannot fail.
    let _ = serde_json::to_writer(&mut line, value);
    line.extend_from_slice(b"\n\n");
    Bytes::from(line)
}

pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(kind: InferenceKind, body: Value, mode: ShapeMode) -> (Value, ShapedParts) {
        let shaper = Shaper::new(kind, "c-1", "s-1", "proj/chat");
        let text = serde_json::to_vec(&body).expect("encodable");
        let object = RawObject::parse(&text).expect("an object");
        let mut out = Vec::new();
        let parts = shaper.shape(&object, mode, &mut out);
        let shaped = serde_json::from_slice(&out).expect("the shaper writes valid JSON");
        (shaped, parts)
    }

    #[test]
    fn a_unary_chat_response_gets_ids_model_and_message_defaults() {
        let (shaped, parts) = shape(
            InferenceKind::Chat,
            json!({"id": "x", "model": "served", "session_id": "theirs", "choices": [
                {"index": 0, "message": {"content": "Hello"}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": null, "id": "m"}},
                {"index": 2},
                "odd"]}),
            ShapeMode::Unary,
        );
        assert_eq!(
            shaped,
            json!({"id": "x", "model": "proj/chat", "session_id": "s-1",
                   "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                   "choices": [
                {"index": 0, "finish_reason": "stop", "completion_id": "c-1", "model": "proj/chat",
                 "message": {"id": "c-1", "role": "assistant", "content": "Hello"}},
                {"index": 1, "completion_id": "c-1", "model": "proj/chat",
                 "message": {"id": "m", "role": "assistant", "content": ""}},
                {"index": 2, "completion_id": "c-1", "model": "proj/chat",
                 "message": {"id": "c-1", "role": "assistant", "content": ""}},
                "odd"]})
        );
        assert_eq!(parts.text, "Hello");
        assert_eq!(parts.finish_reason.as_deref(), Some("stop"));
        assert!(parts.usage.is_none() && !parts.usage_only);
    }

    #[test]
    fn stream_chunks_drop_usage_unless_asked_and_report_it_either_way() {
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
        let (hidden, parts) = shape(
            InferenceKind::Chat,
            chunk.clone(),
            ShapeMode::Stream { keep_usage: false },
        );
        assert!(hidden.get("usage").is_none());
        assert_eq!(hidden["choices"][0]["delta"]["content"], json!("Hi"));
        assert_eq!(
            parts.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 1
            })
        );
        let (kept, _) = shape(
            InferenceKind::Chat,
            chunk,
            ShapeMode::Stream { keep_usage: true },
        );
        assert_eq!(kept["usage"]["total_tokens"], json!(4));

        let (usage_only, parts) = shape(
            InferenceKind::Chat,
            json!({"usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
            ShapeMode::Stream { keep_usage: true },
        );
        assert!(parts.usage_only);
        assert_eq!(usage_only["choices"], json!([]));
    }

    #[test]
    fn a_completion_choice_carries_its_text() {
        let (shaped, parts) = shape(
            InferenceKind::Completion,
            json!({"choices": [{"index": 0, "text": "upon a \"time\"", "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 2, "completion_tokens": 4}}),
            ShapeMode::Unary,
        );
        assert_eq!(parts.text, "upon a \"time\"");
        assert_eq!(shaped["choices"][0]["completion_id"], json!("c-1"));
        assert!(shaped["choices"][0].get("message").is_none());
        assert_eq!(
            shaped["usage"],
            json!({"prompt_tokens": 2, "completion_tokens": 4})
        );
    }
}
