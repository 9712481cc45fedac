//! The seam between harmony and model implementations: what "a loaded model" is.
//!
//! A [`ModelLoader`] turns a [`SpawnModel`] request into a [`LoadedModel`]: the executor the
//! engine's scheduler drives, plus the text side (tokenizer, chat template) that only the HTTP
//! layer needs. Harmony's own loader ([`DefaultModelLoader`]) serves `fake://` paths with the
//! engine's fake executor, fetches `model_registry://<key>` paths into the replica's
//! [`ModelCache`] and loads them from there, and loads everything else with
//! `adaptive-engine-models` (candle); tests can pass any loader.
//!
//! A registry model is loaded only from the cache's verified copy: `ModelCache::resolve_model`
//! checks every file against the manifest's sha256 and retries or fails, so a partial or corrupt
//! download never reaches the model loader.

use std::path::PathBuf;
use std::sync::Arc;

use adaptive_api_types::harmony::SpawnModel;
use adaptive_api_types::openai::ChatMessage;
use adaptive_api_types::ErrorCode;
use adaptive_engine::ModelExecutor;
use adaptive_registry::{ModelCache, RegistryError, MODEL_REGISTRY_SCHEME};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load model from {path}: {reason}")]
    Load { path: String, reason: String },
    /// A `model_registry://` model that could not be brought into the cache; `code` says why
    /// (unknown key, registry unreachable, corrupt objects, no registry configured).
    #[error("cannot fetch {path} from the model registry: {reason}")]
    Fetch {
        path: String,
        code: ErrorCode,
        reason: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
}

/// Text ↔ token ids for one model.
pub trait TextTokenizer: Send + Sync {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError>;
    /// Decodes ids to text, skipping special tokens. Incomplete UTF-8 at the end decodes to
    /// U+FFFD; [`crate::detokenize::IncrementalDecoder`] relies on that to hold text back.
    fn decode(&self, tokens: &[u32]) -> Result<String, ModelError>;
    /// Token ids are `0..vocab_size()`, added tokens included.
    fn vocab_size(&self) -> usize;
}

/// Renders a conversation into the prompt text the model was trained on.
pub trait ChatTemplate: Send + Sync {
    fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ModelError>;
}

/// Facts about a model that the HTTP layer and the scheduler need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Context window in tokens.
    pub max_seq_len: usize,
    pub eos_token_ids: Vec<u32>,
    /// Whether the chat template already writes the bos token (then encoding the rendered
    /// prompt must not add another).
    pub template_adds_bos: bool,
}

pub struct LoadedModel {
    pub executor: Box<dyn ModelExecutor>,
    pub tokenizer: Arc<dyn TextTokenizer>,
    pub chat_template: Arc<dyn ChatTemplate>,
    pub info: ModelInfo,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Loads models; `load` blocks (it reads weights) and is called on a blocking thread.
pub trait ModelLoader: Send + Sync + 'static {
    fn load(&self, request: &SpawnModel) -> Result<LoadedModel, ModelError>;
}

/// `fake://<anything>` → the fake model; `model_registry://<key>` → fetched into
/// `model_cache`, verified, then loaded from there; other paths → candle via
/// `adaptive-engine-models`.
#[derive(Debug, Clone, Default)]
pub struct DefaultModelLoader {
    /// `model_registry://` paths are refused when None (no `ADAPTIVE_MODEL_REGISTRY`).
    pub model_cache: Option<Arc<ModelCache>>,
    /// Where models run (`HARMONY_DEVICE`).
    pub device: adaptive_engine_models::DeviceChoice,
    /// How GGUF matrices run on CPU (`HARMONY_CPU_MATMUL`).
    pub cpu_matmul: adaptive_engine_models::QuantizedMatmul,
}

impl ModelLoader for DefaultModelLoader {
    fn load(&self, request: &SpawnModel) -> Result<LoadedModel, ModelError> {
        if request.path.starts_with("fake://") {
            return Ok(crate::fake_model::load_fake_model(request));
        }
        let path = if request.path.starts_with(MODEL_REGISTRY_SCHEME) {
            self.fetch_from_registry(&request.path)?
        } else {
            PathBuf::from(&request.path)
        };
        crate::candle_models::load(&path, request, self.device, self.cpu_matmul)
    }
}

impl DefaultModelLoader {
    /// The local path to load (the `.gguf` file or the HF directory) once every file of the
    /// model is in the cache and verified. Runs on the loader's blocking thread.
    fn fetch_from_registry(&self, registry_path: &str) -> Result<PathBuf, ModelError> {
        let fetch_error = |code: ErrorCode, reason: String| ModelError::Fetch {
            path: registry_path.to_owned(),
            code,
            reason,
        };
        let Some(model_cache) = &self.model_cache else {
            return Err(fetch_error(
                ErrorCode::NotSupported,
                "this replica has no model registry (set ADAPTIVE_MODEL_REGISTRY)".to_owned(),
            ));
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            fetch_error(ErrorCode::Internal, format!("no tokio runtime: {error}"))
        })?;
        let resolved = runtime
            .block_on(model_cache.resolve_model(registry_path))
            .map_err(|error| fetch_error(fetch_error_code(&error), error.to_string()))?;
        Ok(resolved.load_path())
    }
}

/// The registry's code, except for files that never matched their checksum or size: for a
/// spawn request that is a model that cannot be loaded (like a corrupt local file), not a
/// fault of this replica, and the message is worth showing.
fn fetch_error_code(error: &RegistryError) -> ErrorCode {
    match error {
        RegistryError::ChecksumMismatch { .. }
        | RegistryError::SizeMismatch { .. }
        | RegistryError::InvalidManifest { .. } => ErrorCode::InvalidRequest,
        other => other.error_code(),
    }
}
