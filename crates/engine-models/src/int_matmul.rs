//! `y = x · Wᵀ` on CPU with Q4_0/Q4_1 (4-bit) or Q8_0 weights and 8-bit activations, in integer
//! arithmetic: the kernel that makes prompt processing and decode of such GGUF models faster
//! than the f32 path ([`crate::small_batch_matmul`]) the weights are otherwise dequantized for.
//! The module docs describe the 4-bit path; Q8_0 (signed codes, one per byte, often the output
//! matrix) is the variant of `Tile::run_q8`.
//!
//! Why: in f32 an AVX2 FMA does 8 multiply-adds, so a core peaks at 16 per cycle (two FMA
//! pipes), and the f32 kernel reached ~60 % of that on a 512-token prefill. `vpmaddubsw`
//! multiplies 32 unsigned bytes by 32 signed bytes and adds adjacent pairs into 16 `i16`: 32
//! multiply-adds per instruction on the same two pipes, 2× the f32 peak before any other gain,
//! and 4-bit weights sum eight of them in `i16` without overflow (8 · 2 · 15 · 127 = 30 480),
//! so one `vpmaddwd` per 32-element block widens the sums to `i32`.
//!
//! **Numbers.** A Q4_0/Q4_1 block is 32 weights of one output row, `w = d·q + m` with `q` in
//! 0..15 (Q4_0: `m = −8d`). The weights are kept exactly as the file has them (the 4-bit codes,
//! two per byte, `d` and `m` as f32): nothing is lost on the weight side. Activations are
//! quantized per row and per 32-element block, symmetric, `x ≈ s·a` with `a` in −127..127 (like
//! llama.cpp's Q8 activations for the same formats), so each block contributes
//! `d·s·Σ q·a + m·s·Σ a` to the output. That rounding of the activations is the only difference
//! from the f32 path: relative errors ~1e-3 on the outputs, the same compromise llama.cpp makes
//! for every quantized matmul. Loading a model with [`crate::QuantizedMatmul::DequantizeF32`]
//! keeps everything in f32 (the exact reference).
//!
//! **Layout.** Output columns go in groups of 8 (one `i32x8`/`f32x8` lane each). For a group and
//! a block, 8 "quads" of 32 codes: quad `t` holds, for each of the 8 columns, the codes of the 4
//! consecutive inputs `4t..4t+4` of the block. Quads `2p` and `2p + 1` share one 32-byte vector
//! (low and high nibbles; an `and` and a shift unpack them per tile), so a decode step, which
//! reads every weight once, reads half a byte per weight as llama.cpp does. The activation side broadcasts 4 consecutive
//! `i8` of one row (one `i32`), so one `vpmaddubsw` computes, for all 8 columns, the dot product
//! of those 4 inputs (as two `i16` pair sums per column). For each block a tile holds the 8 code
//! vectors in registers and runs each of its rows through them: 8 broadcasts, 8 `vpmaddubsw`
//! and a tree of `vpaddw`, then one `vpmaddwd`, a conversion and two FMAs into the row's `f32x8`.
//! A row's activation block (8 words, scale, sum) is one 40-byte record, so the tile's loop
//! reads one place per row and block (measured: +25 % over three separate arrays).
//!
//! **Work split.** The activations are quantized once (in parallel); then a rayon task takes a
//! range of rows and a range of column groups, and for each group runs its row tiles over the
//! full `k`: the group's codes (`k · 4` bytes, ≤ 6 KiB for SmolLM2) stay in L1 across the
//! tiles. Prefill chunks split by rows, decode steps (a row per sequence) by columns.
//!
//! No `unsafe`: as in `small_batch_matmul`, [`pulp`] checks the CPU once and runs each task in a
//! `#[target_feature(enable = "avx2,fma", ..)]` frame; without AVX2 (or off x86-64)
//! [`PackedWeights::matmul`] returns `None` and the caller uses the f32 path.
//!
//! Prior art: llama.cpp's `ggml_vec_dot_q4_1_q8_1` (same block arithmetic, one dot product per
//! row pair); the outer-product register tile with broadcast quads is the layout of oneDNN's and
//! FBGEMM's AVX2 `u8s8` GEMMs.

use candle_core::quantized::{GgmlDType, QTensor};

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::__m256i;
#[cfg(target_arch = "x86_64")]
use pulp::{f32x8, x86::V3, Simd};
use rayon::prelude::*;

/// Elements per quantization block, of the weights and of the activations.
const BLOCK: usize = 32;
/// Output columns per group (one AVX2 lane each).
const GROUP: usize = 8;
/// Inputs per quad: the 4 bytes one broadcast `i32` carries.
const QUAD: usize = 4;
const QUADS_PER_BLOCK: usize = BLOCK / QUAD;
/// Two quads share each 32-byte vector of codes: quad `2p` in the low nibbles, `2p + 1` in the
/// high ones.
const PAIRS_PER_BLOCK: usize = QUADS_PER_BLOCK / 2;
/// Rows per tile: a block's 8 code vectors stay in registers while each row of the tile runs
/// through them, so more rows amortize loading them (6 and 8 measured the same).
const TILE_ROWS: usize = 8;

/// What the packed codes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// Q4_0/Q4_1: unsigned 4-bit codes, two per byte, `w = d·q + m`.
    Q4,
    /// Q8_0: signed 8-bit codes, one per byte, `w = d·q`.
    Q8,
}

/// A linear layer's quantized weights, packed for [`PackedWeights::matmul`] (see the module
/// docs).
#[derive(Clone)]
pub(crate) struct PackedWeights {
    format: Format,
    /// Inputs (`in_features`), a multiple of [`BLOCK`].
    k: usize,
    /// Outputs (`out_features`), a multiple of [`GROUP`].
    n: usize,
    /// Q4: `[group][block][pair]`, two quads of 32 codes, one per nibble; Q8:
    /// `[group][block][quad]`, the `i8` codes' bits (see the module docs).
    codes: Vec<[u8; 32]>,
    /// `[group][block]`: `d` of the block of each of the group's 8 columns.
    scales: Vec<[f32; GROUP]>,
    /// `[group][block]`: `m` of the block of each of the group's 8 columns (Q4 only).
    mins: Vec<[f32; GROUP]>,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights")
            .field("format", &self.format)
            .field("k", &self.k)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl PackedWeights {
    /// Packs a `[out, in]` GGUF matrix in Q4_0, Q4_1 or Q8_0 (read from its raw blocks, bit for
    /// bit); `None` for any other format or shape (the caller keeps the f32 path for it).
    pub fn from_qtensor(tensor: &QTensor) -> Option<Self> {
        let dtype = tensor.dtype();
        let (format, block_bytes) = match dtype {
            GgmlDType::Q4_0 => (Format::Q4, 18),
            GgmlDType::Q4_1 => (Format::Q4, 20),
            GgmlDType::Q8_0 => (Format::Q8, 34),
            _ => return None,
        };
        let (n, k) = tensor.shape().dims2().ok()?;
        if n == 0 || k == 0 || !k.is_multiple_of(BLOCK) || !n.is_multiple_of(GROUP) {
            return None;
        }
        let data = tensor.data().ok()?;
        let blocks = k / BLOCK;
        if data.len() != n * blocks * block_bytes {
            return None;
        }
        let groups = n / GROUP;
        let vectors_per_block = match format {
            Format::Q4 => PAIRS_PER_BLOCK,
            Format::Q8 => QUADS_PER_BLOCK,
        };
        let mut packed = Self {
            format,
            k,
            n,
            codes: vec![[0u8; 32]; groups * blocks * vectors_per_block],
            scales: vec![[0f32; GROUP]; groups * blocks],
            mins: match format {
                Format::Q4 => vec![[0f32; GROUP]; groups * blocks],
                Format::Q8 => Vec::new(),
            },
        };
        for (row, row_bytes) in data.chunks_exact(blocks * block_bytes).enumerate() {
            let (group, lane) = (row / GROUP, row % GROUP);
            for (block, bytes) in row_bytes.chunks_exact(block_bytes).enumerate() {
                let slot = group * blocks + block;
                let d = f16_at(bytes, 0);
                packed.scales[slot][lane] = d;
                if format == Format::Q8 {
                    for (i, &code) in bytes[2..34].iter().enumerate() {
                        let quad = &mut packed.codes[slot * QUADS_PER_BLOCK + i / QUAD];
                        quad[lane * QUAD + i % QUAD] = code;
                    }
                    continue;
                }
                let (m, nibbles) = match dtype {
                    GgmlDType::Q4_0 => (-8. * d, &bytes[2..18]),
                    _ => (f16_at(bytes, 2), &bytes[4..20]),
                };
                packed.mins[slot][lane] = m;
                // GGUF order: element i < 16 is the low nibble of byte i, element 16 + i the
                // high nibble.
                for i in 0..BLOCK {
                    let code = if i < 16 {
                        nibbles[i] & 0x0f
                    } else {
                        nibbles[i - 16] >> 4
                    };
                    let quad = i / QUAD;
                    let pair = &mut packed.codes[slot * PAIRS_PER_BLOCK + quad / 2];
                    pair[lane * QUAD + i % QUAD] |= code << (4 * (quad % 2));
                }
            }
        }
        Some(packed)
    }

    /// `x`: `[m, k]` row-major. Returns `y = x · Wᵀ`, `[m, n]` row-major, or `None` when this CPU
    /// lacks AVX2+FMA.
    ///
    /// Each output row depends only on its own input row, computed in the same order whatever
    /// `m` and the task split: a sequence's results do not change with what it is batched with.
    #[cfg(target_arch = "x86_64")]
    pub fn matmul(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        assert_eq!(x.len(), m * self.k, "x is not [m, k]");
        let simd = V3::try_new()?;
        let (k, n) = (self.k, self.n);
        let mut y = vec![0f32; m * n];
        if m == 0 {
            return Some(y);
        }
        let activations = QuantizedRows::new(simd, x, k);
        // Tasks are (row range, column-group range): rows first (prefill chunks have hundreds),
        // then columns, until there are a few tasks per thread (a decode step has one row).
        let wanted = 4 * rayon::current_num_threads();
        let groups = n / GROUP;
        let rows_per_task = m.div_ceil(wanted).next_multiple_of(TILE_ROWS).min(m);
        let row_tasks = m.div_ceil(rows_per_task);
        let groups_per_task = groups.div_ceil(wanted.div_ceil(row_tasks)).max(1);
        let column_tasks = groups.div_ceil(groups_per_task);
        let task =
            |rows: std::ops::Range<usize>, groups: std::ops::Range<usize>, out: &mut [f32]| {
                simd.vectorize(Task {
                    simd,
                    weights: self,
                    activations: &activations,
                    rows,
                    groups,
                    out,
                })
            };
        if column_tasks == 1 {
            // Whole rows per task (prefill): each task writes its own rows of `y` in place.
            y.par_chunks_mut(rows_per_task * n)
                .enumerate()
                .for_each(|(index, out)| {
                    let first = index * rows_per_task;
                    task(first..first + out.len() / n, 0..groups, out)
                });
            return Some(y);
        }
        let results: Vec<((usize, usize), Vec<f32>)> = (0..row_tasks * column_tasks)
            .into_par_iter()
            .map(|index| {
                let (row_task, column_task) = (index / column_tasks, index % column_tasks);
                let rows = row_task * rows_per_task..((row_task + 1) * rows_per_task).min(m);
                let first_group = column_task * groups_per_task;
                let groups = first_group..(first_group + groups_per_task).min(groups);
                let mut out = vec![0f32; rows.len() * groups.len() * GROUP];
                let origin = (rows.start, groups.start * GROUP);
                task(rows, groups, &mut out);
                (origin, out)
            })
            .collect();
        for ((first_row, first_column), out) in results {
            let width = out.len() / rows_per_task.min(m - first_row);
            for (row, values) in out.chunks_exact(width).enumerate() {
                let start = (first_row + row) * n + first_column;
                y[start..start + width].copy_from_slice(values);
            }
        }
        Some(y)
    }

    /// Off x86-64 there is no kernel yet: the caller uses the f32 path.
    #[cfg(not(target_arch = "x86_64"))]
    pub fn matmul(&self, _x: &[f32], _m: usize) -> Option<Vec<f32>> {
        None
    }

    /// Whether [`Self::matmul`] runs on this CPU (AVX2 and FMA).
    pub fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        return V3::try_new().is_some();
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    pub fn out_features(&self) -> usize {
        self.n
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Rows of activations quantized per 32-element block: `x ≈ scale · a`, `a` in −127..127.
struct QuantizedRows {
    /// `[row][block]`: what the kernel reads for one row and block, together.
    blocks: Vec<QuantizedBlock>,
    blocks_per_row: usize,
}

#[derive(Clone, Copy, Default)]
struct QuantizedBlock {
    /// 4 consecutive `i8` per word, little-endian: what the kernel broadcasts.
    words: [i32; QUADS_PER_BLOCK],
    scale: f32,
    /// `scale · Σ a`, for the weights' `m` term.
    sum: f32,
}

impl QuantizedRows {
    #[cfg(target_arch = "x86_64")]
    fn new(simd: V3, x: &[f32], k: usize) -> Self {
        let mut blocks = vec![QuantizedBlock::default(); x.len() / BLOCK];
        // Blocks are independent; rayon splits them in runs of 64.
        x.par_chunks(BLOCK * 64)
            .zip(blocks.par_chunks_mut(64))
            .for_each(|(x, blocks)| simd.vectorize(QuantizeTask { simd, x, blocks }));
        Self {
            blocks,
            blocks_per_row: k / BLOCK,
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct QuantizeTask<'a> {
    simd: V3,
    x: &'a [f32],
    blocks: &'a mut [QuantizedBlock],
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for QuantizeTask<'_> {
    type Output = ();

    /// Rounds each block of 32 activations to `i8` (4 per word) with `scale = max |x| / 127`,
    /// and records `scale` and `scale · Σ a`. `vcvtps2dq` rounds ties to even (the default
    /// MXCSR mode), and the two saturating packs turn 4 × 8 `i32` into 32 `i8` in the order
    /// `[x0..4, x8..12, x16..20, x24..28 | x4..8, ...]`, which one permute of words restores.
    #[inline(always)]
    fn call(self) {
        let simd = self.simd;
        let (avx, avx2) = (simd.avx, simd.avx2);
        let order: __m256i = pulp::cast([0i32, 4, 1, 5, 2, 6, 3, 7]);
        for (block, quantized) in self.x.chunks_exact(BLOCK).zip(self.blocks.iter_mut()) {
            let Ok(block) = <&[f32; BLOCK]>::try_from(block) else {
                continue;
            };
            let values: [f32x8; 4] = pulp::cast(*block);
            // No closures here: they would not inherit the target features and every intrinsic
            // inside would become a call.
            let max = simd.max_f32s(
                simd.max_f32s(simd.abs_f32x8(values[0]), simd.abs_f32x8(values[1])),
                simd.max_f32s(simd.abs_f32x8(values[2]), simd.abs_f32x8(values[3])),
            );
            let max = pulp::cast::<_, [f32; 8]>(max)
                .into_iter()
                .fold(0f32, f32::max);
            let block_scale = max / 127.;
            let inverse = simd.splat_f32x8(if block_scale > 0. {
                1. / block_scale
            } else {
                0.
            });
            let rounded: [__m256i; 4] = [
                avx._mm256_cvtps_epi32(pulp::cast(simd.mul_f32s(values[0], inverse))),
                avx._mm256_cvtps_epi32(pulp::cast(simd.mul_f32s(values[1], inverse))),
                avx._mm256_cvtps_epi32(pulp::cast(simd.mul_f32s(values[2], inverse))),
                avx._mm256_cvtps_epi32(pulp::cast(simd.mul_f32s(values[3], inverse))),
            ];
            let total = avx2._mm256_add_epi32(
                avx2._mm256_add_epi32(rounded[0], rounded[1]),
                avx2._mm256_add_epi32(rounded[2], rounded[3]),
            );
            let total: i32 = pulp::cast::<_, [i32; 8]>(total).into_iter().sum();
            let bytes = avx2._mm256_packs_epi16(
                avx2._mm256_packs_epi32(rounded[0], rounded[1]),
                avx2._mm256_packs_epi32(rounded[2], rounded[3]),
            );
            *quantized = QuantizedBlock {
                words: pulp::cast(avx2._mm256_permutevar8x32_epi32(bytes, order)),
                scale: block_scale,
                sum: block_scale * total as f32,
            };
        }
    }
}

/// One task's rows × column groups, written to its own `[rows][groups · 8]` buffer.
#[cfg(target_arch = "x86_64")]
struct Task<'a> {
    simd: V3,
    weights: &'a PackedWeights,
    activations: &'a QuantizedRows,
    rows: std::ops::Range<usize>,
    groups: std::ops::Range<usize>,
    out: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for Task<'_> {
    type Output = ();

    /// Column group outermost: its codes stay in L1 while the row tiles walk them.
    #[inline(always)]
    fn call(self) {
        let width = self.groups.len() * GROUP;
        for (group_index, group) in self.groups.clone().enumerate() {
            let mut row = self.rows.start;
            while row < self.rows.end {
                let tile_rows = (self.rows.end - row).min(TILE_ROWS);
                let tile = Tile {
                    simd: self.simd,
                    weights: self.weights,
                    activations: self.activations,
                    group,
                    first_row: row,
                };
                let first = (row - self.rows.start) * width + group_index * GROUP;
                let out = &mut self.out[first..];
                match tile_rows {
                    8 => tile.run::<8>(out, width),
                    7 => tile.run::<7>(out, width),
                    6 => tile.run::<6>(out, width),
                    5 => tile.run::<5>(out, width),
                    4 => tile.run::<4>(out, width),
                    3 => tile.run::<3>(out, width),
                    2 => tile.run::<2>(out, width),
                    _ => tile.run::<1>(out, width),
                }
                row += tile_rows;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    simd: V3,
    weights: &'a PackedWeights,
    activations: &'a QuantizedRows,
    group: usize,
    first_row: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    /// `out[r · stride..][..8] = Σ_blocks d·s·Σ q·a + m·s·Σ a` for the tile's `ROWS` rows.
    #[inline(always)]
    fn run<const ROWS: usize>(&self, out: &mut [f32], stride: usize) {
        match self.weights.format {
            Format::Q4 => self.run_q4::<ROWS>(out, stride),
            Format::Q8 => self.run_q8::<ROWS>(out, stride),
        }
    }

    /// The tile's rows of quantized activations, `[ROWS][blocks]`.
    #[inline(always)]
    fn rows<const ROWS: usize>(&self) -> Option<&[QuantizedBlock]> {
        let blocks = self.activations.blocks_per_row;
        let first = self.first_row * blocks;
        self.activations.blocks.get(first..first + ROWS * blocks)
    }

    /// Q8_0 codes are signed, and `vpmaddubsw` wants its first operand unsigned: it multiplies
    /// `|q|` by the activations with `q`'s sign applied (`vpsignb`), llama.cpp's Q8_0 trick. A
    /// pair sum can reach 2 · 128 · 127, so every quad widens to `i32` at once (`vpmaddwd`).
    #[inline(always)]
    fn run_q8<const ROWS: usize>(&self, out: &mut [f32], stride: usize) {
        let simd = self.simd;
        let avx2 = simd.avx2;
        let blocks = self.activations.blocks_per_row;
        let group_start = self.group * blocks;
        let codes = &self.weights.codes
            [group_start * QUADS_PER_BLOCK..(group_start + blocks) * QUADS_PER_BLOCK];
        let weight_scales = &self.weights.scales[group_start..group_start + blocks];
        let Some(rows) = self.rows::<ROWS>() else {
            return;
        };
        let ones = simd.avx._mm256_set1_epi16(1);
        let mut totals: [f32x8; ROWS] = [simd.splat_f32x8(0.); ROWS];
        for (block, block_codes) in codes.chunks_exact(QUADS_PER_BLOCK).enumerate() {
            let Ok(block_codes) = <&[[u8; 32]; QUADS_PER_BLOCK]>::try_from(block_codes) else {
                return;
            };
            let signed: [__m256i; QUADS_PER_BLOCK] = pulp::cast(*block_codes);
            let abs = |quad: __m256i| avx2._mm256_abs_epi8(quad);
            let magnitudes: [__m256i; QUADS_PER_BLOCK] = [
                abs(signed[0]),
                abs(signed[1]),
                abs(signed[2]),
                abs(signed[3]),
                abs(signed[4]),
                abs(signed[5]),
                abs(signed[6]),
                abs(signed[7]),
            ];
            let d: f32x8 = pulp::cast(weight_scales[block]);
            for (row, total) in rows.chunks_exact(blocks).zip(totals.iter_mut()) {
                let Some(&QuantizedBlock { words, scale, .. }) = row.get(block) else {
                    return;
                };
                let product = |quad: usize| {
                    let inputs = simd.avx._mm256_set1_epi32(words[quad]);
                    let signed_inputs = avx2._mm256_sign_epi8(inputs, signed[quad]);
                    avx2._mm256_madd_epi16(
                        avx2._mm256_maddubs_epi16(magnitudes[quad], signed_inputs),
                        ones,
                    )
                };
                let sums32 = avx2._mm256_add_epi32(
                    avx2._mm256_add_epi32(
                        avx2._mm256_add_epi32(product(0), product(1)),
                        avx2._mm256_add_epi32(product(2), product(3)),
                    ),
                    avx2._mm256_add_epi32(
                        avx2._mm256_add_epi32(product(4), product(5)),
                        avx2._mm256_add_epi32(product(6), product(7)),
                    ),
                );
                let dot = simd.convert_i32x8_to_f32x8(pulp::cast(sums32));
                let ds = simd.mul_f32s(d, simd.splat_f32x8(scale));
                *total = simd.mul_add_f32x8(dot, ds, *total);
            }
        }
        store(&totals, out, stride);
    }

    #[inline(always)]
    fn run_q4<const ROWS: usize>(&self, out: &mut [f32], stride: usize) {
        let simd = self.simd;
        let avx2 = simd.avx2;
        let blocks = self.activations.blocks_per_row;
        let group_start = self.group * blocks;
        let codes = &self.weights.codes
            [group_start * PAIRS_PER_BLOCK..(group_start + blocks) * PAIRS_PER_BLOCK];
        let weight_scales = &self.weights.scales[group_start..group_start + blocks];
        let weight_mins = &self.weights.mins[group_start..group_start + blocks];
        let Some(rows) = self.rows::<ROWS>() else {
            return;
        };
        let ones = simd.avx._mm256_set1_epi16(1);
        let mut totals: [f32x8; ROWS] = [simd.splat_f32x8(0.); ROWS];
        let low_nibbles = simd.avx._mm256_set1_epi8(0x0f);
        for (block, block_codes) in codes.chunks_exact(PAIRS_PER_BLOCK).enumerate() {
            let Ok(block_codes) = <&[[u8; 32]; PAIRS_PER_BLOCK]>::try_from(block_codes) else {
                return;
            };
            // The block's 8 quads, unpacked from 4 vectors, stay in registers while each row
            // of the tile runs through them (row-major within the block: 8 codes + 1 sum +
            // temporaries fit the 16 ymm).
            let pairs: [__m256i; PAIRS_PER_BLOCK] = pulp::cast(*block_codes);
            let low = |pair: __m256i| avx2._mm256_and_si256(pair, low_nibbles);
            let high = |pair: __m256i| {
                avx2._mm256_and_si256(avx2._mm256_srli_epi16::<4>(pair), low_nibbles)
            };
            let quads: [__m256i; QUADS_PER_BLOCK] = [
                low(pairs[0]),
                high(pairs[0]),
                low(pairs[1]),
                high(pairs[1]),
                low(pairs[2]),
                high(pairs[2]),
                low(pairs[3]),
                high(pairs[3]),
            ];
            let d: f32x8 = pulp::cast(weight_scales[block]);
            let m: f32x8 = pulp::cast(weight_mins[block]);
            for (row, total) in rows.chunks_exact(blocks).zip(totals.iter_mut()) {
                let Some(&QuantizedBlock { words, scale, sum }) = row.get(block) else {
                    return;
                };
                // Codes (unsigned) first, activations (signed) second; `i16` sums of 8 quads
                // cannot overflow (module docs).
                let product = |quad: usize| {
                    avx2._mm256_maddubs_epi16(quads[quad], simd.avx._mm256_set1_epi32(words[quad]))
                };
                let sums16 = avx2._mm256_add_epi16(
                    avx2._mm256_add_epi16(
                        avx2._mm256_add_epi16(product(0), product(1)),
                        avx2._mm256_add_epi16(product(2), product(3)),
                    ),
                    avx2._mm256_add_epi16(
                        avx2._mm256_add_epi16(product(4), product(5)),
                        avx2._mm256_add_epi16(product(6), product(7)),
                    ),
                );
                let sums32 = avx2._mm256_madd_epi16(sums16, ones);
                let dot = simd.convert_i32x8_to_f32x8(pulp::cast(sums32));
                let ds = simd.mul_f32s(d, simd.splat_f32x8(scale));
                *total = simd.mul_add_f32x8(dot, ds, *total);
                *total = simd.mul_add_f32x8(m, simd.splat_f32x8(sum), *total);
            }
        }
        store(&totals, out, stride);
    }
}

/// Writes a tile's row totals into `out` (rows `stride` apart).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn store<const ROWS: usize>(totals: &[f32x8; ROWS], out: &mut [f32], stride: usize) {
    for (r, total) in totals.iter().enumerate() {
        let values: [f32; GROUP] = pulp::cast(*total);
        out[r * stride..r * stride + GROUP].copy_from_slice(&values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::values;
    use candle_core::{Device, Tensor};

    /// `x · Wᵀ` in f64 from the dequantized weights, with `x` rounded the way the kernel rounds
    /// it: what the integer kernel must reproduce up to float summation order.
    fn reference(x: &[f32], m: usize, weights: &[f32], k: usize, n: usize) -> Vec<f64> {
        let rounded: Vec<f64> = x
            .chunks_exact(BLOCK)
            .flat_map(|block| {
                let max = block.iter().fold(0f32, |max, v| max.max(v.abs()));
                let scale = max / 127.;
                let inverse = if scale > 0. { 1. / scale } else { 0. };
                block.iter().map(move |v| {
                    f64::from((v * inverse).round_ties_even().clamp(-127., 127.)) * f64::from(scale)
                })
            })
            .collect();
        let mut y = vec![0f64; m * n];
        for row in 0..m {
            for col in 0..n {
                y[row * n + col] = (0..k)
                    .map(|i| rounded[row * k + i] * f64::from(weights[col * k + i]))
                    .sum();
            }
        }
        y
    }

    fn check(dtype: GgmlDType, m: usize, k: usize, n: usize) {
        let weights = Tensor::from_vec(values(7, n * k), (n, k), &Device::Cpu).expect("tensor");
        let quantized = QTensor::quantize(&weights, dtype).expect("quantize");
        let dequantized: Vec<f32> = quantized
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .expect("dequantize");
        let packed = PackedWeights::from_qtensor(&quantized).expect("packs");
        let mut x = values(11, m * k);
        // A block of zeros and a block with one large outlier: the scale's edge cases.
        x[..BLOCK].fill(0.);
        x[BLOCK] = 40.;
        let Some(y) = packed.matmul(&x, m) else {
            eprintln!("no AVX2+FMA on this CPU: nothing to check");
            return;
        };
        let expected = reference(&x, m, &dequantized, k, n);
        for (index, (got, want)) in y.iter().zip(&expected).enumerate() {
            let tolerance = 1e-4 * want.abs().max(1.);
            assert!(
                (f64::from(*got) - want).abs() <= tolerance,
                "{dtype:?} m={m} k={k} n={n}: y[{index}] = {got}, reference {want}"
            );
        }
    }

    #[test]
    fn matches_the_reference_for_q4_0_q4_1_and_q8_0_at_every_tile_remainder() {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            // 1..=7 rows cover every tile size and a two-tile split; 45 spans several tasks.
            for m in [1, 2, 5, 6, 7, 13, 45] {
                check(dtype, m, 96, 24);
            }
            // SmolLM2's MLP shapes: k = 576 → 1536 and back (18 and 48 blocks).
            check(dtype, 33, 576, 64);
            check(dtype, 17, 1536, 16);
        }
    }

    #[test]
    fn stays_close_to_the_unrounded_product() {
        // The activation rounding is the kernel's only approximation: on realistic shapes the
        // outputs stay within 1 % (relative to the output scale) of the exact f32 product.
        let (m, k, n) = (20, 576, 40);
        let weights = Tensor::from_vec(values(3, n * k), (n, k), &Device::Cpu).expect("tensor");
        let quantized = QTensor::quantize(&weights, GgmlDType::Q4_1).expect("quantize");
        let dequantized: Vec<f32> = quantized
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .expect("dequantize");
        let packed = PackedWeights::from_qtensor(&quantized).expect("Q4_1 packs");
        let x = values(5, m * k);
        let Some(y) = packed.matmul(&x, m) else {
            return;
        };
        let exact: Vec<f64> = (0..m * n)
            .map(|index| {
                let (row, col) = (index / n, index % n);
                (0..k)
                    .map(|i| f64::from(x[row * k + i]) * f64::from(dequantized[col * k + i]))
                    .sum()
            })
            .collect();
        let scale = exact.iter().fold(0f64, |max, v| max.max(v.abs()));
        let worst = y
            .iter()
            .zip(&exact)
            .map(|(got, want)| (f64::from(*got) - want).abs())
            .fold(0f64, f64::max);
        assert!(
            worst <= 0.01 * scale,
            "worst error {worst} against output scale {scale}"
        );
    }

    #[test]
    fn refuses_other_formats_and_shapes() {
        let weights = Tensor::from_vec(values(1, 16 * 64), (16, 64), &Device::Cpu).expect("t");
        let q5 = QTensor::quantize(&weights, GgmlDType::Q5_0).expect("quantize");
        assert!(PackedWeights::from_qtensor(&q5).is_none());
        // 12 outputs: not a whole number of 8-column groups.
        let weights = Tensor::from_vec(values(1, 12 * 64), (12, 64), &Device::Cpu).expect("t");
        let q4 = QTensor::quantize(&weights, GgmlDType::Q4_1).expect("quantize");
        assert!(PackedWeights::from_qtensor(&q4).is_none());
    }
}
