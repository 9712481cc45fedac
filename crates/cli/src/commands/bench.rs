//! `adaptive bench`: engine benchmarks (prompt processing, decode at several concurrency
//! levels, TTFT under load, prefix cache) on one model, in-process; see
//! `adaptive_harmony::bench`. Prints a markdown table for docs/benchmarks.md.

use adaptive_harmony::bench::{run_bench, BenchOptions};

use super::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .gguf file, an HF directory, or fake://name.
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: String,
    /// Concurrency levels for the decode benchmark.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
    /// Tokens generated per sequence in the decode benchmark.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Concurrent requests for the TTFT-under-load benchmark.
    #[arg(long, default_value_t = 16)]
    pub ttft_requests: usize,
    #[arg(long, default_value_t = 1000)]
    pub prefix_tokens: usize,
    /// Scheduler token budget per step.
    #[arg(long, default_value_t = 512)]
    pub max_batched_tokens: usize,
    /// KV cache size in tokens.
    #[arg(long, default_value_t = 65536)]
    pub kv_cache_tokens: u32,
    /// Benchmarks to skip, comma-separated: prompt, decode, ttft, prefix.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Where the model runs: cpu, cuda or cuda:N (as `HARMONY_DEVICE`; CUDA needs a build
    /// with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How GGUF matrices run on CPU: auto, int8, quantized or f32 (as `HARMONY_CPU_MATMUL`).
    #[arg(long, default_value = "auto")]
    pub cpu_matmul: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing();
    let cpu_matmul = args
        .cpu_matmul
        .parse()
        .map_err(|reason: String| UsageError(format!("--cpu-matmul: {reason}")))?;
    let device = args
        .device
        .parse()
        .map_err(|reason: String| UsageError(format!("--device: {reason}")))?;
    let options = BenchOptions {
        model: args.model,
        concurrency: args.concurrency,
        decode_tokens: args.decode_tokens,
        prompt_tokens: args.prompt_tokens,
        ttft_requests: args.ttft_requests,
        prefix_tokens: args.prefix_tokens,
        max_batched_tokens: args.max_batched_tokens,
        kv_cache_tokens: args.kv_cache_tokens,
        skip: args.skip,
        device,
        cpu_matmul,
    };
    let rows = run_bench(options).await.map_err(|error| match error {
        adaptive_harmony::bench::BenchError::Model(error) => {
            anyhow::Error::new(UsageError(error.to_string()))
        }
        other => anyhow::Error::new(other),
    })?;
    println!("\n| benchmark | result |\n|---|---|");
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
    Ok(())
}
