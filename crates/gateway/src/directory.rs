//! What the gateway needs from the rest of the control plane, as two small traits.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::GatewayError;

/// Who is calling, as established by [`Directory::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
}

/// A harmony replica that serves the resolved model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Stable id (e.g. `<partition_key>/<ordinal>`); affinity is keyed on it.
    pub id: String,
    /// Base URL, e.g. `http://pool-0.pool-hdls:50053`.
    pub url: String,
}

/// The outcome of resolving `model: "project[/model]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub project_id: String,
    pub project_key: String,
    pub model_service_id: String,
    pub model_service_key: String,
    pub model_id: String,
    /// The name harmony serves the model under.
    pub model_key: String,
    /// Routable replicas (online, not draining, not expiring). Empty means the model is not
    /// online anywhere: the request fails with `model_not_online`.
    pub replicas: Vec<Replica>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelListing {
    /// `project/model`, what clients pass as `model`.
    pub id: String,
    pub created_unix: i64,
    pub owned_by: String,
}

#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Establishes the caller from the request headers (`Authorization: Bearer`, cookies).
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, GatewayError>;

    /// Resolves `project` or `project/model` for this caller, checking its permission to use it.
    async fn resolve(&self, caller: &Caller, model: &str) -> Result<ResolvedModel, GatewayError>;

    /// The models this caller may call.
    async fn list_models(&self, caller: &Caller) -> Result<Vec<ModelListing>, GatewayError>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A completed call, as recorded: its usage always, and the interaction (the completion of the
/// domain model) when the caller left `store` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionRecord {
    /// The completion id returned to the client; the idempotency key of the insert.
    pub completion_id: uuid::Uuid,
    /// False when the request said `store: false`: only the usage is kept, and `messages` and
    /// `completion` are left empty here so the content is never held or written.
    pub stored: bool,
    pub session_id: uuid::Uuid,
    pub project_id: String,
    pub model_service_id: String,
    pub model_id: String,
    pub caller: Caller,
    /// `chat` or `completion`.
    pub kind: String,
    /// Chat messages as sent (the client's JSON text), or `[{"role":"user","content":prompt}]`
    /// for completions; `null` when not `stored`. [`InteractionRecord::message_texts`] reads
    /// them.
    pub messages: JsonText,
    pub completion: String,
    pub finish_reason: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// Sampling parameters as sent (temperature, max_tokens, ...).
    pub parameters: serde_json::Value,
    pub usage: Usage,
    pub ttft_ms: Option<f64>,
    pub total_ms: f64,
    pub replica_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// One recorded message as text: its role and the text of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText {
    pub role: String,
    pub content: String,
}

impl InteractionRecord {
    /// Each recorded message's role (`user` when absent) and text: a string content as it is,
    /// the `text` of each part of an array joined, nothing for null or other shapes.
    pub fn message_texts(&self) -> Vec<MessageText> {
        let Ok(messages) = serde_json::from_str::<Vec<&RawValue>>(self.messages.get()) else {
            return Vec::new();
        };
        messages
            .into_iter()
            .map(|message| {
                let fields = crate::raw_json::RawObject::parse_str(message.get()).ok();
                let field = |name: &str| fields.as_ref().and_then(|fields| fields.get(name));
                let role = field("role")
                    .and_then(crate::raw_json::string_value)
                    .map_or_else(|| "user".to_owned(), |role| role.into_owned());
                let mut content = String::new();
                if let Some(raw_content) = field("content") {
                    // A shape that is not content text leaves it empty, as documented.
                    let _ = crate::request::append_content_text(raw_content, &mut content);
                }
                MessageText { role, content }
            })
            .collect()
    }
}

/// JSON text kept as the client wrote it: the gateway forwards and records it without building
/// a tree of it (which cost more than the rest of request validation together).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    pub fn null() -> Self {
        Self(RawValue::NULL.to_owned())
    }

    pub fn from_raw(raw: &RawValue) -> Self {
        Self(raw.to_owned())
    }

    pub fn from_value(value: &serde_json::Value) -> Self {
        // A `Value` always encodes to valid JSON.
        serde_json::value::to_raw_value(value).map_or_else(|_| Self::null(), Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The text parsed into a tree (`Null` if it were not JSON, which it always is).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl Default for JsonText {
    fn default() -> Self {
        Self::null()
    }
}

/// The same text; JSON that differs only in spacing or field order is not equal.
impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.get())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("interaction store failure: {0}")]
pub struct StoreError(pub String);

#[async_trait]
pub trait InteractionStore: Send + Sync + 'static {
    /// Inserts a batch: the usage of every record, and the interaction of those `stored`. Must be
    /// idempotent on `completion_id`: the recorder retries a batch whose outcome it could not
    /// observe, and each call must be counted, and each interaction stored, exactly once.
    async fn store_interactions(&self, batch: &[InteractionRecord]) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record_with_messages(messages: JsonText) -> InteractionRecord {
        InteractionRecord {
            completion_id: uuid::Uuid::nil(),
            stored: true,
            session_id: uuid::Uuid::nil(),
            project_id: "p".into(),
            model_service_id: "s".into(),
            model_id: "m".into(),
            caller: Caller {
                user_id: None,
                api_key_id: None,
            },
            kind: "chat".into(),
            messages,
            completion: String::new(),
            finish_reason: None,
            labels: BTreeMap::new(),
            tags: Vec::new(),
            metadata: serde_json::Value::Null,
            parameters: serde_json::Value::Null,
            usage: Usage::default(),
            ttft_ms: None,
            total_ms: 0.0,
            replica_id: "r".into(),
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn message_texts_read_strings_parts_and_nulls() {
        let messages = JsonText::from_value(&json!([
            {"role": "system", "content": "Be \"brief\"."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"content": "no role"},
        ]));
        let texts = record_with_messages(messages).message_texts();
        let pairs: Vec<(&str, &str)> = texts
            .iter()
            .map(|text| (text.role.as_str(), text.content.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("system", "Be \"brief\"."),
                ("user", "ab"),
                ("assistant", ""),
                ("user", "no role")
            ]
        );
        assert!(record_with_messages(JsonText::null())
            .message_texts()
            .is_empty());
    }

    #[test]
    fn json_text_compares_and_prints_as_its_text() {
        let text = JsonText::from_value(&json!({"a": [1, 2]}));
        assert_eq!(text.get(), r#"{"a":[1,2]}"#);
        assert_eq!(format!("{text:?}"), r#"{"a":[1,2]}"#);
        assert_eq!(text.to_value(), json!({"a": [1, 2]}));
        assert_eq!(text, JsonText::from_value(&json!({"a": [1, 2]})));
        assert_ne!(text, JsonText::null());
    }
}
