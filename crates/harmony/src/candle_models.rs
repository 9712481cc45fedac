//! Real models through `adaptive-engine-models` (candle): GGUF files and HF directories,
//! adapted to harmony's [`crate::model`] seam.

use std::path::Path;
use std::sync::Arc;

use adaptive_api_types::harmony::SpawnModel;
use adaptive_api_types::openai::ChatMessage;
use adaptive_engine_models::{
    ChatTemplateInput, DeviceChoice, KvCacheSize, LoadOptions, QuantizedMatmul,
};

use crate::fake_model::PlainChatTemplate;
use crate::model::{ChatTemplate, LoadedModel, ModelError, ModelInfo, TextTokenizer};

/// Token slots per KV block for candle models.
const BLOCK_SIZE: usize = 16;

pub fn load(
    path: &Path,
    request: &SpawnModel,
    device: DeviceChoice,
    cpu_matmul: QuantizedMatmul,
) -> Result<LoadedModel, ModelError> {
    let defaults = LoadOptions::default();
    let options = LoadOptions {
        kv_cache: request.kv_cache_len.map_or(defaults.kv_cache, |tokens| {
            KvCacheSize::Blocks((tokens as usize).div_ceil(BLOCK_SIZE))
        }),
        block_size: BLOCK_SIZE,
        max_seq_len: request.max_seq_len.map(|len| len as usize),
        device,
        quantized_matmul: cpu_matmul,
        ..defaults
    };
    let loaded =
        adaptive_engine_models::load_model(path, &options).map_err(|error| ModelError::Load {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
    let tokenizer = Arc::new(CandleTokenizer {
        tokenizer: loaded.tokenizer,
        bos_token_id: loaded
            .info
            .add_bos_token
            .then_some(loaded.info.bos_token_id)
            .flatten(),
    });
    let chat_template: Arc<dyn ChatTemplate> = match loaded.chat_template {
        Some(template) => Arc::new(CandleChatTemplate(template)),
        None => Arc::new(PlainChatTemplate),
    };
    Ok(LoadedModel {
        executor: loaded.executor,
        tokenizer,
        chat_template,
        info: ModelInfo {
            max_seq_len: loaded.info.context_length,
            eos_token_ids: loaded.info.eos_token_ids,
            // The tokenizer adapter never doubles a bos the template already wrote.
            template_adds_bos: false,
        },
    })
}

struct CandleTokenizer {
    tokenizer: tokenizers::Tokenizer,
    /// Set when the model wants a bos token in front of every prompt.
    bos_token_id: Option<u32>,
}

impl TextTokenizer for CandleTokenizer {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|error| ModelError::Tokenizer(error.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        if let (true, Some(bos)) = (add_special_tokens, self.bos_token_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    fn decode(&self, tokens: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(tokens, true)
            .map_err(|error| ModelError::Tokenizer(error.to_string()))
    }
}

struct CandleChatTemplate(adaptive_engine_models::ChatTemplate);

impl ChatTemplate for CandleChatTemplate {
    fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let messages: Vec<adaptive_engine_models::ChatMessage> = messages
            .iter()
            .map(|message| adaptive_engine_models::ChatMessage::new(&message.role, message.text()))
            .collect();
        let tools = tools
            .and_then(serde_json::Value::as_array)
            .map(Vec::as_slice);
        self.0
            .render(&ChatTemplateInput {
                messages: &messages,
                add_generation_prompt,
                tools,
            })
            .map_err(|error| ModelError::ChatTemplate(error.to_string()))
    }
}
