//! Harmony's domain errors; each maps to one [`ErrorCode`] (the project's single vocabulary).

use adaptive_api_types::ErrorCode;
use adaptive_engine::EngineError;

use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum HarmonyError {
    /// A request parameter is missing or out of range; `param` names it.
    #[error("{message}")]
    InvalidParameter {
        message: String,
        param: Option<&'static str>,
    },
    #[error("this model's maximum context length is {max_tokens} tokens, but the request needs {requested_tokens} ({prompt_tokens} in the prompt)")]
    ContextLengthExceeded {
        max_tokens: usize,
        prompt_tokens: usize,
        requested_tokens: usize,
    },
    #[error("the model '{0}' does not exist on this replica")]
    ModelNotFound(String),
    #[error("the model '{key}' is already served from {path}")]
    ModelConflict { key: String, path: String },
    #[error("the model '{0}' is still loading")]
    ModelLoading(String),
    #[error("this replica is draining and takes no new requests")]
    Draining,
    /// `tool_choice` required a call and the reply did not complete one (max_tokens ran out, or
    /// a stop string cut it).
    #[error("tool_choice requires a tool call, but {0}")]
    ToolCallIncomplete(ToolCallIncomplete),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a required tool call is not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ToolCallIncomplete {
    #[error("max_tokens ran out before the call's arguments were a complete JSON object; raise max_tokens")]
    MaxTokens,
    #[error("the reply stopped (at a stop sequence) before the call's arguments were a complete JSON object")]
    Stopped,
}

impl HarmonyError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        HarmonyError::InvalidParameter {
            message: message.into(),
            param: Some(param),
        }
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            HarmonyError::InvalidParameter { .. } => ErrorCode::InvalidRequest,
            HarmonyError::ContextLengthExceeded { .. } => ErrorCode::ContextLengthExceeded,
            HarmonyError::ModelNotFound(_) => ErrorCode::NotFound,
            HarmonyError::ModelConflict { .. } => ErrorCode::Conflict,
            HarmonyError::ModelLoading(_) => ErrorCode::ModelNotOnline,
            HarmonyError::Draining => ErrorCode::Unavailable,
            HarmonyError::ToolCallIncomplete(_) => ErrorCode::InvalidRequest,
            HarmonyError::Engine(error) => match error {
                EngineError::EmptyPrompt | EngineError::InvalidRequest(_) => {
                    ErrorCode::InvalidRequest
                }
                EngineError::ContextLengthExceeded { .. } => ErrorCode::ContextLengthExceeded,
                EngineError::Overloaded { .. } => ErrorCode::Overloaded,
                EngineError::ShuttingDown => ErrorCode::Unavailable,
                EngineError::Executor(_) => ErrorCode::Internal,
            },
            HarmonyError::Model(ModelError::Load { .. }) => ErrorCode::InvalidRequest,
            HarmonyError::Model(ModelError::Fetch { code, .. }) => *code,
            HarmonyError::Model(_) => ErrorCode::InvalidRequest,
            HarmonyError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The request parameter at fault, for OpenAI's `error.param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            HarmonyError::InvalidParameter { param, .. } => *param,
            HarmonyError::ContextLengthExceeded { .. } => Some("messages"),
            HarmonyError::ModelNotFound(_) => Some("model"),
            HarmonyError::ToolCallIncomplete(ToolCallIncomplete::MaxTokens) => Some("max_tokens"),
            HarmonyError::ToolCallIncomplete(ToolCallIncomplete::Stopped) => Some("stop"),
            _ => None,
        }
    }
}
