//! The inference core, free of HTTP, SQL, Redis and of any tensor library.
//!
//! The scheduler batches many sequences per step and owns the paged KV cache's *bookkeeping*
//! (which physical blocks each sequence uses, which full blocks hold a cached prefix); a
//! [`ModelExecutor`] owns the tensors and runs one forward pass over a batch. Model families on
//! candle live in `adaptive-engine-models`; tests use a fake executor.

pub mod executor;

pub use executor::{ExecutorError, ForwardBatch, KvGeometry, ModelExecutor, SequenceChunk};
