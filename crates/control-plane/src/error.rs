//! The control plane's API error: every failure a handler can return, mapped through the one
//! [`ErrorCode`] vocabulary. [`ApiError::into_response`] is the only place REST error bodies are
//! built; GraphQL errors are built by [`ApiError::into_graphql`].
//!
//! 5xx and authentication errors never carry internals: the response says what the client can
//! act on, and the cause is logged here with the code.

use adaptive_api_types::{ErrorCode, OpenAiErrorBody};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::registry::RegistryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    ModelStorage(#[from] crate::model_storage::ModelStorageError),
    #[error(transparent)]
    Upload(#[from] crate::uploads::UploadError),
    #[error(transparent)]
    Dataset(#[from] crate::datasets::DatasetError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// An OIDC login that did not complete (bad state, refused code, invalid ID token).
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("the request did not complete within {0} seconds")]
    Timeout(u64),
}

impl ApiError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ApiError::Store(error) => error.error_code(),
            ApiError::Registry(error) => error.error_code(),
            ApiError::ModelStorage(error) => error.error_code(),
            ApiError::Upload(error) => error.error_code(),
            ApiError::Dataset(error) => error.error_code(),
            ApiError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ApiError::Unauthenticated(_) | ApiError::LoginFailed(_) => ErrorCode::Unauthenticated,
            ApiError::Forbidden(_) => ErrorCode::PermissionDenied,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::NotSupported(_) => ErrorCode::NotSupported,
            ApiError::Timeout(_) => ErrorCode::Timeout,
        }
    }

    /// The message clients see: the error's own text, except for internal errors.
    pub fn public_message(&self) -> String {
        let code = self.error_code();
        if code == ErrorCode::Internal {
            return "internal error".to_owned();
        }
        self.to_string()
    }

    /// Log server-side failures with their cause chain (never sent to the client).
    fn log(&self) {
        let code = self.error_code();
        if code.http_status() < 500 {
            return;
        }
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        tracing::warn!(code = %code, error = %self, causes = ?causes, "request failed");
    }

    pub fn into_graphql(self) -> async_graphql::Error {
        use async_graphql::ErrorExtensions;
        self.log();
        let code = self.error_code();
        async_graphql::Error::new(self.public_message()).extend_with(|_, extensions| {
            extensions.set("code", code.as_str());
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let code = self.error_code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = OpenAiErrorBody::new(code, self.public_message());
        (status, axum::Json(body)).into_response()
    }
}
