//! Hyper-parameters of the Llama family (Llama 2/3, SmolLM, Mistral, Qwen2, Qwen3), read from an
//! HF `config.json` or from GGUF metadata into one [`LlamaFamilyConfig`].
//!
//! The three architectures differ only in small switches (q/k/v bias for Qwen2, per-head q/k
//! RMSNorm for Qwen3, an explicit `head_dim`), so one forward pass serves them all and the
//! switches live here. What is not supported (sliding windows actually in use, unknown RoPE
//! scaling types, partial rotary) is rejected at load time, never silently mis-run.

use std::path::Path;

use candle_core::quantized::gguf_file;
use serde::Deserialize;

use crate::error::ModelError;

/// The architectures this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Qwen3,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }
}

/// How the rotary embedding pairs the dimensions of a head.
///
/// HF checkpoints rotate dimension `i` with `i + head_dim/2` ("rotate half", NeoX style).
/// llama.cpp's converter permutes the rows of Llama's Q and K projections so that pairs become
/// adjacent (`2i`, `2i+1`, GPT-J style) and applies RoPE interleaved; Qwen GGUFs are not
/// permuted and keep the half rotation. Both compute the same attention scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    HalfRotation,
    Interleaved,
}

/// RoPE frequency scaling as configured by the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (equivalently, frequencies).
    Linear {
        factor: f32,
    },
    /// Llama 3.1 style: low frequencies divided by `factor`, high ones kept, smooth in between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors, as GGUF stores Llama 3 scaling (`rope_freqs.weight`).
    FrequencyFactors(Vec<f32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaFamilyConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    pub qk_norm: bool,
}

impl LlamaFamilyConfig {
    pub(crate) fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let dims_are_positive = self.hidden_size > 0
            && self.intermediate_size > 0
            && self.vocab_size > 0
            && self.num_layers > 0
            && self.num_heads > 0
            && self.num_kv_heads > 0
            && self.head_dim > 0;
        if !dims_are_positive {
            return Err(ModelError::invalid(
                path,
                format!("zero-sized dimension in {self:?}"),
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(ModelError::invalid(
                path,
                format!(
                    "num_heads {} is not a multiple of num_kv_heads {}",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(ModelError::invalid(path, "head_dim must be even for RoPE"));
        }
        if let RopeScaling::FrequencyFactors(factors) = &self.rope_scaling {
            if factors.len() != self.head_dim / 2 {
                return Err(ModelError::invalid(
                    path,
                    format!(
                        "rope_freqs has {} entries, expected head_dim/2 = {}",
                        factors.len(),
                        self.head_dim / 2
                    ),
                ));
            }
        }
        Ok(())
    }

    /// RoPE inverse frequencies after scaling, computed in f32 the way candle and HF do.
    pub(crate) fn rope_inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1f32 / self.rope_theta.powf(i as f32 / dim as f32))
            .collect();
        match &self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::FrequencyFactors(factors) => {
                base.iter().zip(factors).map(|(f, d)| f / d).collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old_context = *original_max_position_embeddings as f32;
                let low_freq_wavelen = old_context / low_freq_factor;
                let high_freq_wavelen = old_context / high_freq_factor;
                base.iter()
                    .map(|&freq| {
                        let wavelen = 2. * std::f32::consts::PI / freq;
                        if wavelen < high_freq_wavelen {
                            freq
                        } else if wavelen > low_freq_wavelen {
                            freq / factor
                        } else {
                            let smooth = (old_context / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1. - smooth) * freq / factor + smooth * freq
                        }
                    })
                    .collect()
            }
        }
    }
}

// === HF config.json ===

#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_rope_theta() -> f64 {
    10_000.
}

fn default_max_position_embeddings() -> usize {
    4096
}

/// What `config.json` says beyond the architecture (token ids).
#[derive(Debug, Clone, Default)]
pub(crate) struct HfConfigExtras {
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

pub(crate) fn eos_ids_from_json(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|id| vec![id as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(ids)) => ids
            .iter()
            .filter_map(|id| id.as_u64().map(|id| id as u32))
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn parse_hf_config(
    path: &Path,
    json: &str,
) -> Result<(LlamaFamilyConfig, HfConfigExtras), ModelError> {
    let hf: HfConfig = serde_json::from_str(json)
        .map_err(|e| ModelError::invalid(path, format!("config.json: {e}")))?;
    let model_type = hf
        .model_type
        .clone()
        .or_else(|| hf.architectures.first().cloned())
        .unwrap_or_default();
    let architecture = match model_type.as_str() {
        "llama" | "mistral" | "LlamaForCausalLM" | "MistralForCausalLM" => Architecture::Llama,
        "qwen2" | "Qwen2ForCausalLM" => Architecture::Qwen2,
        "qwen3" | "Qwen3ForCausalLM" => Architecture::Qwen3,
        other => {
            return Err(ModelError::unsupported(
                path,
                format!("architecture {other:?} (supported: llama, mistral, qwen2, qwen3)"),
            ))
        }
    };
    if let Some(act) = &hf.hidden_act {
        if act != "silu" {
            return Err(ModelError::unsupported(path, format!("hidden_act {act:?}")));
        }
    }
    if hf.use_sliding_window == Some(true) {
        return Err(ModelError::unsupported(path, "sliding-window attention"));
    }
    let rope_scaling = parse_hf_rope_scaling(path, hf.rope_scaling.as_ref())?;
    // Mistral declares a sliding window without a switch; within the window, sliding-window
    // attention is full attention, so capping the context keeps every result exact. (Qwen
    // configs carry a window too, but use it only with use_sliding_window, rejected above.)
    let max_position_embeddings = match (architecture, hf.sliding_window) {
        (Architecture::Llama, Some(window)) if window > 0 => hf.max_position_embeddings.min(window),
        _ => hf.max_position_embeddings,
    };
    let head_dim = hf
        .head_dim
        .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1));
    let config = LlamaFamilyConfig {
        architecture,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        vocab_size: hf.vocab_size,
        num_layers: hf.num_hidden_layers,
        num_heads: hf.num_attention_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim,
        rms_norm_eps: hf.rms_norm_eps,
        rope_theta: hf.rope_theta as f32,
        rope_style: RopeStyle::HalfRotation,
        rope_scaling,
        max_position_embeddings,
        tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
        qkv_bias: match architecture {
            Architecture::Qwen2 => true,
            Architecture::Llama | Architecture::Qwen3 => hf.attention_bias.unwrap_or(false),
        },
        qk_norm: architecture == Architecture::Qwen3,
    };
    config.validate(path)?;
    let extras = HfConfigExtras {
        bos_token_id: hf.bos_token_id,
        eos_token_ids: eos_ids_from_json(hf.eos_token_id.as_ref()),
    };
    Ok((config, extras))
}

fn parse_hf_rope_scaling(
    path: &Path,
    value: Option<&serde_json::Value>,
) -> Result<RopeScaling, ModelError> {
    let Some(serde_json::Value::Object(map)) = value else {
        return Ok(RopeScaling::None);
    };
    let rope_type = map
        .get("rope_type")
        .or_else(|| map.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let number = |key: &str| -> Result<f32, ModelError> {
        map.get(key)
            .and_then(|v| v.as_f64())
            .map(|v| v as f32)
            .ok_or_else(|| ModelError::invalid(path, format!("rope_scaling.{key} missing")))
    };
    match rope_type {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: number("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")? as usize,
        }),
        other => Err(ModelError::unsupported(
            path,
            format!("rope_scaling type {other:?} (supported: linear, llama3)"),
        )),
    }
}

// === GGUF metadata ===

pub(crate) struct GgufMetadata<'a> {
    pub path: &'a Path,
    pub content: &'a gguf_file::Content,
}

impl GgufMetadata<'_> {
    pub fn get(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(gguf_file::Value::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Any integer-typed value as `u64` (GGUF writers disagree on the width).
    pub fn uint(&self, key: &str) -> Option<u64> {
        use gguf_file::Value as V;
        match self.get(key)? {
            V::U8(v) => Some(u64::from(*v)),
            V::U16(v) => Some(u64::from(*v)),
            V::U32(v) => Some(u64::from(*v)),
            V::U64(v) => Some(*v),
            V::I8(v) => u64::try_from(*v).ok(),
            V::I16(v) => u64::try_from(*v).ok(),
            V::I32(v) => u64::try_from(*v).ok(),
            V::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn float(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            gguf_file::Value::F32(v) => Some(f64::from(*v)),
            gguf_file::Value::F64(v) => Some(*v),
            _ => self.uint(key).map(|v| v as f64),
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            gguf_file::Value::Bool(v) => Some(*v),
            _ => None,
        }
    }

    pub fn required_uint(&self, key: &str) -> Result<usize, ModelError> {
        self.uint(key)
            .map(|v| v as usize)
            .ok_or_else(|| ModelError::invalid(self.path, format!("metadata {key} missing")))
    }
}

pub(crate) fn parse_gguf_config(
    metadata: &GgufMetadata<'_>,
    rope_freq_factors: Option<Vec<f32>>,
) -> Result<LlamaFamilyConfig, ModelError> {
    let path = metadata.path;
    let arch_name = metadata
        .string("general.architecture")
        .ok_or_else(|| ModelError::invalid(path, "metadata general.architecture missing"))?;
    let architecture = match arch_name {
        "llama" | "mistral" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        other => {
            return Err(ModelError::unsupported(
                path,
                format!("architecture {other:?} (supported: llama, mistral, qwen2, qwen3)"),
            ))
        }
    };
    let key = |suffix: &str| format!("{arch_name}.{suffix}");
    let hidden_size = metadata.required_uint(&key("embedding_length"))?;
    let num_heads = metadata.required_uint(&key("attention.head_count"))?;
    let num_kv_heads = metadata
        .uint(&key("attention.head_count_kv"))
        .map(|v| v as usize)
        .unwrap_or(num_heads);
    let head_dim = metadata
        .uint(&key("attention.key_length"))
        .map(|v| v as usize)
        .unwrap_or(hidden_size / num_heads.max(1));
    if let Some(rope_dim) = metadata.uint(&key("rope.dimension_count")) {
        if rope_dim as usize != head_dim {
            return Err(ModelError::unsupported(
                path,
                format!("partial rotary embedding ({rope_dim} of {head_dim} dims)"),
            ));
        }
    }
    let vocab_size = match metadata.uint(&key("vocab_size")) {
        Some(v) => v as usize,
        None => match metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(tokens)) => tokens.len(),
            _ => return Err(ModelError::invalid(path, "vocabulary size unknown")),
        },
    };
    let rope_scaling = match rope_freq_factors {
        Some(factors) => RopeScaling::FrequencyFactors(factors),
        None => match metadata.string(&key("rope.scaling.type")) {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: metadata.float(&key("rope.scaling.factor")).unwrap_or(1.) as f32,
            },
            Some(other) => {
                return Err(ModelError::unsupported(
                    path,
                    format!("rope scaling type {other:?}"),
                ))
            }
        },
    };
    let config = LlamaFamilyConfig {
        architecture,
        hidden_size,
        intermediate_size: metadata.required_uint(&key("feed_forward_length"))?,
        vocab_size,
        num_layers: metadata.required_uint(&key("block_count"))?,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps: metadata
            .float(&key("attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-5),
        rope_theta: metadata.float(&key("rope.freq_base")).unwrap_or(10_000.) as f32,
        rope_style: match architecture {
            Architecture::Llama => RopeStyle::Interleaved,
            Architecture::Qwen2 | Architecture::Qwen3 => RopeStyle::HalfRotation,
        },
        rope_scaling,
        max_position_embeddings: metadata
            .uint(&key("context_length"))
            .map(|v| v as usize)
            .unwrap_or(4096),
        // Decided by the loader from the presence of output.weight.
        tie_word_embeddings: false,
        qkv_bias: architecture == Architecture::Qwen2,
        qk_norm: architecture == Architecture::Qwen3,
    };
    config.validate(path)?;
    Ok(config)
}
