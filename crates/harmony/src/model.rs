//! The seam between harmony and model implementations: what "a loaded model" is.
//!
//! A [`ModelLoader`] turns a [`SpawnModel`] request into a [`LoadedModel`]: the executor the
//! engine's scheduler drives, plus the text side (tokenizer, chat template) that only the HTTP
//! layer needs. Harmony's own loader ([`DefaultModelLoader`]) serves `fake://` paths with the
//! engine's fake executor and everything else with `adaptive-engine-models` (candle); tests can
//! pass any loader.

use std::sync::Arc;

use adaptive_api_types::harmony::SpawnModel;
use adaptive_api_types::openai::ChatMessage;
use adaptive_engine::ModelExecutor;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load model from {path}: {reason}")]
    Load { path: String, reason: String },
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

/// `fake://<anything>` → the fake model; other paths → candle via `adaptive-engine-models`.
/// `model_registry://<key>` resolves under `model_registry_root`.
#[derive(Debug, Clone, Default)]
pub struct DefaultModelLoader {
    pub model_registry_root: Option<std::path::PathBuf>,
}

impl ModelLoader for DefaultModelLoader {
    fn load(&self, request: &SpawnModel) -> Result<LoadedModel, ModelError> {
        if request.path.starts_with("fake://") {
            return Ok(crate::fake_model::load_fake_model(request));
        }
        let path = match request.path.strip_prefix("model_registry://") {
            Some(key) => match &self.model_registry_root {
                Some(root) => root.join(key),
                None => return Err(ModelError::Load {
                    path: request.path.clone(),
                    reason:
                        "no model registry root is configured (HARMONY_SETTING_MODEL_REGISTRY_ROOT)"
                            .to_owned(),
                }),
            },
            None => std::path::PathBuf::from(&request.path),
        };
        crate::candle_models::load(&path, request)
    }
}
