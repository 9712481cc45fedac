//! Where the weights come from: a GGUF file (quantized or not) or HF safetensors shards.
//!
//! The forward pass asks for tensors by their HF names (`model.layers.3.self_attn.q_proj.weight`);
//! [`gguf_name`] maps those to llama.cpp's names (`blk.3.attn_q.weight`), and the converter uses
//! the same table in reverse, so there is one mapping to get right. Quantized GGUF matrices stay
//! quantized ([`QMatMul`] runs them); vectors and embeddings are dequantized to f32 once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{CpuStorage, DType, Device, Module, Storage, Tensor};

use crate::error::ModelError;
use crate::int_matmul::PackedWeights;
use crate::small_batch_matmul;

/// A weight matrix `[out, in]` with an optional bias, applied as `x @ W^T + b`.
///
/// Dense weights are stored transposed (`[in, out]`, contiguous): gemm then reads the right-hand
/// side row-major, and small-batch matmuls (decode steps) avoid re-packing a column-major
/// matrix on every call, which cost more than the multiplication itself.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum LinearWeight {
    Quantized(QMatMul),
    /// `[in, out]`.
    DenseTransposed(Tensor),
    /// Q4_0/Q4_1/Q8_0 codes for the integer kernel of [`crate::int_matmul`] (CPU with AVX2).
    PackedWeights(Arc<PackedWeights>),
}

impl Linear {
    pub fn new(weight: QMatMul, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let weight = match weight {
            QMatMul::Tensor(dense) => LinearWeight::DenseTransposed(dense.t()?.contiguous()?),
            quantized => LinearWeight::Quantized(quantized),
        };
        Ok(Self { weight, bias })
    }

    pub fn packed(weight: PackedWeights, bias: Option<Tensor>) -> Self {
        Self {
            weight: LinearWeight::PackedWeights(Arc::new(weight)),
            bias,
        }
    }

    /// `xs`: `[tokens, in]`. With `cpu_kernels` off, dense weights always go through candle's
    /// matmul (what a GPU runs), never through [`small_batch_matmul`]. Packed weights only
    /// exist where the loader chose the CPU kernels, and always run in the integer kernel.
    pub fn forward(&self, xs: &Tensor, cpu_kernels: bool) -> candle_core::Result<Tensor> {
        let ys = match &self.weight {
            LinearWeight::Quantized(weight) => weight.forward(xs)?,
            LinearWeight::PackedWeights(weight) => packed_forward(xs, weight)?,
            LinearWeight::DenseTransposed(weight_t) => {
                let small_batch = match cpu_kernels {
                    true => small_batch_forward(xs, weight_t)?,
                    false => None,
                };
                match small_batch {
                    Some(ys) => ys,
                    None => xs.matmul(weight_t)?,
                }
            }
        };
        match &self.bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        }
    }
}

/// `xs @ weight_t` through [`small_batch_matmul`] when it applies: f32 on CPU, a contiguous
/// weight, and at least two rows (`SMALL_BATCH_ROWS`); `None` sends the caller to candle.
fn small_batch_forward(xs: &Tensor, weight_t: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let (rows, inner) = match xs.dims() {
        &[rows, inner] => (rows, inner),
        _ => return Ok(None),
    };
    let (weight_inner, outer) = weight_t.dims2()?;
    let applies = small_batch_matmul::SMALL_BATCH_ROWS.contains(&rows)
        && inner == weight_inner
        && xs.dtype() == DType::F32
        && weight_t.dtype() == DType::F32
        && xs.device().is_cpu()
        && weight_t.device().is_cpu();
    if !applies {
        return Ok(None);
    }
    // Both operands are read in place: a prefill chunk's activations are megabytes, and a copy
    // per projection showed up in profiles.
    let xs = xs.contiguous()?;
    let product = with_cpu_f32(&xs, |x_values| {
        with_cpu_f32(weight_t, |weight_values| {
            small_batch_matmul::matmul(x_values, rows, weight_values, inner, outer)
        })
    });
    match product.flatten().flatten() {
        Some(values) => Ok(Some(Tensor::from_vec(values, (rows, outer), xs.device())?)),
        None => Ok(None),
    }
}

/// Runs `f` on a contiguous f32 CPU tensor's values, read in place; `None` for any other
/// tensor.
pub(crate) fn with_cpu_f32<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = tensor.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) => Some(f(&values[start..end])),
        _ => None,
    }
}

/// `xs @ Wᵀ` through the integer kernel; `xs` must be f32 on the CPU (where packed weights live).
fn packed_forward(xs: &Tensor, weight: &PackedWeights) -> candle_core::Result<Tensor> {
    let (rows, _) = xs.dims2()?;
    let xs = xs.to_dtype(DType::F32)?.contiguous()?;
    let product = with_cpu_f32(&xs, |values| weight.matmul(values, rows)).flatten();
    let values = product.ok_or_else(|| {
        candle_core::Error::Msg("packed integer weights need f32 activations on an AVX2 CPU".into())
    })?;
    Tensor::from_vec(values, (rows, weight.out_features()), xs.device())
}

/// llama.cpp's name for an HF tensor name, or `None` for names it has no equivalent of.
pub fn gguf_name(hf_name: &str) -> Option<String> {
    let fixed = match hf_name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let gguf_suffix = match suffix {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf_suffix}"))
}

/// The inverse of [`gguf_name`].
pub fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf_suffix = match suffix {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_suffix}"))
}

/// A source of named tensors, addressed by HF names.
pub(crate) enum WeightSource {
    Gguf(GgufWeights),
    Safetensors(SafetensorsWeights),
}

impl WeightSource {
    pub fn contains(&self, hf_name: &str) -> bool {
        match self {
            Self::Gguf(gguf) => {
                gguf_name(hf_name).is_some_and(|name| gguf.content.tensor_infos.contains_key(&name))
            }
            Self::Safetensors(st) => st.tensors.contains_key(hf_name),
        }
    }

    /// A matrix for a [`Linear`]: quantized GGUF tensors stay quantized.
    pub fn matrix(&mut self, hf_name: &str, device: &Device) -> Result<QMatMul, ModelError> {
        match self {
            Self::Gguf(gguf) => {
                let qtensor = gguf.qtensor(hf_name, device)?;
                if gguf.dequantize_matrices {
                    return Ok(QMatMul::Tensor(qtensor.dequantize(device)?));
                }
                Ok(QMatMul::from_arc(qtensor)?)
            }
            Self::Safetensors(st) => Ok(QMatMul::Tensor(st.dense(hf_name, device)?)),
        }
    }

    /// A projection (weight and optional bias) as a [`Linear`]: Q4_0/Q4_1/Q8_0 GGUF matrices go
    /// to the integer kernel when the source was opened with `pack_int` (and the CPU has AVX2);
    /// everything else as [`Self::matrix`] gives it.
    pub fn projection(
        &mut self,
        weight_name: &str,
        bias_name: &str,
        device: &Device,
    ) -> Result<Linear, ModelError> {
        let bias = self.optional_dense(bias_name, device)?;
        if let Some(packed) = self.packed(weight_name, device)? {
            return Ok(Linear::packed(packed, bias));
        }
        Ok(Linear::new(self.matrix(weight_name, device)?, bias)?)
    }

    /// The matrix packed for the integer kernel, when the source packs and its format allows.
    pub fn packed(
        &mut self,
        hf_name: &str,
        device: &Device,
    ) -> Result<Option<PackedWeights>, ModelError> {
        match self {
            Self::Gguf(gguf) if gguf.pack_int && device.is_cpu() && PackedWeights::supported() => {
                let qtensor = gguf.qtensor(hf_name, device)?;
                Ok(PackedWeights::from_qtensor(&qtensor))
            }
            _ => Ok(None),
        }
    }

    /// Whether [`Self::matrix`] returns dense f32 matrices (always for safetensors).
    pub fn matrices_are_dense(&self) -> bool {
        match self {
            Self::Gguf(gguf) => gguf.dequantize_matrices,
            Self::Safetensors(_) => true,
        }
    }

    /// A dense f32 tensor (norm weights, biases, embeddings).
    pub fn dense(&mut self, hf_name: &str, device: &Device) -> Result<Tensor, ModelError> {
        match self {
            Self::Gguf(gguf) => {
                let qtensor = gguf.qtensor(hf_name, device)?;
                Ok(qtensor.dequantize(device)?)
            }
            Self::Safetensors(st) => st.dense(hf_name, device),
        }
    }

    pub fn optional_dense(
        &mut self,
        hf_name: &str,
        device: &Device,
    ) -> Result<Option<Tensor>, ModelError> {
        if self.contains(hf_name) {
            self.dense(hf_name, device).map(Some)
        } else {
            Ok(None)
        }
    }
}

// === GGUF ===

pub(crate) struct GgufWeights {
    pub path: PathBuf,
    pub content: gguf_file::Content,
    reader: BufReader<File>,
    /// Tensors read once and needed twice (a tied embedding is both the input table and the
    /// output projection).
    cache: HashMap<String, Arc<QTensor>>,
    /// Dequantize weight matrices to f32 at load time (see `QuantizedMatmul`).
    pub dequantize_matrices: bool,
    /// Run Q4_0/Q4_1/Q8_0 matrices through the integer kernel (`int_matmul`) instead.
    pub pack_int: bool,
}

impl GgufWeights {
    /// Reads the header and checks that every tensor lies inside the file, so that a truncated
    /// download fails here with a clear message rather than midway through loading.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| ModelError::corrupt(path, format!("cannot read GGUF header: {e}")))?;
        for (name, info) in &content.tensor_infos {
            let elem_count = info.shape.elem_count();
            let block_size = info.ggml_dtype.block_size();
            if block_size == 0 || !elem_count.is_multiple_of(block_size) {
                return Err(ModelError::corrupt(
                    path,
                    format!(
                        "tensor {name} has {elem_count} elements, not a multiple of its block size"
                    ),
                ));
            }
            let byte_len = (elem_count / block_size) as u64 * info.ggml_dtype.type_size() as u64;
            let end = content
                .tensor_data_offset
                .checked_add(info.offset)
                .and_then(|start| start.checked_add(byte_len));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(ModelError::corrupt(
                        path,
                        format!(
                            "tensor {name} ends past the end of the file ({file_len} bytes): truncated download?"
                        ),
                    ))
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            cache: HashMap::new(),
            dequantize_matrices: false,
            pack_int: false,
        })
    }

    pub fn qtensor_by_gguf_name(
        &mut self,
        name: &str,
        device: &Device,
    ) -> Result<Arc<QTensor>, ModelError> {
        if let Some(cached) = self.cache.get(name) {
            return Ok(cached.clone());
        }
        if !self.content.tensor_infos.contains_key(name) {
            return Err(ModelError::invalid(
                &self.path,
                format!("tensor {name} missing"),
            ));
        }
        self.reader
            .rewind()
            .map_err(|e| ModelError::io(&self.path, e))?;
        let qtensor = self
            .content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| ModelError::corrupt(&self.path, format!("tensor {name}: {e}")))?;
        let qtensor = Arc::new(qtensor);
        if name == "token_embd.weight" {
            self.cache.insert(name.to_string(), qtensor.clone());
        }
        Ok(qtensor)
    }

    fn qtensor(&mut self, hf_name: &str, device: &Device) -> Result<Arc<QTensor>, ModelError> {
        let name = gguf_name(hf_name).ok_or_else(|| {
            ModelError::invalid(&self.path, format!("no GGUF name for tensor {hf_name}"))
        })?;
        self.qtensor_by_gguf_name(&name, device)
    }
}

// === safetensors ===

pub(crate) struct SafetensorsWeights {
    /// Tensors by name, with the file each came from (for error messages).
    tensors: HashMap<String, (Tensor, PathBuf)>,
    /// Named in errors about tensors that no shard holds.
    location: PathBuf,
}

impl SafetensorsWeights {
    /// Loads every shard into memory (no mmap: the workspace forbids `unsafe`).
    pub fn open(files: &[PathBuf]) -> Result<Self, ModelError> {
        let mut tensors = HashMap::new();
        for file in files {
            let bytes = std::fs::read(file).map_err(|e| ModelError::io(file, e))?;
            let loaded = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
                .map_err(|e| ModelError::corrupt(file, format!("cannot read safetensors: {e}")))?;
            for (name, tensor) in loaded {
                tensors.insert(name, (tensor, file.clone()));
            }
        }
        let location = files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(Self { tensors, location })
    }

    /// The storage dtype of the projection weights (what the checkpoint "is").
    pub fn first_dtype(&self) -> Option<DType> {
        self.tensors
            .get("model.layers.0.self_attn.q_proj.weight")
            .or_else(|| self.tensors.values().next())
            .map(|(t, _)| t.dtype())
    }

    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .values()
            .map(|(t, _)| t.elem_count() as u64)
            .sum()
    }

    fn dense(&self, hf_name: &str, device: &Device) -> Result<Tensor, ModelError> {
        let (tensor, file) = self.tensors.get(hf_name).ok_or_else(|| {
            ModelError::invalid(&self.location, format!("tensor {hf_name} missing"))
        })?;
        match tensor.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {}
            other => {
                return Err(ModelError::unsupported(
                    file,
                    format!("tensor {hf_name} has dtype {other:?} (supported: f32, f16, bf16)"),
                ))
            }
        }
        // Compute runs in f32: candle's CPU matmuls are fastest and most exact there.
        Ok(tensor.to_dtype(DType::F32)?.to_device(device)?)
    }
}
