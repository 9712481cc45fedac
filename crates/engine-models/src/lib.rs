//! Model families on candle behind the engine's [`ModelExecutor`] seam.
//!
//! - [`load_model`] opens a `.gguf` file (quantized Q4_0/Q4_1/Q4_K/Q8_0/... or f16/f32) or an HF
//!   directory (config.json, safetensors shards in f32/f16/bf16, tokenizer.json,
//!   tokenizer_config.json) and returns a [`LoadedModel`]: the executor, the tokenizer, the chat
//!   template and a [`ModelInfo`].
//! - [`PagedLlama`] is the executor for the Llama family (Llama 2/3, SmolLM, Mistral, Qwen2,
//!   Qwen3): a batched forward pass over a vLLM-style paged KV cache, see [`paged`].
//! - [`tokenizer`] builds tokenizers from GGUF metadata and streams text with
//!   [`IncrementalDetokenizer`]; [`chat_template`] renders HF chat templates.
//! - [`convert::gguf_to_hf`] writes a GGUF model out in HF layout (dequantized), the bridge that
//!   lets tests check the safetensors path against the GGUF path on real weights.
//!
//! candle-transformers' model files keep one contiguous cache per model and run one sequence
//! shape per call, so the forward pass here is ours, built from candle's ops and quantized
//! matmuls; candle-transformers is only a dev-dependency, the reference the exactness tests
//! compare against. CUDA is behind the `cuda` feature; the CPU path never depends on it.
//! Off the CPU the executor runs the device-generic path, candle's tensor ops only; with
//! [`LoadOptions::cpu_kernels`] off the CPU runs that same path, which is how the CPU test suite
//! covers what a GPU runs (`ENGINE_TEST_DEVICE=cuda` reruns those tests on a GPU;
//! scripts/build-cuda-offline.sh builds the feature without one).
//!
//! Performance notes (CPU): candle's quantized CPU matmul is scalar for Q4_1 (and for every
//! format unless the binary is built with `-C target-cpu=native`), one dot product per input row
//! and weight row, so batching gains nothing with it. [`QuantizedMatmul::Auto`] therefore
//! dequantizes small models (up to [`AUTO_DEQUANTIZE_MAX_BYTES`] of f32 weights) to f32 at load
//! time, where gemm picks AVX2/FMA at run time, and runs the Q4_0/Q4_1/Q8_0 matrices of larger
//! ones in our integer kernel (`int_matmul`: the 4-bit codes as stored × 8-bit activations,
//! `vpmaddubsw`), which [`QuantizedMatmul::Int8`] also picks for small models. Decode-sized batches (2 to 64 rows) skip gemm,
//! which re-packs the weights on every call, for `small_batch_matmul`, which reads each weight
//! once per step for all rows; attention runs in fused kernels (`cpu_attention`) whose cost does not grow with the number of
//! sequences in a step. `examples/bench_decode.rs` measures prefill and batched decode.

pub mod chat_template;
pub mod config;
pub mod convert;
mod cpu_attention;
pub mod error;
mod int_matmul;
pub mod loader;
pub mod paged;
mod small_batch_matmul;
mod swiglu;
pub mod tokenizer;
pub mod weights;

pub use adaptive_engine::ModelExecutor;
pub use chat_template::{ChatMessage, ChatTemplate, ChatTemplateInput};
pub use config::{Architecture, LlamaFamilyConfig, RopeScaling, RopeStyle};
pub use error::ModelError;
pub use loader::{
    load_model, DeviceChoice, KvCacheSize, LoadOptions, LoadedModel, ModelInfo, QuantizedMatmul,
    AUTO_DEQUANTIZE_MAX_BYTES,
};
pub use paged::PagedLlama;
pub use tokenizer::{gguf_tokenizer, IncrementalDetokenizer, SpecialTokens};

/// Deterministic pseudo-random test inputs (no rand dependency in this crate).
#[cfg(test)]
pub(crate) mod test_data {
    /// `len` values in [-1, 1) from a 64-bit LCG seeded with `seed`.
    pub(crate) fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2. - 1.
            })
            .collect()
    }
}
