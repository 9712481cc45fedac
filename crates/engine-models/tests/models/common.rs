//! Fixtures: the real SmolLM2 model, tiny random HF models, and a greedy loop with a trivial
//! block allocation (the real scheduler lives in adaptive-engine).

use std::path::{Path, PathBuf};

use adaptive_engine::{ForwardBatch, ModelExecutor, SequenceChunk};
use adaptive_engine_models::DeviceChoice;

pub const SMOLLM_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The SmolLM2 GGUF, fetched with scripts/fetch-model.sh if absent; `None` (and a message) when
/// it cannot be had, e.g. offline.
pub fn smollm_path() -> Option<PathBuf> {
    let path = repo_root().join("models").join(SMOLLM_FILE);
    if path.exists() {
        return Some(path);
    }
    let fetched = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/fetch-model.sh"))
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if fetched && path.exists() {
        return Some(path);
    }
    eprintln!(
        "skipping: {} missing and scripts/fetch-model.sh failed",
        path.display()
    );
    None
}

/// The device the device-generic path's tests run on: the CPU, unless `ENGINE_TEST_DEVICE`
/// names a CUDA device (`cuda` or `cuda:N`; the tests must then be built with the `cuda`
/// feature). The CPU suite runs the generic path on the CPU; a GPU session reruns the same tests
/// on the GPU, against the same CPU references and tolerances.
pub fn test_device() -> DeviceChoice {
    match std::env::var("ENGINE_TEST_DEVICE") {
        Err(_) => DeviceChoice::Cpu,
        Ok(value) if value.trim().is_empty() => DeviceChoice::Cpu,
        Ok(value) => value
            .parse()
            .unwrap_or_else(|reason| panic!("ENGINE_TEST_DEVICE: {reason}")),
    }
}

/// Blocks per sequence in [`sequence_blocks`]: sequence `i` owns a disjoint range, reversed so
/// that the executor's gather path (non-consecutive blocks) is exercised, not only the
/// in-place fast path.
pub fn sequence_blocks(sequence: usize, blocks_per_sequence: usize) -> Vec<u32> {
    let first = sequence * blocks_per_sequence;
    (first..first + blocks_per_sequence)
        .rev()
        .map(|b| b as u32)
        .collect()
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding of several prompts in lockstep batches (prefill all, then one token each
/// per step); returns the generated tokens per prompt, stopping a prompt at an eos id.
pub fn greedy_batch(
    executor: &mut dyn ModelExecutor,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    eos: &[u32],
    blocks_per_sequence: usize,
) -> Vec<Vec<u32>> {
    let mut generated: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut finished = vec![false; prompts.len()];
    let tables: Vec<Vec<u32>> = (0..prompts.len())
        .map(|i| sequence_blocks(i, blocks_per_sequence))
        .collect();
    let batch = ForwardBatch {
        chunks: prompts
            .iter()
            .enumerate()
            .map(|(i, prompt)| SequenceChunk {
                sequence_id: i as u64,
                tokens: prompt.clone(),
                start_pos: 0,
                block_table: tables[i].clone(),
                wants_logits: true,
            })
            .collect(),
    };
    let logits = executor.forward(&batch).expect("prefill");
    for (i, row) in logits.iter().enumerate() {
        generated[i].push(argmax(row));
    }
    for _ in 1..max_new_tokens {
        for i in 0..prompts.len() {
            if eos.contains(generated[i].last().expect("one token")) {
                finished[i] = true;
            }
        }
        let active: Vec<usize> = (0..prompts.len()).filter(|&i| !finished[i]).collect();
        if active.is_empty() {
            break;
        }
        let batch = ForwardBatch {
            chunks: active
                .iter()
                .map(|&i| SequenceChunk {
                    sequence_id: i as u64,
                    tokens: vec![*generated[i].last().expect("one token")],
                    start_pos: prompts[i].len() + generated[i].len() - 1,
                    block_table: tables[i].clone(),
                    wants_logits: true,
                })
                .collect(),
        };
        let logits = executor.forward(&batch).expect("decode");
        for (row, &i) in logits.iter().zip(&active) {
            generated[i].push(argmax(row));
        }
    }
    generated
}

/// Deterministic pseudo-random numbers (a 64-bit LCG), so that test weights are the same on
/// every run without a rand dependency.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(
            seed.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        )
    }

    /// Uniform in [-scale, scale).
    pub fn next_f32(&mut self, scale: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2. - 1.) * scale
    }

    pub fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.next_f32(scale)).collect()
    }
}
