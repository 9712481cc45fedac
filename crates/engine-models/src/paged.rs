//! The Llama-family forward pass over a paged KV cache: [`PagedLlama`], our [`ModelExecutor`].
//!
//! One call runs a whole [`ForwardBatch`]. The tokens of every chunk (prefill chunks and
//! single-token decode steps alike) are concatenated into one `[total_tokens, hidden]`
//! activation, so each projection and MLP matmul runs once per layer for the whole batch: that
//! is where batching pays, because on both CPU and GPU the weights are read once per step instead
//! of once per sequence. Only attention is per chunk: it writes the chunk's new keys and values
//! into the slots its block table names, gathers its context (positions `0..start_pos+len`) back
//! from those blocks and attends with a causal mask.
//!
//! KV layout, per layer: `[num_kv_heads, num_blocks * block_size, head_dim]`, head-major so that
//! gathering a sequence's blocks yields `[num_kv_heads, seq_len, head_dim]`, the shape the
//! attention matmuls want, without a transpose. Grouped-query attention never copies K/V per
//! query head: the query heads that share a KV head are folded into the row dimension of
//! the score matmul (`[kv_heads, group * len, head_dim]`).
//!
//! RoPE uses per-token cos/sin rows gathered by position, since the tokens of one step sit at
//! unrelated positions in different sequences. Only the rows whose logits are wanted go through
//! the final norm and the (large) vocabulary projection.

use adaptive_engine::{ExecutorError, ForwardBatch, KvGeometry, ModelExecutor, SequenceChunk};
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use crate::config::{LlamaFamilyConfig, RopeStyle};
use crate::cpu_attention::{KvWrite, PagedAttention};
use crate::error::ModelError;
use crate::weights::{Linear, WeightSource};

struct Layer {
    input_norm: Tensor,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_attention_norm: Tensor,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    key_cache: Tensor,
    value_cache: Tensor,
}

/// Llama/Qwen2/Qwen3 with a paged KV cache; see the module docs.
pub struct PagedLlama {
    config: LlamaFamilyConfig,
    device: Device,
    geometry: KvGeometry,
    max_seq_len: usize,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    final_norm: Tensor,
    lm_head: Linear,
    /// `[max_seq_len, head_dim / 2]`.
    rope_cos: Tensor,
    rope_sin: Tensor,
    /// Whether CPU runs use our CPU kernels (`cpu_attention`, `swiglu`, `small_batch_matmul`);
    /// off, they run the device-generic tensor-op path, the one every other device runs.
    use_cpu_kernels: bool,
}

/// How a KV cache is sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheShape {
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_seq_len: usize,
}

impl PagedLlama {
    pub(crate) fn load(
        config: LlamaFamilyConfig,
        source: &mut WeightSource,
        cache: CacheShape,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let embed_tokens = source.dense("model.embed_tokens.weight", device)?;
        let lm_head_name = if source.contains("lm_head.weight") {
            "lm_head.weight"
        } else {
            "model.embed_tokens.weight"
        };
        let lm_head = if let Some(packed) = source.packed(lm_head_name, device)? {
            // The integer kernel reads Q8_0 (a common format for this matrix) at a quarter of
            // the f32 table's bytes: every decode step reads all of it.
            Linear::packed(packed, None)
        } else if source.contains("lm_head.weight") {
            Linear::new(source.matrix("lm_head.weight", device)?, None)?
        } else if source.matrices_are_dense() {
            // Tied and dense: built from the embedding table already in memory (Linear keeps
            // its own transposed copy, which gemm reads far faster than a transposed view).
            Linear::new(QMatMul::Tensor(embed_tokens.clone()), None)?
        } else {
            // Tied and quantized: the quantized table, as llama.cpp runs it.
            Linear::new(source.matrix("model.embed_tokens.weight", device)?, None)?
        };
        let final_norm = source.dense("model.norm.weight", device)?;
        let kv_slots = cache
            .num_blocks
            .checked_mul(cache.block_size)
            .filter(|slots| u32::try_from(*slots).is_ok())
            .ok_or_else(|| {
                ModelError::Options(format!(
                    "kv cache of {} blocks of {} tokens is too large",
                    cache.num_blocks, cache.block_size
                ))
            })?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for index in 0..config.num_layers {
            let name = |suffix: &str| format!("model.layers.{index}.{suffix}");
            let projection = |source: &mut WeightSource, proj: &str| {
                source.projection(
                    &name(&format!("{proj}.weight")),
                    &name(&format!("{proj}.bias")),
                    device,
                )
            };
            let cache_shape = (config.num_kv_heads, kv_slots, config.head_dim);
            layers.push(Layer {
                input_norm: source.dense(&name("input_layernorm.weight"), device)?,
                q_proj: projection(source, "self_attn.q_proj")?,
                k_proj: projection(source, "self_attn.k_proj")?,
                v_proj: projection(source, "self_attn.v_proj")?,
                o_proj: projection(source, "self_attn.o_proj")?,
                q_norm: if config.qk_norm {
                    Some(source.dense(&name("self_attn.q_norm.weight"), device)?)
                } else {
                    None
                },
                k_norm: if config.qk_norm {
                    Some(source.dense(&name("self_attn.k_norm.weight"), device)?)
                } else {
                    None
                },
                post_attention_norm: source
                    .dense(&name("post_attention_layernorm.weight"), device)?,
                gate_proj: projection(source, "mlp.gate_proj")?,
                up_proj: projection(source, "mlp.up_proj")?,
                down_proj: projection(source, "mlp.down_proj")?,
                key_cache: Tensor::zeros(cache_shape, DType::F32, device)?,
                value_cache: Tensor::zeros(cache_shape, DType::F32, device)?,
            });
        }
        let (rope_cos, rope_sin) = rope_tables(&config, cache.max_seq_len, device)?;
        Ok(Self {
            geometry: KvGeometry {
                block_size: cache.block_size,
                num_blocks: cache.num_blocks,
            },
            max_seq_len: cache.max_seq_len,
            config,
            device: device.clone(),
            embed_tokens,
            layers,
            final_norm,
            lm_head,
            rope_cos,
            rope_sin,
            use_cpu_kernels: true,
        })
    }

    /// Chooses between our CPU kernels (the default: fused paged attention, the SwiGLU kernel,
    /// small-batch matmuls) and the device-generic tensor-op path, which is what every other
    /// device runs; ignored off the CPU. Weights packed for the integer kernel at load time
    /// (see [`crate::LoadOptions::cpu_kernels`]) stay in it either way.
    pub fn set_use_cpu_kernels(&mut self, enabled: bool) {
        self.use_cpu_kernels = enabled;
    }

    pub fn config(&self) -> &LlamaFamilyConfig {
        &self.config
    }

    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Bytes of KV cache one block takes across all layers (f32 keys and values).
    pub fn kv_bytes_per_block(config: &LlamaFamilyConfig, block_size: usize) -> usize {
        2 * config.num_layers * config.num_kv_heads * config.head_dim * block_size * 4
    }

    fn validate(&self, batch: &ForwardBatch) -> Result<(), ExecutorError> {
        let block_size = self.geometry.block_size;
        for chunk in &batch.chunks {
            let seq = chunk.sequence_id;
            if chunk.tokens.is_empty() {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {seq}: empty chunk"
                )));
            }
            let end = chunk.start_pos + chunk.tokens.len();
            if end > self.max_seq_len {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {seq}: position {end} beyond max_seq_len {}",
                    self.max_seq_len
                )));
            }
            if let Some(token) = chunk
                .tokens
                .iter()
                .find(|&&t| t as usize >= self.config.vocab_size)
            {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {seq}: token {token} beyond vocabulary {}",
                    self.config.vocab_size
                )));
            }
            let blocks_needed = end.div_ceil(block_size);
            if chunk.block_table.len() < blocks_needed {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {seq}: block table has {} blocks, {blocks_needed} needed",
                    chunk.block_table.len()
                )));
            }
            if let Some(block) = chunk.block_table[..blocks_needed]
                .iter()
                .find(|&&b| b as usize >= self.geometry.num_blocks)
            {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {seq}: block {block} beyond num_blocks {}",
                    self.geometry.num_blocks
                )));
            }
        }
        Ok(())
    }

    fn forward_batch(&mut self, batch: &ForwardBatch) -> candle_core::Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        let total_tokens: usize = batch.chunks.iter().map(|c| c.tokens.len()).sum();
        let mut token_ids = Vec::with_capacity(total_tokens);
        let mut positions = Vec::with_capacity(total_tokens);
        let mut logit_rows = Vec::new();
        for chunk in &batch.chunks {
            token_ids.extend_from_slice(&chunk.tokens);
            positions
                .extend((chunk.start_pos..chunk.start_pos + chunk.tokens.len()).map(|p| p as u32));
            if chunk.wants_logits {
                logit_rows.push((token_ids.len() - 1) as u32);
            }
        }
        let token_ids = Tensor::from_vec(token_ids, total_tokens, &self.device)?;
        let positions = Tensor::from_vec(positions, total_tokens, &self.device)?;
        let half_dim = cfg.head_dim / 2;
        let cos =
            self.rope_cos
                .index_select(&positions, 0)?
                .reshape((total_tokens, 1, half_dim))?;
        let sin =
            self.rope_sin
                .index_select(&positions, 0)?
                .reshape((total_tokens, 1, half_dim))?;
        let attention = AttentionShape {
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            block_size: self.geometry.block_size,
            num_blocks: self.geometry.num_blocks,
            scale: 1. / (cfg.head_dim as f64).sqrt(),
        };
        let eps = cfg.rms_norm_eps as f32;
        let use_cpu_kernels = self.device.is_cpu() && self.use_cpu_kernels;
        let slots = slot_mapping(&batch.chunks, attention.block_size);
        let mut hidden = self.embed_tokens.index_select(&token_ids, 0)?;
        for layer in &self.layers {
            let normed = candle_nn::ops::rms_norm(&hidden, &layer.input_norm, eps)?;
            let queries = layer.q_proj.forward(&normed, use_cpu_kernels)?;
            let keys = layer.k_proj.forward(&normed, use_cpu_kernels)?;
            let values = layer.v_proj.forward(&normed, use_cpu_kernels)?;
            let queries = queries.reshape((total_tokens, cfg.num_heads, 1, cfg.head_dim))?;
            let keys = keys.reshape((total_tokens, cfg.num_kv_heads, 1, cfg.head_dim))?;
            let queries = match &layer.q_norm {
                Some(norm) => candle_nn::ops::rms_norm(&queries, norm, eps)?,
                None => queries,
            };
            let keys = match &layer.k_norm {
                Some(norm) => candle_nn::ops::rms_norm(&keys, norm, eps)?,
                None => keys,
            };
            let queries = apply_rope(cfg.rope_style, &queries, &cos, &sin)?.reshape((
                total_tokens,
                cfg.num_heads,
                cfg.head_dim,
            ))?;
            let keys = apply_rope(cfg.rope_style, &keys, &cos, &sin)?.reshape((
                total_tokens,
                cfg.num_kv_heads,
                cfg.head_dim,
            ))?;
            let values = values.reshape((total_tokens, cfg.num_kv_heads, cfg.head_dim))?;

            let attended = if use_cpu_kernels {
                let write = KvWrite {
                    slots: &slots,
                    kv_heads: cfg.num_kv_heads,
                    head_dim: cfg.head_dim,
                };
                layer.key_cache.inplace_op2(&keys, &write)?;
                layer
                    .value_cache
                    .inplace_op2(&values.contiguous()?, &write)?;
                queries.apply_op3_no_bwd(
                    &layer.key_cache,
                    &layer.value_cache,
                    &PagedAttention {
                        chunks: &batch.chunks,
                        num_heads: cfg.num_heads,
                        num_kv_heads: cfg.num_kv_heads,
                        head_dim: cfg.head_dim,
                        block_size: attention.block_size,
                        scale: attention.scale as f32,
                    },
                )?
            } else {
                attend_with_tensor_ops(&attention, &queries, &keys, &values, layer, batch)?
            };
            hidden = (hidden + layer.o_proj.forward(&attended, use_cpu_kernels)?)?;

            let normed = candle_nn::ops::rms_norm(&hidden, &layer.post_attention_norm, eps)?;
            let gate = layer.gate_proj.forward(&normed, use_cpu_kernels)?;
            let up = layer.up_proj.forward(&normed, use_cpu_kernels)?;
            let gated = match use_cpu_kernels {
                true => crate::swiglu::swiglu(&gate, &up)?,
                false => None,
            };
            let gated = match gated {
                Some(gated) => gated,
                None => (candle_nn::ops::silu(&gate)? * up)?,
            };
            hidden = (hidden + layer.down_proj.forward(&gated, use_cpu_kernels)?)?;
        }
        if logit_rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows = Tensor::new(logit_rows.as_slice(), &self.device)?;
        let last_hidden = hidden.index_select(&rows, 0)?;
        let normed = candle_nn::ops::rms_norm(&last_hidden, &self.final_norm, eps)?;
        let logits = self.lm_head.forward(&normed, use_cpu_kernels)?;
        logits.to_dtype(DType::F32)?.to_vec2::<f32>()
    }
}

impl ModelExecutor for PagedLlama {
    fn kv_geometry(&self) -> KvGeometry {
        self.geometry
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Vec<Vec<f32>>, ExecutorError> {
        self.validate(batch)?;
        if batch.chunks.is_empty() {
            return Ok(Vec::new());
        }
        self.forward_batch(batch)
            .map_err(|e| ExecutorError::Backend(e.to_string()))
    }
}

// === attention over the paged cache ===

/// The cache slot of every token of the batch, in batch order.
fn slot_mapping(chunks: &[SequenceChunk], block_size: usize) -> Vec<usize> {
    chunks
        .iter()
        .flat_map(|chunk| {
            (chunk.start_pos..chunk.start_pos + chunk.tokens.len()).map(move |position| {
                chunk.block_table[position / block_size] as usize * block_size
                    + position % block_size
            })
        })
        .collect()
}

/// The device-independent path: per chunk, write K/V with `slice_set`, gather the context and
/// attend with matmuls.
fn attend_with_tensor_ops(
    attention: &AttentionShape,
    queries: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    layer: &Layer,
    batch: &ForwardBatch,
) -> candle_core::Result<Tensor> {
    let mut chunk_outputs = Vec::with_capacity(batch.chunks.len());
    let mut offset = 0;
    for chunk in &batch.chunks {
        let len = chunk.tokens.len();
        let chunk_keys = keys.narrow(0, offset, len)?;
        let chunk_values = values.narrow(0, offset, len)?;
        write_kv(&layer.key_cache, &chunk_keys, chunk, attention.block_size)?;
        write_kv(
            &layer.value_cache,
            &chunk_values,
            chunk,
            attention.block_size,
        )?;
        let chunk_queries = queries.narrow(0, offset, len)?;
        chunk_outputs.push(attend(
            attention,
            &chunk_queries,
            &layer.key_cache,
            &layer.value_cache,
            chunk,
        )?);
        offset += len;
    }
    Tensor::cat(&chunk_outputs, 0)
}

#[derive(Debug, Clone, Copy)]
struct AttentionShape {
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    num_blocks: usize,
    scale: f64,
}

/// Writes `[len, kv_heads, head_dim]` rows into the slots of `chunk`'s positions, one copy per
/// block the chunk touches.
fn write_kv(
    cache: &Tensor,
    rows: &Tensor,
    chunk: &SequenceChunk,
    block_size: usize,
) -> candle_core::Result<()> {
    let len = chunk.tokens.len();
    let mut written = 0;
    while written < len {
        let position = chunk.start_pos + written;
        let block = chunk.block_table[position / block_size] as usize;
        let within_block = position % block_size;
        let run = (block_size - within_block).min(len - written);
        let segment = rows
            .narrow(0, written, run)?
            .transpose(0, 1)?
            .contiguous()?;
        cache.slice_set(&segment, 1, block * block_size + within_block)?;
        written += run;
    }
    Ok(())
}

/// Gathers `[kv_heads, context_len, head_dim]` for a chunk from its blocks.
fn gather_context(
    cache: &Tensor,
    shape: &AttentionShape,
    chunk: &SequenceChunk,
    context_len: usize,
) -> candle_core::Result<Tensor> {
    let blocks_used = context_len.div_ceil(shape.block_size);
    let first_block = chunk.block_table[0];
    let blocks_are_consecutive = chunk.block_table[..blocks_used]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == first_block + i as u32);
    if blocks_are_consecutive {
        // A freshly allocated sequence often owns a run of blocks: read it in place.
        return cache.narrow(1, first_block as usize * shape.block_size, context_len);
    }
    let per_block = cache.reshape((
        shape.num_kv_heads,
        shape.num_blocks,
        shape.block_size * shape.head_dim,
    ))?;
    let block_ids = Tensor::new(&chunk.block_table[..blocks_used], cache.device())?;
    per_block
        .index_select(&block_ids, 1)?
        .reshape((
            shape.num_kv_heads,
            blocks_used * shape.block_size,
            shape.head_dim,
        ))?
        .narrow(1, 0, context_len)
}

/// Causal attention of one chunk's queries (`[len, heads, head_dim]`) over its context;
/// returns `[len, heads * head_dim]`.
fn attend(
    shape: &AttentionShape,
    queries: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    chunk: &SequenceChunk,
) -> candle_core::Result<Tensor> {
    let len = chunk.tokens.len();
    let context_len = chunk.start_pos + len;
    let group = shape.num_heads / shape.num_kv_heads;
    let keys = gather_context(key_cache, shape, chunk, context_len)?.contiguous()?;
    let values = gather_context(value_cache, shape, chunk, context_len)?.contiguous()?;
    // Query head h uses KV head h / group, so [len, kv, group, d] -> [kv, group * len, d].
    let queries = (queries
        .reshape((len, shape.num_kv_heads, group, shape.head_dim))?
        .permute((1, 2, 0, 3))?
        .reshape((shape.num_kv_heads, group * len, shape.head_dim))?
        * shape.scale)?;
    let scores = queries.matmul(&keys.t()?)?;
    let scores = if len > 1 {
        let mask = causal_mask(chunk.start_pos, len, context_len, queries.device())?;
        scores
            .reshape((shape.num_kv_heads, group, len, context_len))?
            .broadcast_add(&mask)?
            .reshape((shape.num_kv_heads, group * len, context_len))?
    } else {
        scores
    };
    let probabilities = candle_nn::ops::softmax_last_dim(&scores)?;
    probabilities
        .matmul(&values)?
        .reshape((shape.num_kv_heads, group, len, shape.head_dim))?
        .permute((2, 0, 1, 3))?
        .reshape((len, shape.num_heads * shape.head_dim))
}

/// `[len, context_len]`: 0 where query `i` (at `start_pos + i`) may see key `j`, -inf elsewhere.
fn causal_mask(
    start_pos: usize,
    len: usize,
    context_len: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..context_len).map(move |j| {
                if j <= start_pos + i {
                    0.
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (len, context_len), device)
}

// === RoPE ===

fn rope_tables(
    config: &LlamaFamilyConfig,
    max_seq_len: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv_freq = config.rope_inv_freq();
    let half_dim = inv_freq.len();
    let inv_freq = Tensor::from_vec(inv_freq, (1, half_dim), device)?;
    let positions = Tensor::arange(0u32, max_seq_len as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((max_seq_len, 1))?;
    let angles = positions.matmul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// `xs`: `[tokens, heads, 1, head_dim]`, `cos`/`sin`: `[tokens, 1, head_dim / 2]` (each token
/// is its own "batch" entry so that every token gets its own position).
fn apply_rope(
    style: RopeStyle,
    xs: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
) -> candle_core::Result<Tensor> {
    let xs = xs.contiguous()?;
    match style {
        RopeStyle::HalfRotation => candle_nn::rotary_emb::rope(&xs, cos, sin),
        RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&xs, cos, sin),
    }
}
