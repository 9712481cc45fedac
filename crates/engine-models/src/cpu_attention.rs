//! CPU kernels for the paged KV cache: one in-place KV write and one attention op per layer for
//! the whole batch.
//!
//! Built from generic tensor ops, paged attention costs a dozen small ops per sequence per layer
//! (narrow, gather, transpose, matmul, softmax, ...); at 16 decoding sequences and 30 layers
//! that is thousands of op dispatches and allocations per step, more than the matmuls
//! themselves on a small model. These kernels read the block tables directly, so a step costs
//! two ops per layer whatever the batch, and nothing is gathered or copied: keys and values are
//! read in place from their slots. The generic path in `paged.rs` stays for other devices and
//! is the reference these kernels are tested against.

use adaptive_engine::SequenceChunk;
use candle_core::{CpuStorage, CustomOp3, InplaceOp2, Layout, Shape};
use rayon::prelude::*;

fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("{what}: expected f32 storage")
    };
    if !layout.is_contiguous() {
        candle_core::bail!("{what}: expected a contiguous tensor")
    }
    let start = layout.start_offset();
    let end = start + layout.shape().elem_count();
    values
        .get(start..end)
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: layout out of bounds")))
}

/// Writes rows `[tokens, kv_heads, head_dim]` into a `[kv_heads, slots, head_dim]` cache at the
/// given slot of each token.
pub(crate) struct KvWrite<'a> {
    pub slots: &'a [usize],
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl InplaceOp2 for KvWrite<'_> {
    fn name(&self) -> &'static str {
        "paged-kv-write"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        cache_layout: &Layout,
        rows: &CpuStorage,
        rows_layout: &Layout,
    ) -> candle_core::Result<()> {
        let rows = f32_slice(rows, rows_layout, "kv rows")?;
        let CpuStorage::F32(cache) = cache else {
            candle_core::bail!("kv cache: expected f32 storage")
        };
        if !cache_layout.is_contiguous() {
            candle_core::bail!("kv cache: expected a contiguous tensor")
        }
        let dims = cache_layout.shape().dims();
        let total_slots = dims.get(1).copied().unwrap_or(0);
        let base = cache_layout.start_offset();
        let d = self.head_dim;
        if rows.len() != self.slots.len() * self.kv_heads * d {
            candle_core::bail!("kv rows: shape does not match {} slots", self.slots.len())
        }
        for (token, &slot) in self.slots.iter().enumerate() {
            if slot >= total_slots {
                candle_core::bail!("kv slot {slot} beyond {total_slots}")
            }
            for head in 0..self.kv_heads {
                let dst = base + (head * total_slots + slot) * d;
                let src = (token * self.kv_heads + head) * d;
                cache[dst..dst + d].copy_from_slice(&rows[src..src + d]);
            }
        }
        Ok(())
    }
}

/// Causal attention of every chunk's queries over its paged context.
///
/// Inputs: queries `[tokens, heads, head_dim]` (RoPE applied), key and value caches
/// `[kv_heads, slots, head_dim]`. Output `[tokens, heads * head_dim]`.
pub(crate) struct PagedAttention<'a> {
    pub chunks: &'a [SequenceChunk],
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub scale: f32,
}

/// The key and value caches of one layer, `[kv_heads, total_slots, head_dim]` each.
struct CacheView<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    total_slots: usize,
}

impl PagedAttention<'_> {
    /// One query token at `position` of `chunk`: all heads, written into `out` (`heads * d`).
    fn attend_token(
        &self,
        chunk: &SequenceChunk,
        position: usize,
        query: &[f32],
        cache: &CacheView<'_>,
        out: &mut [f32],
    ) {
        let CacheView {
            keys,
            values,
            total_slots,
        } = *cache;
        let d = self.head_dim;
        let group = self.num_heads / self.num_kv_heads;
        let context = position + 1;
        // Scores for the `group` query heads that share a KV head, row-major [group, context].
        let mut scores = vec![0f32; group * context];
        for kv_head in 0..self.num_kv_heads {
            let head_keys = &keys[kv_head * total_slots * d..(kv_head + 1) * total_slots * d];
            let head_values = &values[kv_head * total_slots * d..(kv_head + 1) * total_slots * d];
            for j in 0..context {
                let slot = chunk.block_table[j / self.block_size] as usize * self.block_size
                    + j % self.block_size;
                let key = &head_keys[slot * d..slot * d + d];
                for g in 0..group {
                    let head = kv_head * group + g;
                    let q = &query[head * d..head * d + d];
                    scores[g * context + j] = dot(q, key) * self.scale;
                }
            }
            for g in 0..group {
                softmax_in_place(&mut scores[g * context..(g + 1) * context]);
            }
            for g in 0..group {
                let head = kv_head * group + g;
                out[head * d..head * d + d].fill(0.);
            }
            for j in 0..context {
                let slot = chunk.block_table[j / self.block_size] as usize * self.block_size
                    + j % self.block_size;
                let value = &head_values[slot * d..slot * d + d];
                for g in 0..group {
                    let head = kv_head * group + g;
                    let weight = scores[g * context + j];
                    axpy(weight, value, &mut out[head * d..head * d + d]);
                }
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators let the compiler vectorize without reassociating a single sum.
    let mut acc = [0f32; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for lane in 0..4 {
            acc[lane] += a[i * 4 + lane] * b[i * 4 + lane];
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in chunks * 4..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

fn axpy(weight: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += weight * xi;
    }
}

fn softmax_in_place(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.;
    for x in xs.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in xs.iter_mut() {
        *x /= sum;
    }
}

impl CustomOp3 for PagedAttention<'_> {
    fn name(&self) -> &'static str {
        "paged-attention"
    }

    fn cpu_fwd(
        &self,
        queries: &CpuStorage,
        queries_layout: &Layout,
        keys: &CpuStorage,
        keys_layout: &Layout,
        values: &CpuStorage,
        values_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let queries = f32_slice(queries, queries_layout, "queries")?;
        let keys = f32_slice(keys, keys_layout, "key cache")?;
        let values = f32_slice(values, values_layout, "value cache")?;
        let row = self.num_heads * self.head_dim;
        let total_tokens: usize = self.chunks.iter().map(|c| c.tokens.len()).sum();
        if queries.len() != total_tokens * row {
            candle_core::bail!("queries: shape does not match {total_tokens} tokens")
        }
        let cache = CacheView {
            keys,
            values,
            total_slots: keys_layout.shape().dims().get(1).copied().unwrap_or(0),
        };
        if cache.keys.len() != cache.values.len() {
            candle_core::bail!("key and value caches differ in size")
        }
        // Every (chunk, token) pair, so that tokens of long prefills and single decode steps
        // spread evenly over threads.
        let work: Vec<(usize, usize)> = self
            .chunks
            .iter()
            .enumerate()
            .flat_map(|(c, chunk)| (0..chunk.tokens.len()).map(move |i| (c, i)))
            .collect();
        let mut output = vec![0f32; total_tokens * row];
        output
            .par_chunks_mut(row)
            .zip(work.par_iter())
            .enumerate()
            .for_each(|(token, (out, &(c, i)))| {
                let chunk = &self.chunks[c];
                let query = &queries[token * row..(token + 1) * row];
                self.attend_token(chunk, chunk.start_pos + i, query, &cache, out);
            });
        Ok((CpuStorage::F32(output), Shape::from((total_tokens, row))))
    }
}
