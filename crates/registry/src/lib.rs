//! The model registry on object storage (S3 or a local directory): import, manifests,
//! checksums, listing and deletion, and the worker-side cache.
//!
//! ```text
//! <registry root>/<key>/manifest.json          makes the model exist (written last)
//! <registry root>/<key>/files/<relative path>  the model's files
//! <registry root>/<key>/.import/...            resume markers of an unfinished import
//! ```
//!
//! The root is a URL (`s3://bucket/prefix`, `file:///path` or a path) parsed by
//! [`RegistryStore::from_url`] with an explicit [`StoreEnv`]; the shared directory uses the
//! same type. The control plane stores models as `model_registry://<key>`.
//!
//! # For harmony: resolving a model
//!
//! ```no_run
//! # async fn load() -> Result<(), adaptive_registry::RegistryError> {
//! use adaptive_registry::{ModelCache, RegistryStore, StoreEnv};
//!
//! let env = StoreEnv::from_process();
//! let store = RegistryStore::from_url("s3://bucket/model_registry", &env)?;
//! // One cache per replica, kept for the process lifetime; the directory is its own.
//! let cache = ModelCache::new(store, "/cache/models", 200 << 30);
//! let model_dir = cache.resolve("model_registry://smollm2-135m").await?;
//! // model_dir holds the manifest's files at their relative paths: a `.gguf` file, or
//! // config.json + *.safetensors + tokenizer files. Every file matched its sha256.
//!
//! // Or with the manifest: format, architecture, context length, and the path to load
//! // (the .gguf file itself for GGUF models, the directory for HF models).
//! let resolved = cache.resolve_model("model_registry://smollm2-135m").await?;
//! let load_from = resolved.load_path();
//! # let _ = (model_dir, load_from);
//! # Ok(()) }
//! ```
//!
//! [`ModelCache::resolve`] downloads with parallel range requests, verifies every file, reuses
//! what is cached and evicts least-recently-used models beyond the budget; see [`cache`].
//! Errors carry [`RegistryError::error_code`]: `not_found` for an unknown key,
//! `unavailable` when the store is unreachable, `internal` for a checksum that never matched.
//!
//! # For the CLI and the control plane
//!
//! [`import_model`] uploads a directory or `.gguf` file (see [`import`] for resume);
//! [`Registry::list_models`] and [`Registry::delete_model`] list and delete. Whether a model may
//! be deleted (not deployed) is for the caller to decide before calling.

pub mod cache;
pub mod error;
pub mod import;
pub mod inspect;
pub mod key;
pub mod location;
pub mod manifest;
pub mod registry;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use cache::{CachedModel, DownloadOptions, ModelCache, ResolvedModel};
pub use error::RegistryError;
pub use import::{import_model, ImportOptions, ImportRequest, ImportSummary};
pub use key::{ModelKey, MODEL_REGISTRY_SCHEME};
pub use location::{RegistryStore, StoreEnv};
pub use manifest::{Manifest, ManifestFile, ModelFormat};
pub use registry::{DeletedModel, Registry};
