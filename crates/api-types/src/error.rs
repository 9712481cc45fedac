//! The error vocabulary: one small set of codes, each with one HTTP status.
//!
//! Every domain error in the project implements `fn error_code(&self) -> ErrorCode`; exactly one
//! function per HTTP surface turns an error into a response. On `/v1/*` and `/api/v1/*` the body is
//! OpenAI-shaped ([`OpenAiErrorBody`]); GraphQL puts the code in `extensions.code`.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The string form ([`ErrorCode::as_str`]) is part of the
/// public API: clients match on it, so codes are only ever added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, a missing field, a value out of range.
    InvalidRequest,
    /// The prompt (plus max_tokens) does not fit the model's context window.
    ContextLengthExceeded,
    /// No credentials, or credentials that are not valid.
    Unauthenticated,
    /// Valid credentials without the permission the operation needs.
    PermissionDenied,
    /// The project, model, completion or other resource does not exist.
    NotFound,
    /// The resource already exists (duplicate key).
    AlreadyExists,
    /// The request conflicts with the current state (e.g. deleting a deployed model).
    Conflict,
    /// Too many requests or sequences in flight; retry after a delay.
    Overloaded,
    /// The model exists but is not online on any replica.
    ModelNotOnline,
    /// A dependency (database, object store, harmony) is unreachable; retrying later may succeed.
    Unavailable,
    /// An upstream (harmony) did not answer in time.
    Timeout,
    /// The operation is valid but not supported by this deployment (e.g. on this pool).
    NotSupported,
    /// A bug or an unexpected failure. The details go to the logs, never to the client.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidRequest,
        ErrorCode::ContextLengthExceeded,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::Overloaded,
        ErrorCode::ModelNotOnline,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::NotSupported,
        ErrorCode::Internal,
    ];

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::ContextLengthExceeded => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Timeout => 408,
            ErrorCode::AlreadyExists | ErrorCode::Conflict => 409,
            ErrorCode::Overloaded => 429,
            ErrorCode::NotSupported => 501,
            ErrorCode::ModelNotOnline | ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::ContextLengthExceeded => "context_length_exceeded",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ModelNotOnline => "model_not_online",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::Internal => "internal",
        }
    }

    /// The OpenAI `error.type` family this code belongs to.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::ContextLengthExceeded
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::Conflict
            | ErrorCode::NotSupported => "invalid_request_error",
            ErrorCode::Unauthenticated => "authentication_error",
            ErrorCode::PermissionDenied => "permission_error",
            ErrorCode::Overloaded => "rate_limit_error",
            ErrorCode::ModelNotOnline | ErrorCode::Unavailable | ErrorCode::Timeout => {
                "service_unavailable_error"
            }
            ErrorCode::Internal => "server_error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub param: Option<String>,
    pub code: String,
}

impl OpenAiErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: OpenAiErrorDetail {
                message: message.into(),
                kind: code.openai_type().to_owned(),
                param: None,
                code: code.as_str().to_owned(),
            },
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_string_and_a_4xx_or_5xx_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code string {code}");
            assert!((400..600).contains(&code.http_status()));
            let round_trip: ErrorCode =
                serde_json::from_value(serde_json::json!(code.as_str())).expect("parses");
            assert_eq!(round_trip, code);
        }
    }

    #[test]
    fn openai_body_has_openai_shape() {
        let body = OpenAiErrorBody::new(ErrorCode::NotFound, "project 'x' not found");
        assert_eq!(
            serde_json::to_value(&body).expect("serializes"),
            serde_json::json!({"error": {"message": "project 'x' not found", "type": "invalid_request_error", "param": null, "code": "not_found"}})
        );
    }
}
