//! Validation of an incoming inference request into a [`ValidInferenceRequest`].
//!
//! The body is kept as JSON: the gateway forwards everything it does not own to harmony
//! unchanged (sampling parameters, tools, response_format), and only reads and strips the
//! Adaptive extensions (session_id, labels, tags, store, metadata) and the routing fields.
//!
//! Only the fields the gateway reads are parsed into values; the others are forwarded as the
//! client's own JSON text, so a request costs one scan of its body, not a parse into a tree and
//! a re-encoding of it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::raw_json::{self, write_read_field, RawObject, ReadField};
use crate::{GatewayError, JsonText};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InferenceKind {
    Chat,
    Completion,
}

impl InferenceKind {
    pub fn route(self) -> &'static str {
        match self {
            InferenceKind::Chat => "/v1/chat/completions",
            InferenceKind::Completion => "/v1/completions",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InferenceKind::Chat => "chat",
            InferenceKind::Completion => "completion",
        }
    }
}

/// Default completion budget used to estimate a request's cost when max_tokens is absent.
const DEFAULT_MAX_TOKENS_ESTIMATE: u64 = 256;

#[derive(Debug, Clone)]
pub struct ValidInferenceRequest {
    pub kind: InferenceKind,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// Whether the client sent a session id (affinity applies only then).
    pub session_given: bool,
    pub session_id: uuid::Uuid,
    pub store: bool,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub metadata: Value,
    /// Messages (chat) as the client wrote them, or `[{"role":"user","content":prompt}]`
    /// (completion), for the record.
    pub messages: JsonText,
    /// The prompt text used for prefix affinity and cost estimates.
    pub prompt_text: String,
    pub estimated_tokens: u64,
    /// Everything else, forwarded to harmony: `{` then each field followed by `,`; see
    /// [`ValidInferenceRequest::upstream_body`].
    forwarded_fields: Vec<u8>,
    /// The sampling parameters, for the record.
    pub parameters: Value,
}

const EXTENSION_FIELDS: [&str; 7] = [
    "session_id",
    "labels",
    "tags",
    "store",
    "metadata",
    "system_prompt_args",
    "ab_campaign",
];
const PARAMETER_FIELDS: [&str; 12] = [
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "response_format",
];

/// The fields the gateway reads, each parsed into a value (but `messages`, checked on its text);
/// every other field is only forwarded. A field is looked up by name once, while the body is
/// scanned.
#[derive(Default)]
struct ReadFields<'a> {
    model: Option<Value>,
    stream: Option<Value>,
    stream_options: Option<Value>,
    store: Option<Value>,
    session_id: Option<Value>,
    labels: Option<Value>,
    tags: Option<Value>,
    metadata: Option<Value>,
    messages: Option<&'a RawValue>,
    prompt: Option<Value>,
    /// Indexed like [`PARAMETER_FIELDS`].
    parameters: [Option<Value>; PARAMETER_FIELDS.len()],
}

impl<'a> ReadFields<'a> {
    fn collect(fields: &[ReadField<'a>]) -> Self {
        let mut read = ReadFields::default();
        for (name, raw) in fields {
            if name == "messages" {
                read.messages = Some(raw);
                continue;
            }
            let slot = match name.as_ref() {
                "model" => &mut read.model,
                "stream" => &mut read.stream,
                "stream_options" => &mut read.stream_options,
                "store" => &mut read.store,
                "session_id" => &mut read.session_id,
                "labels" => &mut read.labels,
                "tags" => &mut read.tags,
                "metadata" => &mut read.metadata,
                "prompt" => &mut read.prompt,
                other => match PARAMETER_FIELDS.iter().position(|field| *field == other) {
                    Some(index) => &mut read.parameters[index],
                    None => continue,
                },
            };
            *slot = serde_json::from_str(raw.get()).ok();
        }
        read
    }

    fn parameter(&self, name: &str) -> Option<&Value> {
        let index = PARAMETER_FIELDS.iter().position(|field| *field == name)?;
        self.parameters[index].as_ref()
    }
}

impl ValidInferenceRequest {
    /// The body sent to harmony: the client's fields minus the Adaptive extensions, with
    /// `model` set to the name harmony serves the model under and, when streaming, usage
    /// always requested.
    pub fn upstream_body(&self, model_key: &str) -> Bytes {
        let mut body = Vec::with_capacity(self.forwarded_fields.len() + model_key.len() + 64);
        body.extend_from_slice(&self.forwarded_fields);
        body.extend_from_slice(b"\"model\":");
        // Serializing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut body, model_key);
        if self.stream {
            // Usage is always requested from harmony so that the interaction records it; the
            // final usage chunk is dropped on the way out when the client did not ask for it.
            body.extend_from_slice(b",\"stream_options\":{\"include_usage\":true}");
        }
        body.push(b'}');
        Bytes::from(body)
    }
}

pub fn validate(kind: InferenceKind, body: &[u8]) -> Result<ValidInferenceRequest, GatewayError> {
    let fields = match RawObject::parse(body) {
        Ok(fields) => fields.0,
        Err(error) if error.is_data() => {
            return Err(GatewayError::InvalidRequest(
                "the request body must be a JSON object".into(),
            ))
        }
        Err(error) => {
            return Err(GatewayError::InvalidRequest(format!(
                "malformed JSON body: {error}"
            )))
        }
    };
    let mut read = ReadFields::collect(&fields);
    let model = match &read.model {
        Some(Value::String(model)) if !model.trim().is_empty() => model.trim().to_owned(),
        Some(_) => {
            return Err(invalid(
                "model",
                "'model' must be a non-empty string of the form project or project/model",
            ))
        }
        None => {
            return Err(invalid(
                "model",
                "'model' is required (project or project/model)",
            ))
        }
    };
    let stream = optional_bool(read.stream.as_ref(), "stream")?.unwrap_or(false);
    let include_usage = match &read.stream_options {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                return Err(invalid(
                    "stream_options.include_usage",
                    "'stream_options.include_usage' must be a boolean",
                ))
            }
        },
        Some(_) => {
            return Err(invalid(
                "stream_options",
                "'stream_options' must be an object",
            ))
        }
    };
    let store = optional_bool(read.store.as_ref(), "store")?.unwrap_or(true);
    let (session_given, session_id) = match &read.session_id {
        None | Some(Value::Null) => (false, crate::ids::random_uuid()),
        Some(Value::String(text)) => match uuid::Uuid::parse_str(text) {
            Ok(id) => (true, id),
            Err(_) => return Err(invalid("session_id", "'session_id' must be a UUID")),
        },
        Some(_) => return Err(invalid("session_id", "'session_id' must be a UUID string")),
    };
    let labels = parse_labels(read.labels.as_ref(), read.metadata.as_ref())?;
    let tags = match &read.tags {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("tags", "'tags' must be an array of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("tags", "'tags' must be an array of strings")),
    };
    let metadata = read.metadata.take().unwrap_or(Value::Null);
    if !(metadata.is_null() || metadata.is_object()) {
        return Err(invalid("metadata", "'metadata' must be an object"));
    }
    let max_tokens =
        match read
            .parameter("max_tokens")
            .or_else(|| read.parameter("max_completion_tokens"))
        {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_u64().ok_or_else(|| {
                invalid("max_tokens", "'max_tokens' must be a non-negative integer")
            })?),
        };

    let (messages, prompt_text) = match kind {
        InferenceKind::Chat => chat_messages(read.messages)?,
        InferenceKind::Completion => completion_prompt(read.prompt.as_ref())?,
    };
    let estimated_tokens =
        (prompt_text.len() as u64 / 4) + max_tokens.unwrap_or(DEFAULT_MAX_TOKENS_ESTIMATE);

    let mut parameters = Map::new();
    for (field, value) in PARAMETER_FIELDS.iter().zip(read.parameters) {
        if let Some(value) = value {
            parameters.insert((*field).to_owned(), value);
        }
    }
    let mut forwarded_fields = Vec::with_capacity(body.len() + 2);
    forwarded_fields.push(b'{');
    for field in &fields {
        let (key, _) = field;
        let replaced = key == "model" || (stream && key == "stream_options");
        // OpenAI's `metadata` carries labels in the official client: an extension too, kept
        // for the record only.
        if replaced || EXTENSION_FIELDS.contains(&key.as_ref()) {
            continue;
        }
        write_read_field(&mut forwarded_fields, field);
        forwarded_fields.push(b',');
    }

    Ok(ValidInferenceRequest {
        kind,
        model,
        stream,
        include_usage,
        session_given,
        session_id,
        store,
        labels,
        tags,
        metadata,
        messages,
        prompt_text,
        estimated_tokens,
        forwarded_fields,
        parameters: Value::Object(parameters),
    })
}

fn invalid(param: &str, message: &str) -> GatewayError {
    GatewayError::InvalidRequest(format!("{message} (param: {param})"))
}

fn optional_bool(value: Option<&Value>, field: &str) -> Result<Option<bool>, GatewayError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(invalid(field, &format!("'{field}' must be a boolean"))),
    }
}

fn parse_labels(
    labels_value: Option<&Value>,
    metadata: Option<&Value>,
) -> Result<BTreeMap<String, String>, GatewayError> {
    let mut labels = BTreeMap::new();
    match labels_value {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (key, value) in entries {
                let Value::String(text) = value else {
                    return Err(invalid("labels", "'labels' must map strings to strings"));
                };
                labels.insert(key.clone(), text.clone());
            }
        }
        Some(_) => return Err(invalid("labels", "'labels' must be an object of strings")),
    }
    // The official OpenAI client sends labels through `metadata` (string values only).
    if let Some(Value::Object(metadata)) = metadata {
        for (key, value) in metadata {
            if let Value::String(text) = value {
                labels.entry(key.clone()).or_insert_with(|| text.clone());
            }
        }
    }
    Ok(labels)
}

/// Checks `messages` on its JSON text, without building a tree of it: an array of objects,
/// each with a string `role`, and a `content` that is a string, an array of parts or null. Returns
/// the text as sent, for the record, and the prompt text (every message's text, one per line),
/// for prefix affinity and the cost estimate.
fn chat_messages(messages: Option<&RawValue>) -> Result<(JsonText, String), GatewayError> {
    let not_an_array = || invalid("messages", "'messages' is required and must be an array");
    let messages = messages.ok_or_else(not_an_array)?;
    let items: Vec<&RawValue> = serde_json::from_str(messages.get()).map_err(|_| not_an_array())?;
    if items.is_empty() {
        return Err(invalid("messages", "'messages' must not be empty"));
    }
    let mut prompt_text = String::with_capacity(messages.get().len());
    for (index, message) in items.iter().enumerate() {
        let Ok(message) = RawObject::parse_str(message.get()) else {
            return Err(invalid(
                "messages",
                &format!("messages[{index}] must be an object"),
            ));
        };
        if !message
            .get("role")
            .is_some_and(|role| role.get().starts_with('"'))
        {
            return Err(invalid(
                "messages",
                &format!("messages[{index}].role must be a string"),
            ));
        }
        if let Some(content) = message.get("content") {
            append_content_text(content, &mut prompt_text).map_err(|NotContent| {
                invalid(
                    "messages",
                    &format!("messages[{index}].content must be a string or an array of parts"),
                )
            })?;
        }
        prompt_text.push('\n');
    }
    Ok((JsonText::from_raw(messages), prompt_text))
}

/// A message `content` that is neither a string, an array of parts nor null.
pub(crate) struct NotContent;

/// Appends the text of a chat message's `content`: the string itself, or the `text` of each
/// part of an array (parts without text, such as images, add nothing); null adds nothing.
pub(crate) fn append_content_text(content: &RawValue, out: &mut String) -> Result<(), NotContent> {
    match content.get().as_bytes().first() {
        Some(b'"') => {
            out.push_str(&raw_json::string_value(content).ok_or(NotContent)?);
            Ok(())
        }
        Some(b'[') => {
            let parts: Vec<&RawValue> =
                serde_json::from_str(content.get()).map_err(|_| NotContent)?;
            for part in parts {
                let text = RawObject::parse_str(part.get())
                    .ok()
                    .and_then(|part| part.get("text"))
                    .and_then(raw_json::string_value);
                if let Some(text) = text {
                    out.push_str(&text);
                }
            }
            Ok(())
        }
        Some(b'n') => Ok(()),
        _ => Err(NotContent),
    }
}

fn completion_prompt(prompt: Option<&Value>) -> Result<(JsonText, String), GatewayError> {
    let prompt = match prompt {
        Some(Value::String(prompt)) => prompt.clone(),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_owned()
        }
        Some(Value::Array(_)) => {
            return Err(invalid(
                "prompt",
                "only a single prompt per request is supported",
            ))
        }
        _ => {
            return Err(invalid(
                "prompt",
                "'prompt' is required and must be a string",
            ))
        }
    };
    let messages = JsonText::from_value(&serde_json::json!([{"role": "user", "content": prompt}]));
    Ok((messages, prompt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate_json(
        kind: InferenceKind,
        body: Value,
    ) -> Result<ValidInferenceRequest, GatewayError> {
        validate(kind, &serde_json::to_vec(&body).expect("encodable"))
    }

    #[test]
    fn strips_extensions_and_keeps_sampling_parameters() {
        let session = uuid::Uuid::new_v4();
        let request = validate_json(
            InferenceKind::Chat,
            json!({"model": "proj/m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2,
                   "session_id": session.to_string(), "labels": {"env": "test"}, "tags": ["a"], "store": false, "stream": true}),
        )
        .expect("valid");
        assert_eq!(request.session_id, session);
        assert!(
            request.session_given && request.stream && !request.store && !request.include_usage
        );
        assert_eq!(request.labels.get("env").map(String::as_str), Some("test"));
        let upstream: Value =
            serde_json::from_slice(&request.upstream_body("served-name")).expect("valid JSON");
        assert_eq!(upstream["temperature"], json!(0.2));
        assert_eq!(upstream["model"], json!("served-name"));
        assert_eq!(upstream["stream_options"], json!({"include_usage": true}));
        for field in ["session_id", "labels", "tags", "store"] {
            assert!(
                upstream.get(field).is_none(),
                "{field} must not reach harmony"
            );
        }
    }

    #[test]
    fn forwards_unknown_fields_as_sent_and_keeps_the_last_of_a_repeated_field() {
        let body = br#"{"model":"p","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"temperature":0.1,"temperature":0.7,"stream_options":{"include_usage":false},"we\u0069rd":1}"#;
        let request = validate(InferenceKind::Chat, body).expect("valid");
        let upstream: Value =
            serde_json::from_slice(&request.upstream_body("m")).expect("valid JSON");
        assert_eq!(
            upstream,
            json!({"messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                   "temperature": 0.7, "stream_options": {"include_usage": false}, "weird": 1, "model": "m"})
        );
        assert_eq!(request.parameters, json!({"temperature": 0.7}));
        assert!(matches!(
            validate(InferenceKind::Chat, b"{\"model\": \"p\""),
            Err(GatewayError::InvalidRequest(message)) if message.starts_with("malformed JSON body")
        ));
    }

    #[test]
    fn rejects_bad_input_with_the_offending_param() {
        let cases = [
            json!([1, 2]),
            json!({"messages": []}),
            json!({"model": "p", "messages": []}),
            json!({"model": "p", "messages": "hi"}),
            json!({"model": "p", "messages": [{"content": "x"}]}),
            json!({"model": "p", "messages": [{"role": "user", "content": "x"}], "session_id": "not-a-uuid"}),
            json!({"model": "p", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            json!({"model": "p", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            json!({"model": "p", "messages": [{"role": "user", "content": "x"}], "labels": {"a": 1}}),
            json!({"model": "p", "messages": [3]}),
            json!({"model": "p", "messages": [{"role": 1, "content": "x"}]}),
            json!({"model": "p", "messages": [{"role": "user", "content": 5}]}),
            json!({"model": "p", "messages": [{"role": "user", "content": {"text": "x"}}]}),
        ];
        for case in cases {
            let error = validate_json(InferenceKind::Chat, case.clone()).expect_err("invalid");
            assert_eq!(
                error.error_code(),
                adaptive_api_types::ErrorCode::InvalidRequest,
                "{case}"
            );
        }
    }

    #[test]
    fn messages_are_recorded_as_sent_and_read_as_text() {
        let messages = r#"[{"role":"system","content":"Be br\u0069ef."},{"role":"user","content":[{"type":"text","text":"Hi "},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"there"}],"name":"ann"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1"}]}]"#;
        let body = format!(r#"{{"model":"p","messages":{messages}}}"#);
        let request = validate(InferenceKind::Chat, body.as_bytes()).expect("valid");
        assert_eq!(
            request.messages.get(),
            messages,
            "kept as the client wrote it"
        );
        assert_eq!(request.prompt_text, "Be brief.\nHi there\n\n");
        let upstream: Value =
            serde_json::from_slice(&request.upstream_body("m")).expect("valid JSON");
        assert_eq!(
            upstream["messages"],
            serde_json::from_str::<Value>(messages).expect("JSON")
        );
    }

    #[test]
    fn completion_prompt_becomes_a_user_message_for_the_record() {
        let request = validate_json(
            InferenceKind::Completion,
            json!({"model": "p", "prompt": "Once upon"}),
        )
        .expect("valid");
        assert_eq!(
            request.messages.to_value(),
            json!([{"role": "user", "content": "Once upon"}])
        );
        assert_eq!(request.prompt_text, "Once upon");
    }
}
