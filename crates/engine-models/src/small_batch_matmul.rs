//! `y = x · W` for batches of two rows or more on CPU: `x` is `[m, k]` (one row per sequence in a
//! decode step, one per token in a prefill chunk), `W` is a linear layer's weight stored
//! transposed, `[k, n]` row-major (see [`crate::weights::Linear`]).
//!
//! Why not gemm: for small `m`, the `gemm` crate packs the right-hand side into panels on every
//! call, so a decode step reads every weight, writes a packed copy and reads that again, and
//! batching 16 sequences only gained ~3× over one. Here each weight is read from memory once
//! per call, for all `m` rows. The output columns are split into blocks of [`BLOCK_COLUMNS`],
//! and a rayon task takes a range of up to 16 blocks (1 KiB of each weight row). A task walks
//! `k` in chunks of [`K_CHUNK`] weight rows; it first reads the chunk row by row (sequential
//! loads the prefetchers follow), then for each block a register tile of up to
//! [`TILE_ROWS`] x-rows × 16 columns accumulates `x[r, kk] · W[kk, block]` with FMAs (12 AVX
//! accumulators), and the further x-row tiles reuse the chunk from L1. The work is `m·k·n` FMAs
//! over `k·n` weight reads. Prefill batches (hundreds of rows) go through it too: measured on
//! SmolLM2-135M, a 512-token prompt took ~35% less CPU than through gemm (docs/benchmarks.md),
//! as the row tiles reuse each weight chunk while it is in cache and nothing is packed.
//!
//! No `unsafe` here: [`pulp`] (already in the tree through gemm) checks the CPU at run time and
//! runs each task inside an `#[target_feature(enable = "avx2,fma", ..)]` frame, and its safe
//! `f32x8` operations are the vector loads, broadcasts and FMAs. (Plain `[f32; 16]` arrays with
//! `f32::mul_add` in that frame were not vectorized: scalar FMAs through the stack, 3.5× slower
//! than gemm.) Without AVX2+FMA, or off x86-64, [`matmul`] returns `None` and the caller uses
//! candle.
//!
//! Prior art: llama.cpp's `ggml_compute_forward_mul_mat` (one weight pass for all batch rows),
//! gemm's own `gemv` path for `m = 1`.

#[cfg(target_arch = "x86_64")]
use pulp::{bytemuck, f32x8, x86::V3};
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// Batch sizes (rows of `x`) that go through [`matmul`]; one row uses candle (gemm). Measured on
/// SmolLM2-135M (docs/benchmarks.md): for one row gemm's gemv streams the weights and is ~1.6×
/// faster; from two rows (decode batches) to 512 (prefill chunks) this kernel wins.
pub(crate) const SMALL_BATCH_ROWS: std::ops::RangeFrom<usize> = 2..;

/// Output columns per register tile: two 8-lane vectors per accumulator row.
const BLOCK_COLUMNS: usize = 16;
/// x-rows in one register tile: `TILE_ROWS × BLOCK_COLUMNS / 8` = 12 vector accumulators.
const TILE_ROWS: usize = 6;
/// Weight rows per pass over a task's columns: 64 rows × ≤ 1 KiB stays in L1/L2 while the
/// x-row tiles reuse it; the accumulators go through the (L1) output between passes.
const K_CHUNK: usize = 64;

/// `x`: `[m, k]` row-major; `weight_t`: `[k, n]` row-major. Returns `y`: `[m, n]` row-major, or
/// `None` when this CPU lacks AVX2+FMA.
#[cfg(target_arch = "x86_64")]
pub(crate) fn matmul(
    x: &[f32],
    m: usize,
    weight_t: &[f32],
    k: usize,
    n: usize,
) -> Option<Vec<f32>> {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(weight_t.len(), k * n, "weight is not [k, n]");
    if !std::is_x86_feature_detected!("fma") {
        return None;
    }
    let simd = pulp::x86::V3::try_new()?;
    let problem = Problem {
        x,
        m,
        weight_t,
        k,
        n,
    };
    let full_blocks = n / BLOCK_COLUMNS;
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return Some(y);
    }
    // Block-major scratch: block b holds y[:, 16b..16b + 16] as [m][16], gathered into [m, n]
    // at the end (m·n floats, small next to the k·n weights).
    let mut blocked = vec![0f32; full_blocks * m * BLOCK_COLUMNS];
    // A few tasks per thread; at most 16 blocks (256 columns, 1 KiB of each weight row) per task.
    let blocks_per_task = (full_blocks / (4 * rayon::current_num_threads())).clamp(1, 16);
    blocked
        .par_chunks_mut(blocks_per_task * m * BLOCK_COLUMNS)
        .enumerate()
        .for_each(|(task, out)| {
            // Each rayon task enters its own `#[target_feature(enable = "avx2,fma", ..)]` frame.
            simd.vectorize(ColumnRangeTask {
                simd,
                problem,
                first_block: task * blocks_per_task,
                out,
            })
        });
    for (block, out) in blocked.chunks_exact(m * BLOCK_COLUMNS).enumerate() {
        for (row, block_row) in out.chunks_exact(BLOCK_COLUMNS).enumerate() {
            let start = row * n + block * BLOCK_COLUMNS;
            y[start..start + BLOCK_COLUMNS].copy_from_slice(block_row);
        }
    }
    tail_columns(problem, full_blocks * BLOCK_COLUMNS, &mut y);
    Some(y)
}

/// Off x86-64 there is no kernel yet: the caller uses candle.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn matmul(
    _x: &[f32],
    _m: usize,
    _weight_t: &[f32],
    _k: usize,
    _n: usize,
) -> Option<Vec<f32>> {
    None
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Problem<'a> {
    x: &'a [f32],
    m: usize,
    weight_t: &'a [f32],
    k: usize,
    n: usize,
}

#[cfg(target_arch = "x86_64")]
struct ColumnRangeTask<'a, 'b> {
    simd: V3,
    problem: Problem<'a>,
    first_block: usize,
    out: &'b mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for ColumnRangeTask<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        self.run()
    }
}

#[cfg(target_arch = "x86_64")]
impl ColumnRangeTask<'_, '_> {
    /// Walks `k` in chunks of [`K_CHUNK`] weight rows; each chunk reads one contiguous segment
    /// per row for all the task's blocks, and the x-row tiles reuse it from L1.
    #[inline(always)]
    fn run(self) {
        let Problem { x, m, k, .. } = self.problem;
        let mut k_start = 0;
        while k_start < k {
            let k_range = k_start..(k_start + K_CHUNK).min(k);
            self.touch_weights(k_range.clone());
            for (block_offset, block_out) in
                self.out.chunks_exact_mut(m * BLOCK_COLUMNS).enumerate()
            {
                let column = (self.first_block + block_offset) * BLOCK_COLUMNS;
                let mut row = 0;
                while row < m {
                    let tile_rows = (m - row).min(TILE_ROWS);
                    let tile_input = TileInput {
                        simd: self.simd,
                        x_tile: &x[row * k..(row + tile_rows) * k],
                        problem: self.problem,
                        column,
                        k_range: k_range.clone(),
                    };
                    let out_tile =
                        &mut block_out[row * BLOCK_COLUMNS..(row + tile_rows) * BLOCK_COLUMNS];
                    match tile_rows {
                        6 => tile::<6>(tile_input, out_tile),
                        5 => tile::<5>(tile_input, out_tile),
                        4 => tile::<4>(tile_input, out_tile),
                        3 => tile::<3>(tile_input, out_tile),
                        2 => tile::<2>(tile_input, out_tile),
                        _ => tile::<1>(tile_input, out_tile),
                    }
                    row += tile_rows;
                }
            }
            k_start = k_range.end;
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl ColumnRangeTask<'_, '_> {
    /// Reads the chunk's weight segments row by row, one load per cache line, before the tiles
    /// walk them block by block (one line per row): independent, sequential loads the
    /// prefetchers follow, where the tiles' strided loads stalled on memory.
    #[inline(always)]
    fn touch_weights(&self, k_range: std::ops::Range<usize>) {
        let Problem { weight_t, m, n, .. } = self.problem;
        let first_column = self.first_block * BLOCK_COLUMNS;
        let columns = self.out.len() / m;
        let mut sum = self.simd.splat_f32x8(0.);
        for weight_row in weight_t[k_range.start * n..k_range.end * n].chunks_exact(n) {
            for line in weight_row[first_column..first_column + columns].chunks_exact(BLOCK_COLUMNS)
            {
                if let Ok(values) = <[f32; 8]>::try_from(&line[..8]) {
                    sum = self.simd.add_f32x8(sum, bytemuck::cast(values));
                }
            }
        }
        std::hint::black_box(sum);
    }
}

#[cfg(target_arch = "x86_64")]
struct TileInput<'a> {
    simd: V3,
    x_tile: &'a [f32],
    problem: Problem<'a>,
    column: usize,
    k_range: std::ops::Range<usize>,
}

#[cfg(target_arch = "x86_64")]
/// `out[r, :] = Σ_kk x[r, kk] · W[kk, column..column + 16]` for the `ROWS` rows of `x_tile`:
/// `2 × ROWS` AVX accumulators, two weight loads and `ROWS` broadcasts per `kk`.
#[inline(always)]
fn tile<const ROWS: usize>(input: TileInput<'_>, out_tile: &mut [f32]) {
    let TileInput {
        simd,
        x_tile,
        problem,
        column,
        k_range,
    } = input;
    let Problem { weight_t, k, n, .. } = problem;
    let x_rows: [&[f32]; ROWS] =
        std::array::from_fn(|r| &x_tile[r * k + k_range.start..r * k + k_range.end]);
    let mut low: [f32x8; ROWS] = std::array::from_fn(|r| {
        bytemuck::cast(
            <[f32; 8]>::try_from(&out_tile[r * BLOCK_COLUMNS..][..8]).unwrap_or_default(),
        )
    });
    let mut high: [f32x8; ROWS] = std::array::from_fn(|r| {
        bytemuck::cast(
            <[f32; 8]>::try_from(&out_tile[r * BLOCK_COLUMNS + 8..][..8]).unwrap_or_default(),
        )
    });
    let weight_rows = &weight_t[k_range.start * n..k_range.end * n];
    for (kk, weight_row) in weight_rows.chunks_exact(n).enumerate() {
        let Some(weights) = weight_row.get(column..column + BLOCK_COLUMNS) else {
            return;
        };
        let (Ok(weights_low), Ok(weights_high)) = (
            <[f32; 8]>::try_from(&weights[..8]),
            <[f32; 8]>::try_from(&weights[8..]),
        ) else {
            return;
        };
        let weights_low: f32x8 = bytemuck::cast(weights_low);
        let weights_high: f32x8 = bytemuck::cast(weights_high);
        for r in 0..ROWS {
            let x_value = simd.splat_f32x8(x_rows[r][kk]);
            low[r] = simd.mul_add_f32x8(x_value, weights_low, low[r]);
            high[r] = simd.mul_add_f32x8(x_value, weights_high, high[r]);
        }
    }
    for (r, out_row) in out_tile.chunks_exact_mut(BLOCK_COLUMNS).enumerate() {
        let low_values: [f32; 8] = bytemuck::cast(low[r]);
        let high_values: [f32; 8] = bytemuck::cast(high[r]);
        out_row[..8].copy_from_slice(&low_values);
        out_row[8..].copy_from_slice(&high_values);
    }
}

#[cfg(target_arch = "x86_64")]
/// The last `n % 16` columns, plainly (vocabularies like 32001 leave a few).
fn tail_columns(problem: Problem<'_>, first_column: usize, y: &mut [f32]) {
    let Problem {
        x,
        m,
        weight_t,
        k,
        n,
    } = problem;
    for row in 0..m {
        let x_row = &x[row * k..(row + 1) * k];
        for column in first_column..n {
            let mut sum = 0f32;
            for (kk, x_value) in x_row.iter().enumerate() {
                sum = x_value.mul_add(weight_t[kk * n + column], sum);
            }
            y[row * n + column] = sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
    fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2. - 1.
            })
            .collect()
    }

    #[test]
    fn matches_candle_matmul_on_random_shapes() -> candle_core::Result<()> {
        let shapes = [
            (7, 5),
            (8, 16),
            (13, 33),
            (64, 48),
            (576, 192),
            (100, 1000),
            (1536, 576),
        ];
        for (shape_index, &(k, n)) in shapes.iter().enumerate() {
            let weight_t = pseudo_random(k * n, shape_index as u64 * 1000 + 1);
            // Decode batches, then prefill-sized ones on the shapes small enough to check here.
            for m in (1..=33).chain([64, 97, 200]) {
                if m > 33 && k * n > 100_000 {
                    continue;
                }
                let x = pseudo_random(m * k, shape_index as u64 * 1000 + 2 + m as u64);
                let Some(ours) = matmul(&x, m, &weight_t, k, n) else {
                    eprintln!("no AVX2+FMA on this CPU: kernel not tested");
                    return Ok(());
                };
                let x_tensor = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
                let weight_tensor = Tensor::from_vec(weight_t.clone(), (k, n), &Device::Cpu)?;
                let expected = x_tensor
                    .matmul(&weight_tensor)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                for row in 0..m {
                    for column in 0..n {
                        // Rounding scales with Σ|x·w|, not with the (possibly cancelling) result.
                        let magnitude: f32 = (0..k)
                            .map(|kk| (x[row * k + kk] * weight_t[kk * n + column]).abs())
                            .sum();
                        let index = row * n + column;
                        let error = (ours[index] - expected[index]).abs();
                        assert!(
                            error <= 1e-5 * magnitude.max(f32::MIN_POSITIVE),
                            "k={k} n={n} m={m} y[{row},{column}]: {} vs candle {}",
                            ours[index],
                            expected[index]
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// CPU seconds of this process (all threads).
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum::<f64>())
            .unwrap_or(f64::NAN)
            / 100.
    }

    /// Kernel against candle per batch size on SmolLM2-135M's shapes, in CPU time:
    /// `cargo test --config 'profile.dev.package.adaptive-engine-models.opt-level=3' -p
    /// adaptive-engine-models --lib small_batch_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn small_batch_timing() -> candle_core::Result<()> {
        // One decoder layer of SmolLM2-135M: q and o (576×576), k and v (576×192), gate and up
        // (576×1536), down (1536×576); then the vocabulary projection (576×49152), which only
        // the rows that want logits go through.
        let layer = [
            (576, 576),
            (576, 576),
            (576, 192),
            (576, 192),
            (576, 1536),
            (576, 1536),
            (1536, 576),
        ];
        let lm_head = [(576, 49152)];
        for m in [1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 512] {
            let mut line = format!("m={m:3}:");
            for (name, shapes) in [("layer", &layer[..]), ("lm_head", &lm_head[..])] {
                let (mut ours_seconds, mut candle_seconds) = (0., 0.);
                for &(k, n) in shapes {
                    let weight_t = pseudo_random(k * n, 1);
                    let x = pseudo_random(m * k, 2);
                    let weight_tensor = Tensor::from_vec(weight_t.clone(), (k, n), &Device::Cpu)?;
                    let x_tensor = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
                    let repeats = if n > 10_000 { 3 } else { 30 };
                    let started = cpu_seconds();
                    for _ in 0..repeats {
                        std::hint::black_box(matmul(&x, m, &weight_t, k, n));
                    }
                    ours_seconds += (cpu_seconds() - started) / repeats as f64;
                    let started = cpu_seconds();
                    for _ in 0..repeats {
                        std::hint::black_box(x_tensor.matmul(&weight_tensor)?);
                    }
                    candle_seconds += (cpu_seconds() - started) / repeats as f64;
                }
                line += &format!(
                    " {name}: kernel {:.2} ms, candle {:.2} ms;",
                    ours_seconds * 1e3,
                    candle_seconds * 1e3
                );
            }
            eprintln!("{line} (CPU time per pass)");
        }
        Ok(())
    }
}
