//! Wire types of the feedback routes, with the names and shapes `adaptive-sdk` 0.14
//! (`rest/rest_types.py`) sends and reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::ChatMessage;

/// `ChatMessageInput`: content is a string or a list of parts; text parts are kept, joined,
/// and other parts (images) are not stored.
#[derive(Debug, Deserialize)]
pub struct ChatMessageInput {
    pub role: String,
    pub content: MessageContent,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl From<ChatMessageInput> for ChatMessage {
    fn from(message: ChatMessageInput) -> Self {
        let content = match message.content {
            MessageContent::Text(text) => text,
            MessageContent::Parts(parts) => parts
                .into_iter()
                .filter(|part| part.kind == "text")
                .filter_map(|part| part.text)
                .collect(),
        };
        ChatMessage {
            role: message.role,
            content,
        }
    }
}

/// `InteractionFeedback`.
#[derive(Debug, Deserialize)]
pub struct InteractionFeedback {
    /// Metric id or key.
    pub metric: String,
    /// A number, or for BOOL metrics also a boolean.
    pub value: serde_json::Value,
    pub reason: Option<String>,
    pub details: Option<String>,
    pub created_at: Option<String>,
}

/// `AddInteractionsRequest`.
#[derive(Debug, Deserialize)]
pub struct AddInteractionsRequest {
    /// The key of a model attached to the project.
    pub model_service: Option<String>,
    /// Project id or key.
    pub project: String,
    pub messages: Vec<ChatMessageInput>,
    pub completion: String,
    pub feedbacks: Option<Vec<InteractionFeedback>>,
    /// The end user the interaction was for.
    pub user: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// RFC 3339.
    pub created_at: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// `AddInteractionsResponse`.
#[derive(Debug, Serialize)]
pub struct AddInteractionsResponse {
    pub completion_id: String,
    pub session_id: String,
    pub feedback_ids: Vec<String>,
}

/// `Union[UUID, CompletionIdOrText1]`: a stored completion, or a text and the model key it
/// came from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CompletionIdOrText {
    Id(Uuid),
    Text { text: String, model: String },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComparisonTie {
    Good,
    Bad,
}

impl ComparisonTie {
    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonTie::Good => "good",
            ComparisonTie::Bad => "bad",
        }
    }
}

/// `AddComparisonRequest`.
#[derive(Debug, Deserialize)]
pub struct AddComparisonRequest {
    /// Metric id or key.
    pub metric: String,
    /// The prompt of completions given as text; ignored for completion ids.
    pub messages: Option<Vec<ChatMessageInput>>,
    pub preferred_completion: CompletionIdOrText,
    pub other_completion: CompletionIdOrText,
    pub tied: Option<ComparisonTie>,
    /// Project id or key.
    pub project: String,
    pub user_id: Option<Uuid>,
}

/// `ComparisonOutput`.
#[derive(Debug, Serialize)]
pub struct ComparisonOutput {
    pub comparison_id: String,
}

/// `AddOutcomeRequest`.
#[derive(Debug, Deserialize)]
pub struct AddOutcomeRequest {
    pub value: serde_json::Value,
    /// Project id or key.
    pub project_id: String,
    /// Metric id or key.
    pub metric: String,
    pub session_id: Uuid,
    pub user_id: Option<Uuid>,
}

/// `OutcomeOutput`.
#[derive(Debug, Serialize)]
pub struct OutcomeOutput {
    pub outcome_id: String,
}
