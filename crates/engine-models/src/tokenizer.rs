//! Tokenizers: built from GGUF metadata or loaded from an HF `tokenizer.json`, plus an
//! incremental detokenizer for streaming.
//!
//! A GGUF file carries its vocabulary as arrays (`tokenizer.ggml.tokens`, `.merges`,
//! `.token_type`, `.scores`). Rather than driving the `tokenizers` builders field by field, we
//! write the equivalent HF `tokenizer.json` document and let `tokenizers` parse it: the same
//! document is what the GGUF→HF converter saves, so both load paths run the same tokenizer.
//!
//! - `gpt2` (byte-level BPE): vocabulary and merges as given; the pre-tokenizer follows
//!   `tokenizer.ggml.pre` (the split regex llama.cpp uses for that model family).
//! - `llama` (SentencePiece BPE with byte fallback): merges are derived from the scores the way
//!   HF's `LlamaConverter` does, with `▁` for spaces and `<0xNN>` byte tokens.
//!
//! Control tokens (type 3) and user-defined tokens (type 4) become added tokens, so that
//! `<|im_start|>` in a rendered chat template encodes as one token.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::config::GgufMetadata;
use crate::error::ModelError;

/// llama.cpp token types (`llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The regexes llama.cpp (`llama-vocab.cpp`) splits with before byte-level BPE.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Special token ids read alongside the vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Whether prompts should start with BOS when the chat template does not add it.
    pub add_bos_token: bool,
}

fn string_array(metadata: &GgufMetadata<'_>, key: &str) -> Option<Vec<String>> {
    match metadata.get(key)? {
        gguf_file::Value::Array(values) => values
            .iter()
            .map(|v| match v {
                gguf_file::Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn number_array(metadata: &GgufMetadata<'_>, key: &str) -> Option<Vec<f64>> {
    use gguf_file::Value as V;
    match metadata.get(key)? {
        gguf_file::Value::Array(values) => values
            .iter()
            .map(|v| match v {
                V::I32(x) => Some(f64::from(*x)),
                V::U32(x) => Some(f64::from(*x)),
                V::I8(x) => Some(f64::from(*x)),
                V::U8(x) => Some(f64::from(*x)),
                V::I16(x) => Some(f64::from(*x)),
                V::U16(x) => Some(f64::from(*x)),
                V::I64(x) => Some(*x as f64),
                V::U64(x) => Some(*x as f64),
                V::F32(x) => Some(f64::from(*x)),
                V::F64(x) => Some(*x),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Builds the HF `tokenizer.json` document equivalent to a GGUF file's tokenizer metadata.
pub(crate) fn gguf_tokenizer_json(
    metadata: &GgufMetadata<'_>,
) -> Result<(Value, SpecialTokens), ModelError> {
    let path = metadata.path;
    let fail = |reason: String| ModelError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let model = metadata
        .string("tokenizer.ggml.model")
        .ok_or_else(|| fail("metadata tokenizer.ggml.model missing".into()))?;
    let tokens = string_array(metadata, "tokenizer.ggml.tokens")
        .ok_or_else(|| fail("metadata tokenizer.ggml.tokens missing".into()))?;
    let token_types = number_array(metadata, "tokenizer.ggml.token_type")
        .unwrap_or_else(|| vec![1.; tokens.len()]);
    if token_types.len() != tokens.len() {
        return Err(fail(format!(
            "{} token types for {} tokens",
            token_types.len(),
            tokens.len()
        )));
    }
    let added_tokens: Vec<Value> = tokens
        .iter()
        .zip(&token_types)
        .enumerate()
        .filter(|(_, (_, &kind))| {
            kind as i64 == TOKEN_TYPE_CONTROL || kind as i64 == TOKEN_TYPE_USER_DEFINED
        })
        .map(|(id, (content, &kind))| {
            json!({
                "id": id,
                "content": content,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": kind as i64 == TOKEN_TYPE_CONTROL,
            })
        })
        .collect();
    let token_id = |key: &str| metadata.uint(key).map(|id| id as u32);
    let bos_token_id = token_id("tokenizer.ggml.bos_token_id");
    let eos_token_id = token_id("tokenizer.ggml.eos_token_id");
    let mut eos_token_ids: Vec<u32> = eos_token_id.into_iter().collect();
    if let Some(eot) = token_id("tokenizer.ggml.eot_token_id") {
        if !eos_token_ids.contains(&eot) {
            eos_token_ids.push(eot);
        }
    }
    let token_text = |id: Option<u32>| id.and_then(|id| tokens.get(id as usize).cloned());
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), json!(id)))
        .collect();

    let document = match model {
        "gpt2" => {
            let merges = string_array(metadata, "tokenizer.ggml.merges")
                .ok_or_else(|| fail("metadata tokenizer.ggml.merges missing".into()))?;
            let pre = metadata.string("tokenizer.ggml.pre").unwrap_or("default");
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added_tokens,
                "normalizer": null,
                "pre_tokenizer": byte_level_pre_tokenizer(pre),
                "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": null,
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                    "vocab": vocab, "merges": merges,
                },
            })
        }
        "llama" => {
            let scores = number_array(metadata, "tokenizer.ggml.scores")
                .ok_or_else(|| fail("metadata tokenizer.ggml.scores missing".into()))?;
            let merges = sentencepiece_merges(&tokens, &scores);
            let unk = token_text(token_id("tokenizer.ggml.unknown_token_id"));
            let add_space_prefix = metadata
                .bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(true);
            let mut normalizers = Vec::new();
            if add_space_prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
            }
            normalizers
                .push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if add_space_prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added_tokens,
                "normalizer": {"type": "Sequence", "normalizers": normalizers},
                "pre_tokenizer": null,
                "post_processor": null,
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": unk,
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                    "vocab": vocab, "merges": merges,
                },
            })
        }
        other => {
            return Err(ModelError::unsupported(
                path,
                format!("tokenizer model {other:?} (supported: gpt2, llama)"),
            ))
        }
    };
    let special = SpecialTokens {
        bos_token_id,
        eos_token_ids,
        bos_token: token_text(bos_token_id),
        eos_token: token_text(eos_token_id),
        add_bos_token: metadata
            .bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(model == "llama"),
    };
    Ok((document, special))
}

fn byte_level_pre_tokenizer(pre: &str) -> Value {
    let split = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]})
    };
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" => split(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_SPLIT),
        // SmolLM's HF tokenizer splits digits one by one before GPT-2's byte-level regex.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        ]}),
        _ => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
        }
    }
}

/// SentencePiece BPE merges recovered from scores, as HF's `LlamaConverter` does: every split of
/// a vocabulary piece into two vocabulary pieces is a merge, ranked by the merged piece's score.
fn sentencepiece_merges(tokens: &[String], scores: &[f64]) -> Vec<Value> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    for (merged_id, piece) in tokens.iter().enumerate() {
        let score = scores.get(merged_id).copied().unwrap_or(0.);
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&left_id), Some(&right_id)) = (ids.get(left), ids.get(right)) {
                merges.push((score, left_id, right_id, left, right));
            }
        }
    }
    // Higher score first; ties broken by the pieces' ids like the HF converter.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges
        .into_iter()
        .map(|(_, _, _, left, right)| json!([left, right]))
        .collect()
}

pub(crate) fn tokenizer_from_json(path: &Path, document: &Value) -> Result<Tokenizer, ModelError> {
    let bytes = serde_json::to_vec(document).map_err(|e| ModelError::Tokenizer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Tokenizer::from_bytes(bytes).map_err(|e| ModelError::Tokenizer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub(crate) fn tokenizer_from_file(path: &Path) -> Result<Tokenizer, ModelError> {
    Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

// === incremental detokenization ===

/// Turns a growing token sequence into text pieces for streaming, never emitting a partial
/// UTF-8 character.
///
/// Decoding token by token is wrong twice over: byte-level and byte-fallback tokens may hold
/// part of a character, and SentencePiece decoders drop a leading space at the start of the
/// decoded range. Like vLLM and TGI, we decode a small window `prefix_offset..` twice (without
/// and with the new tokens) and emit the difference, holding it back while it ends in U+FFFD
/// (an incomplete character).
#[derive(Debug, Clone, Default)]
pub struct IncrementalDetokenizer {
    tokens: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

impl IncrementalDetokenizer {
    pub fn new(skip_special_tokens: bool) -> Self {
        Self {
            skip_special_tokens,
            ..Self::default()
        }
    }

    /// Adds one generated token; returns the text it completes, if any.
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> Result<Option<String>, String> {
        self.tokens.push(token);
        let prefix_text = tokenizer
            .decode(
                &self.tokens[self.prefix_offset..self.read_offset],
                self.skip_special_tokens,
            )
            .map_err(|e| e.to_string())?;
        let full_text = tokenizer
            .decode(&self.tokens[self.prefix_offset..], self.skip_special_tokens)
            .map_err(|e| e.to_string())?;
        if full_text.len() <= prefix_text.len() || full_text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let Some(new_text) = full_text.get(prefix_text.len()..) else {
            // The window's decoding changed earlier characters (rare normalization effects):
            // wait for more tokens rather than emit text that may not be a suffix.
            return Ok(None);
        };
        let new_text = new_text.to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.tokens.len();
        Ok(Some(new_text))
    }

    /// Whatever is still held back (an incomplete character at the end of generation is
    /// flushed as U+FFFD, the way a lossy UTF-8 decode would show it).
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>, String> {
        if self.read_offset == self.tokens.len() {
            return Ok(None);
        }
        let prefix_text = tokenizer
            .decode(
                &self.tokens[self.prefix_offset..self.read_offset],
                self.skip_special_tokens,
            )
            .map_err(|e| e.to_string())?;
        let full_text = tokenizer
            .decode(&self.tokens[self.prefix_offset..], self.skip_special_tokens)
            .map_err(|e| e.to_string())?;
        self.prefix_offset = self.tokens.len();
        self.read_offset = self.tokens.len();
        Ok(full_text
            .get(prefix_text.len()..)
            .filter(|rest| !rest.is_empty())
            .map(str::to_string))
    }
}

/// The tokenizer of a GGUF file and its special tokens, without loading any weights.
pub fn gguf_tokenizer(path: &Path) -> Result<(Tokenizer, SpecialTokens), ModelError> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| ModelError::corrupt(path, format!("cannot read GGUF header: {e}")))?;
    let metadata = GgufMetadata {
        path,
        content: &content,
    };
    let (document, special) = gguf_tokenizer_json(&metadata)?;
    Ok((tokenizer_from_json(path, &document)?, special))
}
