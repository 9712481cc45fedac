//! The registry's error type: one enum for the whole crate, mapped onto the shared
//! [`ErrorCode`] vocabulary by [`RegistryError::error_code`].

use adaptive_api_types::error::ErrorCode;

/// Everything that can go wrong in the registry, the importer and the worker cache.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A registry or shared-directory URL that cannot be used.
    #[error("invalid store url '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A model key that is empty, too long or contains characters we do not allow.
    #[error("invalid model key '{key}': {reason}")]
    InvalidKey { key: String, reason: String },
    /// No manifest under this key: the model was never imported, was deleted, or its import
    /// has not finished.
    #[error("model '{key}' not found in the registry")]
    ModelNotFound { key: String },
    /// An import targets a key that already has a manifest.
    #[error("model '{key}' already exists in the registry")]
    ModelAlreadyExists { key: String },
    /// The bytes read do not hash to what the manifest (or the import marker) promises.
    #[error("checksum mismatch for '{path}': expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    /// An object whose size differs from the manifest's.
    #[error("size mismatch for '{path}': expected {expected} bytes, got {actual}")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    /// A manifest that does not parse or that describes an impossible layout.
    #[error("invalid manifest for '{key}': {reason}")]
    InvalidManifest { key: String, reason: String },
    /// An import source that is neither an HF-layout directory nor a `.gguf` file.
    #[error("cannot import '{path}': {reason}")]
    UnsupportedSource { path: String, reason: String },
    /// A model that alone does not fit the cache's size budget.
    #[error("model '{key}' needs {needed} bytes but the cache budget is {budget} bytes")]
    CacheBudgetTooSmall {
        key: String,
        needed: u64,
        budget: u64,
    },
    /// The object store refused or failed an operation.
    #[error("object store: {context}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// A local file operation failed (import source or cache directory).
    #[error("io: {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RegistryError::InvalidUrl { .. }
            | RegistryError::InvalidKey { .. }
            | RegistryError::UnsupportedSource { .. }
            | RegistryError::CacheBudgetTooSmall { .. } => ErrorCode::InvalidRequest,
            RegistryError::ModelNotFound { .. } => ErrorCode::NotFound,
            RegistryError::ModelAlreadyExists { .. } => ErrorCode::AlreadyExists,
            RegistryError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            } => ErrorCode::NotFound,
            RegistryError::Store { .. } => ErrorCode::Unavailable,
            RegistryError::ChecksumMismatch { .. }
            | RegistryError::SizeMismatch { .. }
            | RegistryError::InvalidManifest { .. }
            | RegistryError::Io { .. } => ErrorCode::Internal,
        }
    }

    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        let context = context.into();
        move |source| RegistryError::Store { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| RegistryError::Io { context, source }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
