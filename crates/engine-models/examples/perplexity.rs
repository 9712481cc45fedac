//! How much the matmul mode changes what the model predicts: `cargo run -p
//! adaptive-engine-models --example perplexity -- [model] [text file] [max tokens]`.
//!
//! Runs the text through the model once per mode (`f32`, `int8`, `quantized`), one token per
//! forward pass so that every position's logits come back, and prints for each mode the mean
//! negative log-likelihood of the next token and its perplexity, and how often its greedy
//! prediction agrees with the f32 one.

use std::path::PathBuf;

use adaptive_engine::{ForwardBatch, SequenceChunk};
use adaptive_engine_models::{load_model, KvCacheSize, LoadOptions, QuantizedMatmul};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model_path = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let text_path = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("docs/architecture.md"));
    let max_tokens: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(512);
    let text = std::fs::read_to_string(&text_path)?;
    let block_size = 16;
    let mut f32_predictions: Vec<u32> = Vec::new();
    for (name, mode) in [
        ("f32", QuantizedMatmul::DequantizeF32),
        ("int8", QuantizedMatmul::Int8),
        ("quantized", QuantizedMatmul::Keep),
    ] {
        let options = LoadOptions {
            kv_cache: KvCacheSize::Blocks(max_tokens.div_ceil(block_size) + 1),
            block_size,
            max_seq_len: Some(max_tokens + 1),
            quantized_matmul: mode,
            ..LoadOptions::default()
        };
        let mut model = load_model(&model_path, &options)?;
        let tokens: Vec<u32> = model
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .get_ids()
            .iter()
            .copied()
            .take(max_tokens)
            .collect();
        let table: Vec<u32> = (0..tokens.len().div_ceil(block_size) as u32 + 1).collect();
        let (mut nll, mut predictions) = (0f64, Vec::new());
        for (position, pair) in tokens.windows(2).enumerate() {
            let logits = model.executor.forward(&ForwardBatch {
                chunks: vec![SequenceChunk {
                    sequence_id: 0,
                    tokens: vec![pair[0]],
                    start_pos: position,
                    block_table: table.clone(),
                    wants_logits: true,
                }],
            })?;
            let row = &logits[0];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let log_sum = row
                .iter()
                .map(|v| f64::from(v - max).exp())
                .sum::<f64>()
                .ln()
                + f64::from(max);
            nll += log_sum - f64::from(row[pair[1] as usize]);
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0;
            predictions.push(best as u32);
        }
        let count = predictions.len().max(1) as f64;
        let mean = nll / count;
        if f32_predictions.is_empty() {
            f32_predictions = predictions.clone();
        }
        let agree = predictions
            .iter()
            .zip(&f32_predictions)
            .filter(|(a, b)| a == b)
            .count() as f64
            / count;
        println!(
            "{name:>9}: {} tokens of {}, mean NLL {mean:.4}, perplexity {:.3}, greedy agrees with f32 at {:.1}% of positions",
            predictions.len(),
            text_path.display(),
            mean.exp(),
            agree * 100.
        );
    }
    Ok(())
}
