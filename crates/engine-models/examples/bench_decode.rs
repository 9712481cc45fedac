//! Decode throughput of the paged executor: `cargo run --release -p adaptive-engine-models
//! --example bench_decode -- [model.gguf|hf-dir] [concurrency,...] [decode_steps] [cpu|cuda]
//! [--keep-quantized | --f32 | --int8] [--tensor-ops] [--prompt-tokens=N]`.
//!
//! For each concurrency N: prefill N different prompts (each `--prompt-tokens`, default 64, tokens) in one
//! batch, then run `decode_steps` steps that each decode one token for all N sequences in one
//! forward. Reports prompt tokens/s and aggregate decode tokens/s (N tokens per step).
//! `--tensor-ops` runs the device-generic path (what CUDA runs) instead of our CPU kernels.

use std::path::PathBuf;
use std::time::Instant;

use adaptive_engine::{ForwardBatch, SequenceChunk};
use adaptive_engine_models::{load_model, DeviceChoice, KvCacheSize, LoadOptions, QuantizedMatmul};

/// CPU seconds used by this process so far (all threads), from /proc/self/stat: on a shared
/// machine wall time mostly measures the neighbours.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(f64::NAN);
    ticks / 100.
}

fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0 as u32
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let concurrencies: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16]);
    let decode_steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let device: DeviceChoice = match args.get(4) {
        Some(device) => device.parse().map_err(anyhow::Error::msg)?,
        None => DeviceChoice::Cpu,
    };
    let prompt_tokens: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("--prompt-tokens=")?.parse().ok())
        .unwrap_or(64);
    let max_concurrency = concurrencies.iter().copied().max().unwrap_or(1);
    let block_size = 16;
    let blocks_per_sequence = (prompt_tokens + decode_steps).div_ceil(block_size) + 1;
    let options = LoadOptions {
        kv_cache: KvCacheSize::Blocks(blocks_per_sequence * max_concurrency),
        block_size,
        max_seq_len: Some(prompt_tokens + decode_steps + 8),
        device,
        cpu_kernels: !args.iter().any(|a| a == "--tensor-ops"),
        quantized_matmul: if args.iter().any(|a| a == "--keep-quantized") {
            QuantizedMatmul::Keep
        } else if args.iter().any(|a| a == "--f32") {
            QuantizedMatmul::DequantizeF32
        } else if args.iter().any(|a| a == "--int8") {
            QuantizedMatmul::Int8
        } else {
            QuantizedMatmul::Auto
        },
    };
    let started = Instant::now();
    let mut model = load_model(&path, &options)?;
    println!(
        "model {} ({}, {}) loaded in {:.2}s on {:?}",
        model.info.name,
        model.info.architecture,
        model.info.quantization,
        started.elapsed().as_secs_f64(),
        device
    );
    let text = "The history of the city begins with a small settlement on the river, where \
        traders from the north and the south met to exchange grain, salt, wool and stories.";
    let base = model
        .tokenizer
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .get_ids()
        .to_vec();
    for &concurrency in &concurrencies {
        let prompts: Vec<Vec<u32>> = (0..concurrency)
            .map(|i| {
                base.iter()
                    .cycle()
                    .skip(i)
                    .take(prompt_tokens)
                    .copied()
                    .collect()
            })
            .collect();
        let tables: Vec<Vec<u32>> = (0..concurrency)
            .map(|i| {
                let first = (i * blocks_per_sequence) as u32;
                (first..first + blocks_per_sequence as u32).collect()
            })
            .collect();
        let prefill = ForwardBatch {
            chunks: (0..concurrency)
                .map(|i| SequenceChunk {
                    sequence_id: i as u64,
                    tokens: prompts[i].clone(),
                    start_pos: 0,
                    block_table: tables[i].clone(),
                    wants_logits: true,
                })
                .collect(),
        };
        let started = Instant::now();
        let cpu_started = cpu_seconds();
        let logits = model.executor.forward(&prefill)?;
        let prefill_seconds = started.elapsed().as_secs_f64();
        let prefill_cpu = cpu_seconds() - cpu_started;
        let mut last: Vec<u32> = logits.iter().map(|row| argmax(row)).collect();
        let started = Instant::now();
        let cpu_started = cpu_seconds();
        for step in 0..decode_steps {
            let batch = ForwardBatch {
                chunks: (0..concurrency)
                    .map(|i| SequenceChunk {
                        sequence_id: i as u64,
                        tokens: vec![last[i]],
                        start_pos: prompt_tokens + step,
                        block_table: tables[i].clone(),
                        wants_logits: true,
                    })
                    .collect(),
            };
            let logits = model.executor.forward(&batch)?;
            last = logits.iter().map(|row| argmax(row)).collect();
        }
        let decode_seconds = started.elapsed().as_secs_f64();
        let decode_cpu = cpu_seconds() - cpu_started;
        let batch_prompt_tokens = (concurrency * prompt_tokens) as f64;
        let decoded_tokens = (concurrency * decode_steps) as f64;
        println!(
            "concurrency {concurrency:>3}: prefill {:>7.1} tok/s wall, {:>7.1} tok/cpu-s | decode {:>7.1} tok/s wall aggregate, {:>7.1} tok/cpu-s ({:.1} ms/step wall)",
            batch_prompt_tokens / prefill_seconds,
            batch_prompt_tokens / prefill_cpu,
            decoded_tokens / decode_seconds,
            decoded_tokens / decode_cpu,
            decode_seconds * 1000. / decode_steps as f64,
        );
    }
    Ok(())
}
