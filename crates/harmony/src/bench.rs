//! Engine benchmarks on one model, in-process (no HTTP), through the same loader and scheduler
//! harmony serves with. Used by `adaptive bench` and `examples/bench.rs`.
//!
//! - prompt processing: one prompt of `prompt_tokens` tokens, time to its first token;
//! - decode throughput at each concurrency level: aggregate tokens/s while every sequence is
//!   decoding (from the moment all have their first token to the first finish);
//! - TTFT p50/p90/p99 of `ttft_requests` concurrent prompts of `prompt_tokens` tokens;
//! - prefix cache: TTFT of a `prefix_tokens` prompt cold, then repeated.
//!
//! Prompts are synthetic token ids, distinct per request so nothing is shared by accident.

use std::time::{Duration, Instant};

use adaptive_api_types::harmony::SpawnModel;
use adaptive_engine::{Engine, GenerateRequest, SamplingParams, SchedulerConfig, SequenceEvent};

use crate::model::{DefaultModelLoader, ModelLoader};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A .gguf file, an HF directory, or fake://name.
    pub model: String,
    pub concurrency: Vec<usize>,
    pub decode_tokens: usize,
    pub prompt_tokens: usize,
    pub ttft_requests: usize,
    pub prefix_tokens: usize,
    pub max_batched_tokens: usize,
    pub kv_cache_tokens: u32,
    /// Benchmarks to skip: any of `prompt`, `decode`, `ttft`, `prefix`.
    pub skip: Vec<String>,
    /// Where the model runs (`HARMONY_DEVICE`'s values).
    pub device: adaptive_engine_models::DeviceChoice,
    /// How GGUF matrices run on CPU (`HARMONY_CPU_MATMUL`'s values).
    pub cpu_matmul: adaptive_engine_models::QuantizedMatmul,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            model: "models/SmolLM2-135M-Instruct.Q4_1.gguf".to_owned(),
            concurrency: vec![1, 4, 16, 64],
            decode_tokens: 64,
            prompt_tokens: 512,
            ttft_requests: 16,
            prefix_tokens: 1000,
            max_batched_tokens: 512,
            kv_cache_tokens: 65536,
            skip: Vec::new(),
            device: adaptive_engine_models::DeviceChoice::Cpu,
            cpu_matmul: adaptive_engine_models::QuantizedMatmul::Auto,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Engine(#[from] adaptive_engine::EngineError),
    #[error("{0}")]
    Runtime(String),
}

struct Bench {
    engine: Engine,
    vocab_span: u32,
    next_prompt: u32,
}

struct Timed {
    submitted: Instant,
    token_times: Vec<Instant>,
}

impl Bench {
    /// A distinct synthetic prompt (ids in the ordinary vocabulary, away from special tokens).
    fn prompt(&mut self, len: usize) -> Vec<u32> {
        self.next_prompt += 1;
        let seed = self.next_prompt;
        (0..len as u32)
            .map(|i| 200 + (seed.wrapping_mul(7919) + i.wrapping_mul(104_729)) % self.vocab_span)
            .collect()
    }

    async fn run_all(
        &self,
        prompts: Vec<Vec<u32>>,
        max_tokens: usize,
    ) -> Result<Vec<Timed>, BenchError> {
        let mut tasks = Vec::new();
        for prompt_tokens in prompts {
            let engine = self.engine.clone();
            tasks.push(tokio::spawn(async move {
                let submitted = Instant::now();
                let mut stream = engine
                    .submit(GenerateRequest {
                        prompt_tokens,
                        params: SamplingParams {
                            ignore_eos: true,
                            ..SamplingParams::greedy(max_tokens)
                        },
                        constraint: None,
                    })
                    .await?;
                let mut token_times = Vec::new();
                while let Some(event) = stream.next().await {
                    match event {
                        SequenceEvent::Token { .. } => token_times.push(Instant::now()),
                        SequenceEvent::Finished(_) => break,
                        SequenceEvent::Failed(error) => return Err(BenchError::Engine(error)),
                    }
                }
                Ok::<Timed, BenchError>(Timed {
                    submitted,
                    token_times,
                })
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(
                task.await
                    .map_err(|error| BenchError::Runtime(error.to_string()))??,
            );
        }
        Ok(results)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ttft(timed: &Timed) -> Duration {
    timed
        .token_times
        .first()
        .map_or(Duration::ZERO, |first| *first - timed.submitted)
}

/// Runs the benchmarks, printing each result as it comes; returns `(benchmark, result)` rows.
pub async fn run_bench(args: BenchOptions) -> Result<Vec<(String, String)>, BenchError> {
    let loader = DefaultModelLoader {
        device: args.device,
        cpu_matmul: args.cpu_matmul,
        ..DefaultModelLoader::default()
    };
    let spawn = SpawnModel {
        key: "bench".to_owned(),
        path: args.model.clone(),
        max_seq_len: None,
        kv_cache_len: Some(args.kv_cache_tokens),
    };
    let started = Instant::now();
    let loaded = tokio::task::spawn_blocking(move || loader.load(&spawn))
        .await
        .map_err(|error| BenchError::Runtime(error.to_string()))??;
    println!("loaded {} in {:.2?}", args.model, started.elapsed());
    let vocab_span = (loaded.executor.vocab_size() as u32)
        .saturating_sub(400)
        .max(1);
    let max_running = args
        .concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(args.ttft_requests);
    let config = SchedulerConfig {
        max_running_sequences: max_running,
        max_batched_tokens: args.max_batched_tokens,
        max_queued_sequences: 4 * max_running,
        max_seq_len: loaded.info.max_seq_len,
        eos_token_ids: loaded.info.eos_token_ids.clone(),
    };
    let engine = Engine::spawn(loaded.executor, config, "bench")
        .map_err(|error| BenchError::Runtime(error.to_string()))?;
    let mut bench = Bench {
        engine,
        vocab_span,
        next_prompt: 0,
    };
    let skip = |name: &str| args.skip.iter().any(|s| s == name);
    let mut rows: Vec<(String, String)> = Vec::new();

    if !skip("prompt") {
        // Warm-up, then measure.
        let warm = bench.prompt(32);
        bench.run_all(vec![warm], 1).await?;
        let prompt = bench.prompt(args.prompt_tokens);
        let timed = bench.run_all(vec![prompt], 1).await?;
        let elapsed = ttft(&timed[0]);
        let rate = args.prompt_tokens as f64 / elapsed.as_secs_f64();
        rows.push((
            format!("prompt processing ({} tokens)", args.prompt_tokens),
            format!("{rate:.1} tok/s ({elapsed:.2?})"),
        ));
        println!("{}: {}", rows[rows.len() - 1].0, rows[rows.len() - 1].1);
    }

    if !skip("decode") {
        for &concurrency in &args.concurrency {
            let prompts = (0..concurrency).map(|_| bench.prompt(16)).collect();
            let results = bench.run_all(prompts, args.decode_tokens).await?;
            let all_started = results
                .iter()
                .filter_map(|t| t.token_times.first())
                .max()
                .copied();
            let first_finished = results
                .iter()
                .filter_map(|t| t.token_times.last())
                .min()
                .copied();
            let (Some(window_start), Some(window_end)) = (all_started, first_finished) else {
                continue;
            };
            let window = window_end.saturating_duration_since(window_start);
            let tokens: usize = results
                .iter()
                .map(|t| {
                    t.token_times
                        .iter()
                        .filter(|&&at| at > window_start && at <= window_end)
                        .count()
                })
                .sum();
            let rate = if window.is_zero() {
                0.0
            } else {
                tokens as f64 / window.as_secs_f64()
            };
            rows.push((
                format!("decode, {concurrency} concurrent"),
                format!(
                    "{rate:.1} tok/s aggregate ({:.1} tok/s per sequence)",
                    rate / concurrency as f64
                ),
            ));
            println!("{}: {}", rows[rows.len() - 1].0, rows[rows.len() - 1].1);
        }
    }

    if !skip("ttft") {
        let prompts = (0..args.ttft_requests)
            .map(|_| bench.prompt(args.prompt_tokens))
            .collect();
        let results = bench.run_all(prompts, 16).await?;
        let mut ttfts: Vec<Duration> = results.iter().map(ttft).collect();
        ttfts.sort();
        rows.push((
            format!(
                "TTFT, {} concurrent {}-token prompts",
                args.ttft_requests, args.prompt_tokens
            ),
            format!(
                "p50 {:.2?}, p90 {:.2?}, p99 {:.2?}",
                percentile(&ttfts, 0.5),
                percentile(&ttfts, 0.9),
                percentile(&ttfts, 0.99)
            ),
        ));
        println!("{}: {}", rows[rows.len() - 1].0, rows[rows.len() - 1].1);
    }

    if !skip("prefix") {
        let prompt = bench.prompt(args.prefix_tokens);
        let cold = bench.run_all(vec![prompt.clone()], 1).await?;
        let warm = bench.run_all(vec![prompt], 1).await?;
        let (cold, warm) = (ttft(&cold[0]), ttft(&warm[0]));
        rows.push((
            format!("prefix cache, {}-token prompt TTFT", args.prefix_tokens),
            format!(
                "cold {cold:.2?}, repeated {warm:.2?} ({:.1}x)",
                cold.as_secs_f64() / warm.as_secs_f64().max(1e-9)
            ),
        ));
        println!("{}: {}", rows[rows.len() - 1].0, rows[rows.len() - 1].1);
    }

    Ok(rows)
}
