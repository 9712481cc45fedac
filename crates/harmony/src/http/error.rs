//! The one place that turns errors into HTTP responses (OpenAI's error shape on every route).

use adaptive_api_types::{ErrorCode, OpenAiErrorBody};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::HarmonyError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn body(&self) -> OpenAiErrorBody {
        let body = OpenAiErrorBody::new(self.code, self.message.clone());
        match &self.param {
            Some(param) => body.with_param(param.clone()),
            None => body,
        }
    }
}

impl From<HarmonyError> for ApiError {
    fn from(error: HarmonyError) -> Self {
        let code = error.error_code();
        if code.http_status() >= 500 && code == ErrorCode::Internal {
            // Internals go to the logs, never to the client.
            tracing::error!(%error, "request failed");
            return ApiError::new(code, "internal error");
        }
        ApiError {
            code,
            message: error.to_string(),
            param: error.param().map(str::to_owned),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}
