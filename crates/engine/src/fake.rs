//! [`FakeExecutor`]: a deterministic stand-in for a model, for tests and for running harmony
//! without weights.
//!
//! It behaves like a real paged-attention executor where it matters for the scheduler: it keeps
//! a "KV cache" of `num_blocks * block_size` slots, writes each new token into the slot that the
//! block table names, and computes the logits from the context it *reads back through the block
//! table*. A scheduler that hands out a wrong block table, frees a block still in use, or serves a
//! stale prefix from the prefix cache therefore changes the output, and a slot read before it was
//! written is an error. The next token is a pure function of the whole context (a hash of
//! `(position, token)` pairs), so output is independent of batching by construction.

use crate::executor::{ExecutorError, ForwardBatch, KvGeometry, ModelExecutor};

/// What a fake "model" prefers to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeModelSpec {
    pub vocab_size: usize,
    /// The most likely next token is drawn from this range (e.g. lowercase letters, so that a
    /// byte-level tokenizer decodes readable text).
    pub preferred_tokens: std::ops::Range<u32>,
    /// If set, the context hash makes eos the most likely token about once every `eos_period`
    /// positions, so sequences end at varied lengths.
    pub eos: Option<(u32, u64)>,
    /// Wall-clock time each forward pass takes, to keep requests in flight in tests of
    /// draining and cancellation (zero: as fast as possible).
    pub step_delay: std::time::Duration,
}

impl FakeModelSpec {
    pub fn small() -> Self {
        Self {
            vocab_size: 64,
            preferred_tokens: 1..64,
            eos: None,
            step_delay: std::time::Duration::ZERO,
        }
    }
}

#[derive(Debug)]
pub struct FakeExecutor {
    geometry: KvGeometry,
    spec: FakeModelSpec,
    /// One entry per KV slot: the (position, token) written there.
    slots: Vec<Option<(usize, u32)>>,
    forward_calls: u64,
}

impl FakeExecutor {
    pub fn new(geometry: KvGeometry, spec: FakeModelSpec) -> Self {
        Self {
            slots: vec![None; geometry.num_blocks * geometry.block_size],
            geometry,
            spec,
            forward_calls: 0,
        }
    }

    pub fn forward_calls(&self) -> u64 {
        self.forward_calls
    }

    fn slot(&self, block_table: &[u32], position: usize) -> Result<usize, ExecutorError> {
        let block_size = self.geometry.block_size;
        let block = block_table.get(position / block_size).ok_or_else(|| {
            ExecutorError::InvalidBatch(format!("no block for position {position}"))
        })?;
        if *block as usize >= self.geometry.num_blocks {
            return Err(ExecutorError::InvalidBatch(format!(
                "block {block} out of range"
            )));
        }
        Ok(*block as usize * block_size + position % block_size)
    }

    fn logits_for_context(&self, context_hash: u64, context_len: usize) -> Vec<f32> {
        let spec = &self.spec;
        let mut logits: Vec<f32> = (0..spec.vocab_size as u64)
            .map(|token| {
                (mix(context_hash ^ token.wrapping_mul(0x9E37)) % 4000) as f32 / 1000.0 - 2.0
            })
            .collect();
        let span = u64::from(spec.preferred_tokens.end - spec.preferred_tokens.start).max(1);
        let mut favourite = spec.preferred_tokens.start + (mix(context_hash) % span) as u32;
        if let Some((eos, period)) = spec.eos {
            if context_len > 1 && mix(context_hash ^ 0xE05).is_multiple_of(period.max(1)) {
                favourite = eos;
            }
        }
        if let Some(logit) = logits.get_mut(favourite as usize) {
            *logit = 8.0;
        }
        logits
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ModelExecutor for FakeExecutor {
    fn kv_geometry(&self) -> KvGeometry {
        self.geometry
    }

    fn vocab_size(&self) -> usize {
        self.spec.vocab_size
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Vec<Vec<f32>>, ExecutorError> {
        self.forward_calls += 1;
        if !self.spec.step_delay.is_zero() {
            // The executor runs on the engine's own thread, never on the async runtime.
            std::thread::sleep(self.spec.step_delay);
        }
        let mut rows = Vec::new();
        for chunk in &batch.chunks {
            for (offset, &token) in chunk.tokens.iter().enumerate() {
                if token as usize >= self.spec.vocab_size {
                    return Err(ExecutorError::InvalidBatch(format!(
                        "token {token} beyond the vocabulary"
                    )));
                }
                let position = chunk.start_pos + offset;
                let slot = self.slot(&chunk.block_table, position)?;
                self.slots[slot] = Some((position, token));
            }
            if !chunk.wants_logits {
                continue;
            }
            let context_len = chunk.start_pos + chunk.tokens.len();
            let mut context_hash = 0x5EED_u64;
            for position in 0..context_len {
                let slot = self.slot(&chunk.block_table, position)?;
                match self.slots[slot] {
                    Some((written_position, token)) if written_position == position => {
                        context_hash =
                            mix(context_hash ^ (u64::from(token) << 20) ^ position as u64);
                    }
                    _ => {
                        return Err(ExecutorError::InvalidBatch(format!(
                            "sequence {} reads position {position} that was never written",
                            chunk.sequence_id
                        )))
                    }
                }
            }
            rows.push(self.logits_for_context(context_hash, context_len));
        }
        Ok(rows)
    }
}
