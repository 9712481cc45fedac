//! The error vocabulary of model loading and conversion.
//!
//! Every variant that concerns a file names it, so that an operator who pointed the engine at
//! the wrong path (or at a half-downloaded file) reads which file and what is wrong with it
//! without a backtrace.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not what it claims to be (bad magic, truncated, inconsistent sizes).
    #[error("{path}: corrupt or truncated model file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A well-formed file of a model family or layout this crate does not run.
    #[error("{path}: unsupported model: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// A required hyper-parameter, tensor or file is missing or inconsistent.
    #[error("{path}: invalid model: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// The tokenizer or chat template could not be built.
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error("load options: {0}")]
    Options(String),
    /// The tensor backend failed (out of memory, device error).
    #[error("backend: {0}")]
    Backend(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
