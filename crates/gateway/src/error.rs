//! The gateway's errors and the one function that turns them into OpenAI-shaped responses.

use adaptive_api_types::{ErrorCode, OpenAiErrorBody};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("model '{0}' is not online on any replica")]
    ModelNotOnline(String),
    /// Every replica tried was busy, or the recorder's queue is saturated.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Timeout(String),
    /// No replica could be reached or every one failed before producing a token.
    #[error("{0}")]
    Unavailable(String),
    /// An error harmony returned, passed through with its status and code.
    #[error("{message}")]
    Upstream { code: ErrorCode, message: String },
    /// A bug or an unexpected failure; `detail` goes to the logs only.
    #[error("{context}")]
    Internal { context: String, detail: String },
}

impl GatewayError {
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            context: context.to_owned(),
            detail: detail.to_string(),
        }
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            GatewayError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            GatewayError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            GatewayError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            GatewayError::NotFound(_) => ErrorCode::NotFound,
            GatewayError::ModelNotOnline(_) => ErrorCode::ModelNotOnline,
            GatewayError::Overloaded { .. } => ErrorCode::Overloaded,
            GatewayError::Timeout(_) => ErrorCode::Timeout,
            GatewayError::Unavailable(_) => ErrorCode::Unavailable,
            GatewayError::Upstream { code, .. } => *code,
            GatewayError::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// The body clients see. Internal details never leave the process.
    pub fn to_body(&self) -> OpenAiErrorBody {
        let message = match self {
            GatewayError::Internal { .. } => "internal error".to_owned(),
            other => other.to_string(),
        };
        OpenAiErrorBody::new(self.error_code(), message)
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let code = self.error_code();
        if let GatewayError::Internal { context, detail } = &self {
            tracing::error!(%context, %detail, "gateway internal error");
        }
        let status = axum::http::StatusCode::from_u16(code.http_status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.to_body())).into_response();
        if let GatewayError::Overloaded {
            retry_after_secs, ..
        } = &self
        {
            if let Ok(value) = axum::http::HeaderValue::from_str(&retry_after_secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}
