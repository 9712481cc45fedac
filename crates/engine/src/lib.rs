//! The inference core, free of HTTP, SQL, Redis and of any tensor library.
//!
//! The scheduler batches many sequences per step and owns the paged KV cache's *bookkeeping*
//! (which physical blocks each sequence uses, which full blocks hold a cached prefix); a
//! [`ModelExecutor`] owns the tensors and runs one forward pass over a batch. Model families on
//! candle live in `adaptive-engine-models`; tests use [`fake::FakeExecutor`].
//!
//! - [`kv_cache`]: the block allocator with refcounted, LRU-evicted prefix caching;
//! - [`sampler`]: logits row → next token (penalties, temperature, top-k/p, min-p, logprobs);
//! - [`constraint`]: the caller's mask over the next token (forced tool calls, structured output);
//! - [`scheduler`]: continuous batching, chunked prefill, preemption by recomputation;
//! - [`engine`]: the scheduler as an actor on its own thread, with a clonable handle;
//! - [`fake`]: a deterministic executor that really reads its context through the block table.

pub mod constraint;
pub mod engine;
pub mod executor;
pub mod fake;
pub mod kv_cache;
pub mod sampler;
pub mod scheduler;

pub use constraint::TokenConstraint;
pub use engine::{Engine, SequenceStream};
pub use executor::{ExecutorError, ForwardBatch, KvGeometry, ModelExecutor, SequenceChunk};
pub use sampler::{SamplingParams, TokenLogprobs};
pub use scheduler::{
    EngineError, FinishReason, GenerateRequest, Scheduler, SchedulerConfig, SchedulerStats,
    SequenceEvent, SequenceSummary, StepReport,
};
