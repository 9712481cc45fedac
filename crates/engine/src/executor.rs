//! The seam between the scheduler and a model implementation.
//!
//! The design follows vLLM's paged attention: the executor allocates its KV cache once, as
//! `num_blocks` physical blocks of `block_size` token slots per layer, and never decides which
//! block holds what. The scheduler hands it, for each sequence in a step, the new tokens to run,
//! the position of the first of them, and the block table that maps logical block `i` (token
//! positions `i*block_size .. (i+1)*block_size`) to a physical block. The executor writes the new
//! tokens' keys and values into those slots, attends over all positions `0..start_pos+len`, and
//! returns logits for the chunks that ask for them.
//!
//! One step may mix prefill chunks (many tokens) and decode steps (one token) of different
//! sequences: that is what makes continuous batching and chunked prefill possible.

/// How the executor's KV cache is laid out; fixed for the executor's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGeometry {
    /// Token slots per block.
    pub block_size: usize,
    /// Physical blocks available (the memory budget divided by the size of one block).
    pub num_blocks: usize,
}

/// The part of one sequence that runs in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceChunk {
    /// Scheduler-assigned id, stable for the sequence's life (useful for executor-side tracing).
    pub sequence_id: u64,
    /// Tokens to process now; their positions are `start_pos .. start_pos + tokens.len()`.
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]`; positions before it are already in the KV cache.
    pub start_pos: usize,
    /// Physical block ids for logical blocks `0 ..= (start_pos + tokens.len() - 1) / block_size`.
    pub block_table: Vec<u32>,
    /// Whether to return the logits after the last token of this chunk (false for a prefill
    /// chunk that is not the prompt's last).
    pub wants_logits: bool,
}

/// One forward pass over several sequences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardBatch {
    pub chunks: Vec<SequenceChunk>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The batch itself is wrong (a block table too short, a token id beyond the vocabulary).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The device or the backend failed.
    #[error("backend failure: {0}")]
    Backend(String),
}

/// A model that can run batched forward passes over a paged KV cache.
///
/// Implementations: `adaptive-engine-models` (candle; CPU and CUDA), the fake executor in
/// tests, and later a llama.cpp backend.
pub trait ModelExecutor: Send {
    fn kv_geometry(&self) -> KvGeometry;

    /// Vocabulary size: the length of every logits row.
    fn vocab_size(&self) -> usize;

    /// Runs one step. Returns one logits row per chunk with `wants_logits`, in batch order.
    fn forward(&mut self, batch: &ForwardBatch) -> Result<Vec<Vec<f32>>, ExecutorError>;
}
