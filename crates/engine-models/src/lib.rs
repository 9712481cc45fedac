//! Model families on candle behind the engine's `ModelExecutor` seam.
