//! `load_model`: one entry point for a `.gguf` file or an HF-layout directory.
//!
//! Loading reads the architecture, builds the executor with a KV cache sized from the options,
//! and assembles the tokenizer and chat template, so that the caller gets everything a model
//! needs to serve chat requests in one [`LoadedModel`]. Failures name the file and the problem.

use std::path::{Path, PathBuf};

use adaptive_engine::ModelExecutor;
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use tokenizers::Tokenizer;

use crate::chat_template::ChatTemplate;
use crate::config::{parse_gguf_config, parse_hf_config, GgufMetadata, LlamaFamilyConfig};
use crate::error::ModelError;
use crate::paged::{CacheShape, PagedLlama};
use crate::tokenizer::{
    gguf_tokenizer_json, tokenizer_from_file, tokenizer_from_json, SpecialTokens,
};
use crate::weights::{GgufWeights, SafetensorsWeights, WeightSource};

/// How big the KV cache is: a memory budget or an explicit number of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheSize {
    MemoryBudgetBytes(usize),
    Blocks(usize),
}

/// How quantized GGUF matrices run.
///
/// candle's CPU quantized matmul is SIMD only for some formats (Q4_0, Q8_0, K-quants) and only
/// when built with the matching target features (`-C target-cpu=native`); Q4_1 and any format
/// in a default build run a scalar dot product per input row and weight row, so batching gains
/// nothing. Dense f32 matrices go through gemm, which picks AVX2/FMA at run time and reads each
/// weight once per batch: 4x the memory and weight traffic per step, but far faster prefill and
/// batched decode for small models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantizedMatmul {
    /// On CPU, dequantize to f32 when the model's dense f32 weights fit in
    /// [`AUTO_DEQUANTIZE_MAX_BYTES`]; larger models run their Q4_0/Q4_1/Q8_0 matrices in the
    /// integer kernel (as [`Self::Int8`]) and keep the others quantized. On GPUs (and on a CPU
    /// with [`LoadOptions::cpu_kernels`] off), keep quantized.
    #[default]
    Auto,
    /// On CPU, Q4_0/Q4_1/Q8_0 matrices (the projections and the output matrix) run in the
    /// integer kernel (`int_matmul`: the codes as stored × activations rounded to 8 bits per
    /// 32-element block, the arithmetic of llama.cpp and of candle's quantized matmuls), ~1.5×
    /// faster prefill and decode than f32 on AVX2 in a fraction of the memory (~1 % higher
    /// perplexity on SmolLM2-135M, docs/benchmarks.md); other matrices as in `Auto`. The
    /// activation rounding changes logits by ~1e-3 relative, enough to change some greedy
    /// answers of a tiny model (SmolLM2-135M answers the France question with French phrases
    /// without a system message, as llama.cpp-style inference does on the same file).
    Int8,
    /// Always run candle's quantized kernels.
    Keep,
    /// Always dequantize to f32 at load time: f32 arithmetic throughout, the exact reference
    /// for the weights as stored.
    DequantizeF32,
}

impl std::str::FromStr for QuantizedMatmul {
    type Err = String;

    /// `auto`, `int8`, `quantized` or `f32` (the `HARMONY_CPU_MATMUL` values).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "int8" => Ok(Self::Int8),
            "quantized" => Ok(Self::Keep),
            "f32" => Ok(Self::DequantizeF32),
            other => Err(format!(
                "'{other}' is not one of auto, int8, quantized, f32"
            )),
        }
    }
}

/// The f32 weight size up to which [`QuantizedMatmul::Auto`] dequantizes on CPU (~500M params).
pub const AUTO_DEQUANTIZE_MAX_BYTES: u64 = 2 << 30;

/// Which device runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA device by ordinal; needs the `cuda` feature.
    Cuda(usize),
}

impl DeviceChoice {
    /// Whether this build can run models on CUDA devices (the `cuda` feature).
    pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

    /// The device a replica with `gpu_count` GPUs uses unless told otherwise: the first GPU
    /// when it has one and this build has CUDA, else the CPU.
    pub fn default_for(gpu_count: usize) -> Self {
        if gpu_count > 0 && Self::CUDA_BUILT {
            Self::Cuda(0)
        } else {
            Self::Cpu
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    /// `cpu`, `cuda` (the first CUDA device) or `cuda:N`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim().to_ascii_lowercase();
        match value.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(ordinal)) => Ok(Self::Cuda(ordinal)),
                _ => Err(format!("'{other}' is not one of cpu, cuda, cuda:N")),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => formatter.write_str("cpu"),
            Self::Cuda(ordinal) => write!(formatter, "cuda:{ordinal}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub kv_cache: KvCacheSize,
    /// Token slots per KV block.
    pub block_size: usize,
    /// Longest sequence (prompt + generation); `None` uses the model's context length.
    pub max_seq_len: Option<usize>,
    pub device: DeviceChoice,
    /// On CPU, use our CPU kernels: fused paged attention, the SwiGLU kernel, small-batch
    /// matmuls, and for GGUF matrices the choices [`QuantizedMatmul`] describes for CPUs
    /// (dequantizing small models, the integer kernel). Off, the CPU runs the device-generic
    /// path, candle's tensor ops only, with the loading decisions of a GPU (quantized matrices
    /// stay quantized unless [`QuantizedMatmul::DequantizeF32`]): exactly what a CUDA device
    /// runs, so that the CPU test suite covers it. Off only to test and compare; ignored on
    /// other devices, which always run the generic path.
    pub cpu_kernels: bool,
    pub quantized_matmul: QuantizedMatmul,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            kv_cache: KvCacheSize::MemoryBudgetBytes(512 << 20),
            block_size: 16,
            max_seq_len: None,
            device: DeviceChoice::Cpu,
            cpu_kernels: true,
            quantized_matmul: QuantizedMatmul::Auto,
        }
    }
}

/// What the model is, for the API (`/v1/models`), the scheduler (context length, eos) and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// `llama`, `qwen2` or `qwen3`.
    pub architecture: String,
    /// Human-readable name from the file's metadata, or the file/directory name.
    pub name: String,
    /// The longest sequence this loaded instance accepts (min of the model's context and the
    /// option).
    pub context_length: usize,
    pub vocab_size: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub add_bos_token: bool,
    /// The weights' storage type: `q4_1`, `q8_0`, `f16`, `bf16`, `f32`, ...
    pub quantization: String,
    /// Parameter count (elements of all weight tensors).
    pub parameters: u64,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub kv_bytes_per_block: usize,
}

/// A model ready to serve.
pub struct LoadedModel {
    pub executor: Box<dyn ModelExecutor>,
    pub tokenizer: Tokenizer,
    /// `None` when the model ships no chat template (base models).
    pub chat_template: Option<ChatTemplate>,
    pub info: ModelInfo,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("info", &self.info)
            .field("geometry", &self.executor.kv_geometry())
            .finish_non_exhaustive()
    }
}

pub(crate) fn make_device(choice: DeviceChoice) -> Result<Device, ModelError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|e| {
            ModelError::Options(format!(
                "cuda device {ordinal}: {e} (is the crate built with the `cuda` feature?)"
            ))
        }),
    }
}

fn cache_shape(
    options: &LoadOptions,
    config: &LlamaFamilyConfig,
) -> Result<(CacheShape, usize), ModelError> {
    if options.block_size == 0 {
        return Err(ModelError::Options("block_size must be positive".into()));
    }
    let bytes_per_block = PagedLlama::kv_bytes_per_block(config, options.block_size);
    let num_blocks = match options.kv_cache {
        KvCacheSize::Blocks(blocks) => blocks,
        KvCacheSize::MemoryBudgetBytes(budget) => budget / bytes_per_block,
    };
    if num_blocks == 0 {
        return Err(ModelError::Options(format!(
            "kv cache budget holds no block ({bytes_per_block} bytes per block of {} tokens)",
            options.block_size
        )));
    }
    let max_seq_len = options
        .max_seq_len
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings)
        .max(1);
    Ok((
        CacheShape {
            block_size: options.block_size,
            num_blocks,
            max_seq_len,
        },
        bytes_per_block,
    ))
}

/// Loads a `.gguf` file or an HF-layout directory (config.json + safetensors + tokenizer.json).
pub fn load_model(path: &Path, options: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let metadata = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
    if metadata.is_dir() {
        load_hf_dir(path, options)
    } else {
        load_gguf(path, options)
    }
}

fn quantization_name(dtype: GgmlDType) -> String {
    format!("{dtype:?}").to_lowercase()
}

fn load_gguf(path: &Path, options: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let device = make_device(options.device)?;
    let mut gguf = GgufWeights::open(path)?;
    let rope_freq_factors = if gguf.content.tensor_infos.contains_key("rope_freqs.weight") {
        let factors = gguf
            .qtensor_by_gguf_name("rope_freqs.weight", &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Some(factors)
    } else {
        None
    };
    let gguf_metadata = GgufMetadata {
        path,
        content: &gguf.content,
    };
    let mut config = parse_gguf_config(&gguf_metadata, rope_freq_factors)?;
    config.tie_word_embeddings = !gguf.content.tensor_infos.contains_key("output.weight");
    let (tokenizer_json, special) = gguf_tokenizer_json(&gguf_metadata)?;
    let tokenizer = tokenizer_from_json(path, &tokenizer_json)?;
    let chat_template = match gguf_metadata.string("tokenizer.chat_template") {
        Some(source) => Some(ChatTemplate::new(
            source,
            special.bos_token.as_deref(),
            special.eos_token.as_deref(),
        )?),
        None => None,
    };
    let name = gguf_metadata
        .string("general.name")
        .map(str::to_string)
        .unwrap_or_else(|| file_stem(path));
    let quantization = gguf
        .content
        .tensor_infos
        .get("blk.0.attn_q.weight")
        .map(|info| quantization_name(info.ggml_dtype))
        .unwrap_or_else(|| "unknown".into());
    let parameters = gguf
        .content
        .tensor_infos
        .values()
        .map(|info| info.shape.elem_count() as u64)
        .sum();
    let (cache, kv_bytes_per_block) = cache_shape(options, &config)?;
    // The CPU's choices only where the CPU kernels run; elsewhere (a GPU, or a CPU running the
    // generic path) a GPU's: quantized stays quantized.
    let cpu_kernels = device.is_cpu() && options.cpu_kernels;
    let fits_in_f32 = cpu_kernels && parameters * 4 <= AUTO_DEQUANTIZE_MAX_BYTES;
    (gguf.dequantize_matrices, gguf.pack_int) = match options.quantized_matmul {
        QuantizedMatmul::Keep => (false, false),
        QuantizedMatmul::DequantizeF32 => (true, false),
        QuantizedMatmul::Auto => (fits_in_f32, cpu_kernels && !fits_in_f32),
        QuantizedMatmul::Int8 => (fits_in_f32, cpu_kernels),
    };
    let mut source = WeightSource::Gguf(gguf);
    let mut executor = PagedLlama::load(config.clone(), &mut source, cache, &device)?;
    executor.set_use_cpu_kernels(options.cpu_kernels);
    let info = ModelInfo {
        architecture: config.architecture.name().to_string(),
        name,
        context_length: cache.max_seq_len,
        vocab_size: config.vocab_size,
        bos_token_id: special.bos_token_id,
        eos_token_ids: special.eos_token_ids.clone(),
        add_bos_token: special.add_bos_token,
        quantization,
        parameters,
        num_layers: config.num_layers,
        hidden_size: config.hidden_size,
        kv_bytes_per_block,
    };
    Ok(LoadedModel {
        executor: Box::new(executor),
        tokenizer,
        chat_template,
        info,
    })
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .or_else(|| path.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::invalid(path, format!("bad json: {e}")))
}

/// The safetensors files of an HF directory: the shards named by the index, or the single file.
pub(crate) fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.exists() {
        let index = read_json(&index_path)?;
        let weight_map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::invalid(&index_path, "weight_map missing"))?;
        let mut files: Vec<PathBuf> = weight_map
            .values()
            .filter_map(|f| f.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        for file in &files {
            if !file.exists() {
                return Err(ModelError::invalid(
                    &index_path,
                    format!("shard {} missing", file.display()),
                ));
            }
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::invalid(
        dir,
        "no model.safetensors or model.safetensors.index.json",
    ))
}

/// Special tokens named in tokenizer_config.json may be strings or `{"content": ...}` objects.
fn token_content(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn load_hf_dir(dir: &Path, options: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let device = make_device(options.device)?;
    let config_path = dir.join("config.json");
    let config_text =
        std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
    let (config, extras) = parse_hf_config(&config_path, &config_text)?;

    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = tokenizer_from_file(&tokenizer_path)?;
    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config = if tokenizer_config_path.exists() {
        read_json(&tokenizer_config_path)?
    } else {
        serde_json::Value::Null
    };
    let bos_token = token_content(tokenizer_config.get("bos_token"));
    let eos_token = token_content(tokenizer_config.get("eos_token"));
    let generation_config_path = dir.join("generation_config.json");
    let generation_eos = if generation_config_path.exists() {
        crate::config::eos_ids_from_json(read_json(&generation_config_path)?.get("eos_token_id"))
    } else {
        Vec::new()
    };
    let mut eos_token_ids = extras.eos_token_ids.clone();
    for id in generation_eos
        .into_iter()
        .chain(eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)))
    {
        if !eos_token_ids.contains(&id) {
            eos_token_ids.push(id);
        }
    }
    let special = SpecialTokens {
        bos_token_id: extras
            .bos_token_id
            .or_else(|| bos_token.as_deref().and_then(|t| tokenizer.token_to_id(t))),
        eos_token_ids,
        add_bos_token: tokenizer_config
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        bos_token,
        eos_token,
    };
    let chat_template = match tokenizer_config.get("chat_template") {
        Some(serde_json::Value::String(source)) => Some(ChatTemplate::new(
            source,
            special.bos_token.as_deref(),
            special.eos_token.as_deref(),
        )?),
        // A list of named templates: HF picks "default".
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template").and_then(|s| s.as_str()))
            .map(|source| {
                ChatTemplate::new(
                    source,
                    special.bos_token.as_deref(),
                    special.eos_token.as_deref(),
                )
            })
            .transpose()?,
        _ => None,
    };

    let files = safetensors_files(dir)?;
    let weights = SafetensorsWeights::open(&files)?;
    let dtype = weights
        .first_dtype()
        .map(|d| format!("{d:?}").to_lowercase())
        .unwrap_or_else(|| "unknown".into());
    let parameters = weights.parameter_count();
    let (cache, kv_bytes_per_block) = cache_shape(options, &config)?;
    let mut source = WeightSource::Safetensors(weights);
    let mut executor = PagedLlama::load(config.clone(), &mut source, cache, &device)?;
    executor.set_use_cpu_kernels(options.cpu_kernels);
    let info = ModelInfo {
        architecture: config.architecture.name().to_string(),
        name: file_stem(dir),
        context_length: cache.max_seq_len,
        vocab_size: config.vocab_size,
        bos_token_id: special.bos_token_id,
        eos_token_ids: special.eos_token_ids,
        add_bos_token: special.add_bos_token,
        quantization: dtype,
        parameters,
        num_layers: config.num_layers,
        hidden_size: config.hidden_size,
        kv_bytes_per_block,
    };
    Ok(LoadedModel {
        executor: Box::new(executor),
        tokenizer,
        chat_template,
        info,
    })
}
