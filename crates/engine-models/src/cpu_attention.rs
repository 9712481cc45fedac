//! CPU kernels for the paged KV cache: one in-place KV write and one attention op per layer for
//! the whole batch.
//!
//! Built from generic tensor ops, paged attention costs a dozen small ops per sequence per layer
//! (narrow, gather, transpose, matmul, softmax, ...); at 16 decoding sequences and 30 layers
//! that is thousands of op dispatches and allocations per step, more than the matmuls
//! themselves on a small model. These kernels read the block tables directly, so a step costs
//! two ops per layer whatever the batch. Decode steps and short chunks read keys and values in
//! place from their slots, token by token; prefill chunks gather each KV head's context once
//! and attend per tile of queries through matmuls (see [`MATMUL_MIN_TOKENS`]). The generic path
//! in `paged.rs` stays for other devices and is the reference these kernels are tested against.

use adaptive_engine::SequenceChunk;
use candle_core::{CpuStorage, CustomOp3, Device, InplaceOp2, Layout, Shape, Tensor};
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
    /// With `simd`, the caller runs this inside that token's `avx2,fma` frame (see
    /// [`TokenTask`]), where [`dot`] and [`axpy`] are 8-lane FMAs.
    #[inline(always)]
    fn attend_token(
        &self,
        simd: Simd,
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
                    scores[g * context + j] = dot(simd, q, key) * self.scale;
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
                    axpy(simd, weight, value, &mut out[head * d..head * d + d]);
                }
            }
        }
    }
}

/// Chunks of at least this many tokens (prefill chunks) attend through matmuls, per KV head and
/// tile of query tokens; shorter ones, decode steps above all, token by token.
pub(crate) const MATMUL_MIN_TOKENS: usize = 16;
/// Query tokens per matmul tile. A tile's context ends at its last token, so the causally masked
/// part of its score matrix is at most one tile's triangle: smaller tiles compute less that is
/// thrown away, larger ones make larger (more efficient) matmuls.
const QUERY_TILE: usize = 64;

fn attends_by_matmul(chunk: &SequenceChunk) -> bool {
    chunk.tokens.len() >= MATMUL_MIN_TOKENS
}

/// One KV head's context of one chunk, gathered from its blocks: `[context, head_dim]` each.
struct GatheredContext {
    keys: Tensor,
    values: Tensor,
}

impl PagedAttention<'_> {
    /// The chunks that [`attends_by_matmul`], written into `output` (`[tokens, heads * d]`).
    ///
    /// Token by token, every query re-reads its whole context through the block table with
    /// vector dot products: fine for a decode step, but a 512-token prefill chunk would read
    /// its keys 512 times. Here each chunk's keys and values are gathered once per KV head into
    /// contiguous matrices, and for each tile of query tokens the `group` query heads of every
    /// token are the rows of one `Q·Kᵀ` and one `P·V` matmul (gemm, through candle), with the
    /// causal mask and the softmax applied to the scores in between.
    fn attend_long_chunks(
        &self,
        queries: &[f32],
        offsets: &[usize],
        cache: &CacheView<'_>,
        output: &mut [f32],
    ) -> candle_core::Result<()> {
        let heads: Vec<(usize, usize)> = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, chunk)| attends_by_matmul(chunk))
            .flat_map(|(c, _)| (0..self.num_kv_heads).map(move |h| (c, h)))
            .collect();
        if heads.is_empty() {
            return Ok(());
        }
        let contexts = heads
            .par_iter()
            .map(|&(c, h)| self.gather_context(&self.chunks[c], h, cache))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let tiles: Vec<(usize, usize)> = heads
            .iter()
            .enumerate()
            .flat_map(|(index, &(c, _))| {
                (0..self.chunks[c].tokens.len())
                    .step_by(QUERY_TILE)
                    .map(move |start| (index, start))
            })
            .collect();
        let tile_outputs = tiles
            .par_iter()
            .map(|&(index, start)| {
                let (c, h) = heads[index];
                self.attend_tile(c, h, start, queries, offsets[c], &contexts[index])
            })
            .collect::<candle_core::Result<Vec<_>>>()?;

        let d = self.head_dim;
        let group = self.num_heads / self.num_kv_heads;
        let row = self.num_heads * d;
        for (&(index, start), tile) in tiles.iter().zip(&tile_outputs) {
            let (c, kv_head) = heads[index];
            // Tile rows are (token, query head of this KV head); a token's heads are adjacent
            // in `output` too, so each token is one copy.
            for (t, token_heads) in tile.chunks(group * d).enumerate() {
                let dst = (offsets[c] + start + t) * row + kv_head * group * d;
                output[dst..dst + group * d].copy_from_slice(token_heads);
            }
        }
        Ok(())
    }

    fn gather_context(
        &self,
        chunk: &SequenceChunk,
        kv_head: usize,
        cache: &CacheView<'_>,
    ) -> candle_core::Result<GatheredContext> {
        let d = self.head_dim;
        let context = chunk.start_pos + chunk.tokens.len();
        let base = kv_head * cache.total_slots * d;
        let mut keys = Vec::with_capacity(context * d);
        let mut values = Vec::with_capacity(context * d);
        for (index, &block) in chunk
            .block_table
            .iter()
            .take(context.div_ceil(self.block_size))
            .enumerate()
        {
            let run = self.block_size.min(context - index * self.block_size);
            let first = base + block as usize * self.block_size * d;
            let range = first..first + run * d;
            let (Some(block_keys), Some(block_values)) =
                (cache.keys.get(range.clone()), cache.values.get(range))
            else {
                candle_core::bail!("block {block} beyond the kv cache")
            };
            keys.extend_from_slice(block_keys);
            values.extend_from_slice(block_values);
        }
        if keys.len() != context * d {
            candle_core::bail!("block table shorter than the context of {context} tokens")
        }
        Ok(GatheredContext {
            keys: Tensor::from_vec(keys, (context, d), &Device::Cpu)?,
            values: Tensor::from_vec(values, (context, d), &Device::Cpu)?,
        })
    }

    /// Query tokens `start..start + QUERY_TILE` of chunk `c` against KV head `kv_head`; returns
    /// `[tokens, group, head_dim]`.
    fn attend_tile(
        &self,
        c: usize,
        kv_head: usize,
        start: usize,
        queries: &[f32],
        offset: usize,
        gathered: &GatheredContext,
    ) -> candle_core::Result<Vec<f32>> {
        let chunk = &self.chunks[c];
        let d = self.head_dim;
        let group = self.num_heads / self.num_kv_heads;
        let row = self.num_heads * d;
        let end = (start + QUERY_TILE).min(chunk.tokens.len());
        let context = chunk.start_pos + end;
        // The query heads of one KV head are adjacent in a token's row.
        let mut tile_queries = Vec::with_capacity((end - start) * group * d);
        for t in start..end {
            let first = (offset + t) * row + kv_head * group * d;
            tile_queries.extend_from_slice(&queries[first..first + group * d]);
        }
        let rows = (end - start) * group;
        let tile_queries = Tensor::from_vec(tile_queries, (rows, d), &Device::Cpu)?;
        let keys = gathered.keys.narrow(0, 0, context)?;
        let mut scores = tile_queries
            .matmul(&keys.t()?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (r, row_scores) in scores.chunks_mut(context).enumerate() {
            let visible = chunk.start_pos + start + r / group + 1;
            let (kept, masked) = row_scores.split_at_mut(visible);
            for score in kept.iter_mut() {
                *score *= self.scale;
            }
            softmax_in_place(kept);
            masked.fill(0.);
        }
        let probabilities = Tensor::from_vec(scores, (rows, context), &Device::Cpu)?;
        probabilities
            .matmul(&gathered.values.narrow(0, 0, context)?)?
            .flatten_all()?
            .to_vec1::<f32>()
    }
}

/// The vector unit [`dot`] and [`axpy`] may use: AVX2+FMA when the caller runs inside a
/// `pulp` frame for it, `None` for the portable loops.
#[cfg(target_arch = "x86_64")]
type Simd = Option<pulp::x86::V3>;
#[cfg(not(target_arch = "x86_64"))]
type Simd = Option<std::convert::Infallible>;

#[inline(always)]
fn dot(simd: Simd, a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = simd {
        use pulp::Simd as _;
        let (a_vectors, a_tail) = a.as_chunks::<8>();
        let (b_vectors, b_tail) = b.as_chunks::<8>();
        let mut acc = [simd.splat_f32x8(0.); 2];
        for (i, (x, y)) in a_vectors.iter().zip(b_vectors).enumerate() {
            acc[i % 2] = simd.mul_add_f32x8(pulp::cast(*x), pulp::cast(*y), acc[i % 2]);
        }
        let lanes: [f32; 8] = pulp::cast(simd.add_f32s(acc[0], acc[1]));
        let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
        return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
            + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
            + tail;
    }
    let _ = simd;
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

#[inline(always)]
fn axpy(simd: Simd, weight: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = simd {
        let w = simd.splat_f32x8(weight);
        let (x_vectors, x_tail) = x.as_chunks::<8>();
        let (y_vectors, y_tail) = y.as_chunks_mut::<8>();
        for (xv, yv) in x_vectors.iter().zip(y_vectors) {
            *yv = pulp::cast(simd.mul_add_f32x8(w, pulp::cast(*xv), pulp::cast(*yv)));
        }
        for (yi, xi) in y_tail.iter_mut().zip(x_tail) {
            *yi += weight * xi;
        }
        return;
    }
    let _ = simd;
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += weight * xi;
    }
}

/// One decode-style token's attention inside an `avx2,fma` frame.
#[cfg(target_arch = "x86_64")]
struct TokenTask<'a> {
    simd: pulp::x86::V3,
    attention: &'a PagedAttention<'a>,
    chunk: &'a SequenceChunk,
    position: usize,
    query: &'a [f32],
    cache: &'a CacheView<'a>,
    out: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for TokenTask<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        self.attention.attend_token(
            Some(self.simd),
            self.chunk,
            self.position,
            self.query,
            self.cache,
            self.out,
        )
    }
}

/// `xs = softmax(xs)`. On AVX2 CPUs vectorized, with Cephes' polynomial `expf` (within 2 ulp
/// of `f32::exp`): a 512-token prefill computes ~70 million exponentials, and the scalar loop
/// calling libm's `expf` was ~10 % of it.
fn softmax_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        simd.vectorize(simd_softmax::Softmax { simd, xs });
        return;
    }
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

#[cfg(target_arch = "x86_64")]
pub(crate) mod simd_softmax {
    use pulp::{f32x8, x86::V3, Simd};

    pub(super) struct Softmax<'a> {
        pub simd: V3,
        pub xs: &'a mut [f32],
    }

    impl pulp::NullaryFnOnce for Softmax<'_> {
        type Output = ();

        #[inline(always)]
        fn call(self) {
            let Self { simd, xs } = self;
            let mut max = simd.splat_f32x8(f32::NEG_INFINITY);
            let (vectors, tail) = xs.as_chunks_mut::<8>();
            for chunk in vectors.iter() {
                max = simd.max_f32s(max, pulp::cast(*chunk));
            }
            let max = pulp::cast::<_, [f32; 8]>(max)
                .into_iter()
                .chain(tail.iter().copied())
                .fold(f32::NEG_INFINITY, f32::max);
            let max_vector = simd.splat_f32x8(max);
            let mut sum = simd.splat_f32x8(0.);
            for chunk in vectors.iter_mut() {
                let e = exp(simd, simd.sub_f32s(pulp::cast(*chunk), max_vector));
                sum = simd.add_f32s(sum, e);
                *chunk = pulp::cast(e);
            }
            let mut total: f32 = pulp::cast::<_, [f32; 8]>(sum).into_iter().sum();
            for x in tail.iter_mut() {
                *x = (*x - max).exp();
                total += *x;
            }
            let inverse = 1. / total;
            let inverse_vector = simd.splat_f32x8(inverse);
            for chunk in vectors.iter_mut() {
                *chunk = pulp::cast(simd.mul_f32s(pulp::cast(*chunk), inverse_vector));
            }
            for x in tail.iter_mut() {
                *x *= inverse;
            }
        }
    }

    /// `e^x` lane-wise for `x ≤ 0` (softmax arguments): Cephes' `expf`, `x = n·ln 2 + r` with
    /// `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r` and `2^n` built in the exponent bits.
    /// Arguments below −87.3 (results under `f32`'s smallest normal) give ~1e-38, not 0.
    #[inline(always)]
    pub(crate) fn exp(simd: V3, x: f32x8) -> f32x8 {
        let x = simd.max_f32s(x, simd.splat_f32x8(-87.336_55));
        let n: f32x8 = pulp::cast(simd.avx._mm256_round_ps::<0x08>(pulp::cast(
            simd.mul_f32s(x, simd.splat_f32x8(std::f32::consts::LOG2_E)),
        )));
        let r = simd.mul_add_f32x8(n, simd.splat_f32x8(-0.693_359_4), x);
        let r = simd.mul_add_f32x8(n, simd.splat_f32x8(2.121_944_4e-4), r);
        let mut p = simd.splat_f32x8(1.987_569_1e-4);
        p = simd.mul_add_f32x8(p, r, simd.splat_f32x8(1.398_199_9e-3));
        p = simd.mul_add_f32x8(p, r, simd.splat_f32x8(8.333_452e-3));
        p = simd.mul_add_f32x8(p, r, simd.splat_f32x8(4.166_579_6e-2));
        p = simd.mul_add_f32x8(p, r, simd.splat_f32x8(1.666_666_5e-1));
        p = simd.mul_add_f32x8(p, r, simd.splat_f32x8(0.5));
        let y = simd.mul_add_f32x8(
            p,
            simd.mul_f32s(r, r),
            simd.add_f32s(r, simd.splat_f32x8(1.)),
        );
        let exponent = simd.avx2._mm256_add_epi32(
            simd.avx._mm256_cvtps_epi32(pulp::cast(n)),
            simd.avx._mm256_set1_epi32(127),
        );
        let scale: f32x8 = pulp::cast(simd.avx2._mm256_slli_epi32::<23>(exponent));
        simd.mul_f32s(y, scale)
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
        let mut output = vec![0f32; total_tokens * row];
        let offsets: Vec<usize> = self
            .chunks
            .iter()
            .scan(0, |offset, chunk| {
                let start = *offset;
                *offset += chunk.tokens.len();
                Some(start)
            })
            .collect();
        self.attend_long_chunks(queries, &offsets, &cache, &mut output)?;
        // The other chunks token by token: every (chunk, token) pair, so that the tokens of
        // short chunks and single decode steps spread evenly over threads.
        let work: Vec<(usize, usize)> = self
            .chunks
            .iter()
            .enumerate()
            .flat_map(|(c, chunk)| (0..chunk.tokens.len()).map(move |i| (c, i)))
            .collect();
        output
            .par_chunks_mut(row)
            .zip(work.par_iter())
            .enumerate()
            .filter(|(_, (_, &(c, _)))| !attends_by_matmul(&self.chunks[c]))
            .for_each(|(token, (out, &(c, i)))| {
                let chunk = &self.chunks[c];
                let query = &queries[token * row..(token + 1) * row];
                #[cfg(target_arch = "x86_64")]
                if let Some(simd) = pulp::x86::V3::try_new() {
                    simd.vectorize(TokenTask {
                        simd,
                        attention: self,
                        chunk,
                        position: chunk.start_pos + i,
                        query,
                        cache: &cache,
                        out,
                    });
                    return;
                }
                self.attend_token(None, chunk, chunk.start_pos + i, query, &cache, out);
            });
        Ok((CpuStorage::F32(output), Shape::from((total_tokens, row))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::values;

    /// Long chunks (one tile and several, from position 0 and continuing a cached prefix, over
    /// scattered blocks) attend through matmuls exactly as token by token.
    #[test]
    fn matmul_path_matches_token_by_token() {
        let (num_heads, num_kv_heads, head_dim, block_size, num_blocks) = (6, 2, 8, 4, 128);
        let total_slots = num_blocks * block_size;
        let keys = values(1, num_kv_heads * total_slots * head_dim);
        let cache_values = values(2, num_kv_heads * total_slots * head_dim);
        let cache = CacheView {
            keys: &keys,
            values: &cache_values,
            total_slots,
        };
        // Scattered, disjoint block tables.
        let table = |first: u32, count: u32| -> Vec<u32> {
            (0..count)
                .map(|i| (first + 37 * i) % num_blocks as u32)
                .collect()
        };
        let chunk = |id: u64, len: usize, start_pos: usize, block_table: Vec<u32>| SequenceChunk {
            sequence_id: id,
            tokens: vec![1; len],
            start_pos,
            block_table,
            wants_logits: true,
        };
        let chunks = vec![
            chunk(0, 1, 40, table(0, 11)),
            chunk(1, 150, 0, table(1, 38)),
            chunk(2, 16, 9, table(2, 7)),
            chunk(3, 70, 37, table(3, 27)),
            chunk(4, 15, 3, table(4, 5)),
        ];
        assert!(chunks.iter().filter(|c| attends_by_matmul(c)).count() == 3);
        let attention = PagedAttention {
            chunks: &chunks,
            num_heads,
            num_kv_heads,
            head_dim,
            block_size,
            scale: 0.35,
        };
        let row = num_heads * head_dim;
        let total: usize = chunks.iter().map(|c| c.tokens.len()).sum();
        let queries = values(3, total * row);
        let shape = |dims: &[usize]| Layout::contiguous(Shape::from(dims.to_vec()));
        let (storage, _) = attention
            .cpu_fwd(
                &CpuStorage::F32(queries.clone()),
                &shape(&[total, num_heads, head_dim]),
                &CpuStorage::F32(keys.clone()),
                &shape(&[num_kv_heads, total_slots, head_dim]),
                &CpuStorage::F32(cache_values.clone()),
                &shape(&[num_kv_heads, total_slots, head_dim]),
            )
            .expect("attention");
        let CpuStorage::F32(ours) = storage else {
            panic!("f32 output expected")
        };

        let mut token = 0;
        for chunk in &chunks {
            for i in 0..chunk.tokens.len() {
                let mut expected = vec![0f32; row];
                let query = &queries[token * row..(token + 1) * row];
                attention.attend_token(
                    None,
                    chunk,
                    chunk.start_pos + i,
                    query,
                    &cache,
                    &mut expected,
                );
                let got = &ours[token * row..(token + 1) * row];
                for (a, b) in got.iter().zip(&expected) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1. + b.abs()),
                        "sequence {} token {i}: {a} against {b}",
                        chunk.sequence_id
                    );
                }
                token += 1;
            }
        }
    }

    #[test]
    fn softmax_matches_the_scalar_definition() {
        for len in [1, 7, 8, 9, 64, 100, 513] {
            let mut xs: Vec<f32> = values(len as u64, len)
                .into_iter()
                .enumerate()
                .map(|(i, v)| v * 40. - if i % 5 == 0 { 200. } else { 0. })
                .collect();
            let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f64> = xs.iter().map(|x| f64::from(x - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            softmax_in_place(&mut xs);
            for (got, e) in xs.iter().zip(&exps) {
                let want = e / total;
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-6 * want + 1e-30,
                    "len {len}: {got} against {want}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_within_two_ulp_of_libm() {
        let Some(simd) = pulp::x86::V3::try_new() else {
            return;
        };
        struct Check(pulp::x86::V3);
        impl pulp::NullaryFnOnce for Check {
            type Output = ();
            #[inline(always)]
            fn call(self) {
                let mut x = -87.0f32;
                while x <= 0. {
                    let lanes: [f32; 8] = std::array::from_fn(|i| x + i as f32 * 0.001);
                    let got: [f32; 8] =
                        pulp::cast(super::simd_softmax::exp(self.0, pulp::cast(lanes)));
                    for (g, l) in got.iter().zip(lanes) {
                        let want = l.exp();
                        assert!(
                            (g - want).abs() <= 2. * f32::EPSILON * want,
                            "exp({l}) = {g}, libm {want}"
                        );
                    }
                    x += 0.0371;
                }
            }
        }
        simd.vectorize(Check(simd));
    }
}
