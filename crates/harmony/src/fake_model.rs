//! A complete fake model: the engine's [`FakeExecutor`] behind a byte-level tokenizer and a
//! plain chat template. Spawned with a `fake://` path, it lets harmony run end to end (HTTP,
//! batching, streaming, metrics) without weights, in tests and in `adaptive serve` demos.
//!
//! Tokens 0..=255 are bytes, 256 is bos and 257 eos. The executor prefers lowercase letters and
//! picks eos about once every 48 positions, so answers are readable and of varied
//! length.

use std::sync::Arc;

use adaptive_api_types::harmony::SpawnModel;
use adaptive_api_types::openai::ChatMessage;
use adaptive_engine::fake::{FakeExecutor, FakeModelSpec};
use adaptive_engine::KvGeometry;

use crate::model::{ChatTemplate, LoadedModel, ModelError, ModelInfo, TextTokenizer};

pub const BOS: u32 = 256;
pub const EOS: u32 = 257;
const VOCAB_SIZE: usize = 258;
const BLOCK_SIZE: usize = 16;
const DEFAULT_MAX_SEQ_LEN: usize = 2048;
const DEFAULT_KV_TOKENS: usize = 16 * 1024;

pub fn load_fake_model(request: &SpawnModel) -> LoadedModel {
    let max_seq_len = request
        .max_seq_len
        .map_or(DEFAULT_MAX_SEQ_LEN, |len| len as usize);
    let kv_tokens = request
        .kv_cache_len
        .map_or(DEFAULT_KV_TOKENS, |len| len as usize);
    let geometry = KvGeometry {
        block_size: BLOCK_SIZE,
        num_blocks: kv_tokens.div_ceil(BLOCK_SIZE),
    };
    let spec = FakeModelSpec {
        vocab_size: VOCAB_SIZE,
        preferred_tokens: u32::from(b'a')..u32::from(b'z') + 1,
        eos: Some((EOS, 48)),
        step_delay: fake_step_delay(&request.path),
    };
    LoadedModel {
        executor: Box::new(FakeExecutor::new(geometry, spec)),
        tokenizer: Arc::new(ByteTokenizer),
        chat_template: Arc::new(PlainChatTemplate),
        info: ModelInfo {
            max_seq_len,
            eos_token_ids: vec![EOS],
            template_adds_bos: false,
        },
    }
}

/// `fake://slow...` takes 10 ms per step, so that a request stays in flight long enough for
/// tests of draining and disconnects; any other `fake://` path runs at full speed.
fn fake_step_delay(path: &str) -> std::time::Duration {
    if path.starts_with("fake://slow") {
        std::time::Duration::from_millis(10)
    } else {
        std::time::Duration::ZERO
    }
}

#[derive(Debug)]
pub struct ByteTokenizer;

impl TextTokenizer for ByteTokenizer {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let bos = add_special_tokens.then_some(BOS);
        Ok(bos.into_iter().chain(text.bytes().map(u32::from)).collect())
    }

    fn vocab_size(&self) -> usize {
        VOCAB_SIZE
    }

    fn decode(&self, tokens: &[u32]) -> Result<String, ModelError> {
        let bytes: Vec<u8> = tokens
            .iter()
            .filter_map(|&token| u8::try_from(token).ok())
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[derive(Debug)]
pub struct PlainChatTemplate;

impl ChatTemplate for PlainChatTemplate {
    fn render(
        &self,
        messages: &[ChatMessage],
        _tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let mut prompt = String::new();
        for message in messages {
            prompt.push_str(&format!("<|{}|>\n{}\n", message.role, message.text()));
        }
        if add_generation_prompt {
            prompt.push_str("<|assistant|>\n");
        }
        Ok(prompt)
    }
}
