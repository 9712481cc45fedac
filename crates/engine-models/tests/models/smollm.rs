//! The real model: SmolLM2-135M-Instruct (Q4_1 GGUF).

use adaptive_engine::{ForwardBatch, SequenceChunk};
use adaptive_engine_models::{
    convert::gguf_to_hf, load_model, ChatMessage, ChatTemplateInput, DeviceChoice, KvCacheSize,
    LoadOptions, LoadedModel, QuantizedMatmul,
};

use crate::common::{argmax, greedy_batch, smollm_path, test_device};

fn options() -> LoadOptions {
    LoadOptions {
        kv_cache: KvCacheSize::Blocks(256),
        block_size: 16,
        max_seq_len: Some(1024),
        ..LoadOptions::default()
    }
}

/// A ChatML prompt with an explicit system message. The 4-bit 135M model is fragile: with the
/// template's default system prompt it answers the France question with French phrases, and
/// candle-transformers' own quantized_llama does exactly the same on this file (checked), so
/// the tests use the system message that gets a clean English answer from every path.
fn chat_prompt(model: &LoadedModel, question: &str) -> Vec<u32> {
    let template = model
        .chat_template
        .as_ref()
        .expect("smollm has a chat template");
    let text = template
        .render::<_, serde_json::Value>(&ChatTemplateInput {
            messages: &[
                ChatMessage::new("system", "You are a helpful AI assistant."),
                ChatMessage::new("user", question),
            ],
            add_generation_prompt: true,
            tools: None,
        })
        .expect("render");
    model
        .tokenizer
        .encode(text, false)
        .expect("encode")
        .get_ids()
        .to_vec()
}

#[test]
fn smollm_gguf_info_is_read_from_metadata() {
    let Some(path) = smollm_path() else { return };
    let model = load_model(&path, &options()).expect("load");
    let info = &model.info;
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.vocab_size, 49152);
    assert_eq!(info.num_layers, 30);
    assert_eq!(info.quantization, "q4_1");
    assert_eq!(info.context_length, 1024);
    assert_eq!(info.eos_token_ids, vec![2]);
    assert_eq!(info.bos_token_id, Some(1));
    assert!(
        (130_000_000..140_000_000).contains(&info.parameters),
        "{} parameters",
        info.parameters
    );
    assert_eq!(model.executor.kv_geometry().num_blocks, 256);
}

#[test]
fn smollm_greedy_answers_paris_deterministically() {
    for quantized_matmul in [
        QuantizedMatmul::Auto,
        QuantizedMatmul::Int8,
        QuantizedMatmul::Keep,
    ] {
        greedy_paris_with(quantized_matmul);
    }
}

fn greedy_paris_with(quantized_matmul: QuantizedMatmul) {
    let Some(path) = smollm_path() else { return };
    let options = LoadOptions {
        quantized_matmul,
        ..options()
    };
    let mut model = load_model(&path, &options).expect("load");
    let prompt = chat_prompt(&model, "What is the capital of France?");
    let eos = model.info.eos_token_ids.clone();
    let first = greedy_batch(
        model.executor.as_mut(),
        std::slice::from_ref(&prompt),
        20,
        &eos,
        8,
    );
    let text = model.tokenizer.decode(&first[0], true).expect("decode");
    eprintln!("smollm ({quantized_matmul:?}) says: {text:?}");
    assert!(text.contains("Paris"), "{text:?}");
    assert!(text.is_ascii(), "{text:?}");
    // A second run over a KV cache holding stale entries from the first must not change anything.
    let second = greedy_batch(model.executor.as_mut(), &[prompt], 20, &eos, 8);
    assert_eq!(first, second);
}

#[test]
fn smollm_batched_equals_alone() {
    let Some(path) = smollm_path() else { return };
    let mut model = load_model(&path, &options()).expect("load");
    let questions = [
        "What is the capital of France?",
        "Name three colors.",
        "Write a haiku about the sea, please, in English.",
        "2+2=?",
    ];
    let prompts: Vec<Vec<u32>> = questions.iter().map(|q| chat_prompt(&model, q)).collect();
    let eos = model.info.eos_token_ids.clone();
    let together = greedy_batch(model.executor.as_mut(), &prompts, 8, &eos, 6);
    for (i, prompt) in prompts.iter().enumerate() {
        let alone = greedy_batch(
            model.executor.as_mut(),
            std::slice::from_ref(prompt),
            8,
            &eos,
            6,
        );
        assert_eq!(alone[0], together[i], "prompt {i}");
    }
}

/// Prefill in uneven chunks (as chunked prefill does) gives the logits of a single prefill.
///
/// In f32 (`DequantizeF32`) the logits agree within 1e-3. With the integer kernel (`Int8`) the
/// next token still agrees, but not to 1e-3: chunks of 16+ tokens attend through matmuls and
/// smaller ones token by token, which sum in another order, and a last-bit difference can flip
/// the 8-bit rounding of an activation that then grows through the layers (llama.cpp shows the
/// same with different batch sizes); the bound there is a fraction of the logits' spread.
#[test]
fn smollm_chunked_prefill_matches_whole_prefill() {
    chunked_prefill_matches_whole_prefill(QuantizedMatmul::DequantizeF32, |_| 1e-3);
    chunked_prefill_matches_whole_prefill(QuantizedMatmul::Int8, |spread| 0.1 * spread);
}

fn chunked_prefill_matches_whole_prefill(
    quantized_matmul: QuantizedMatmul,
    tolerance: impl Fn(f32) -> f32,
) {
    let Some(path) = smollm_path() else { return };
    let options = LoadOptions {
        quantized_matmul,
        ..options()
    };
    let mut model = load_model(&path, &options).expect("load");
    let prompt = chat_prompt(&model, "Tell me about the moon and the tides.");
    let table: Vec<u32> = vec![7, 3, 9, 1, 4, 12];
    let whole = model
        .executor
        .forward(&ForwardBatch {
            chunks: vec![SequenceChunk {
                sequence_id: 0,
                tokens: prompt.clone(),
                start_pos: 0,
                block_table: table.clone(),
                wants_logits: true,
            }],
        })
        .expect("whole");
    let mut chunked = Vec::new();
    let mut start: usize = 0;
    for size in [5, 17, 1, usize::MAX] {
        let end = start.saturating_add(size).min(prompt.len());
        chunked = model
            .executor
            .forward(&ForwardBatch {
                chunks: vec![SequenceChunk {
                    sequence_id: 1,
                    tokens: prompt[start..end].to_vec(),
                    start_pos: start,
                    block_table: table.clone(),
                    wants_logits: end == prompt.len(),
                }],
            })
            .expect("chunk");
        start = end;
    }
    assert_eq!(chunked.len(), 1);
    assert_eq!(argmax(&whole[0]), argmax(&chunked[0]));
    let max_diff = whole[0]
        .iter()
        .zip(&chunked[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let (low, high) = whole[0]
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(low, high), v| {
            (low.min(*v), high.max(*v))
        });
    let tolerance = tolerance(high - low);
    assert!(
        max_diff < tolerance,
        "{quantized_matmul:?}: max logit difference {max_diff} (tolerance {tolerance})"
    );
}

/// The converter's HF layout (dequantized, Q/K permutation undone) runs through the
/// safetensors path and greedy-decodes the same tokens as the GGUF path.
#[test]
fn smollm_converted_to_hf_layout_decodes_the_same() {
    let Some(path) = smollm_path() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    gguf_to_hf(&path, dir.path()).expect("convert");
    let mut gguf_model = load_model(&path, &options()).expect("load gguf");
    let mut hf_model = load_model(dir.path(), &options()).expect("load hf");
    assert_eq!(hf_model.info.architecture, "llama");
    assert_eq!(hf_model.info.eos_token_ids, gguf_model.info.eos_token_ids);
    let prompt = chat_prompt(&gguf_model, "What is the capital of France?");
    let hf_prompt = chat_prompt(&hf_model, "What is the capital of France?");
    assert_eq!(
        prompt, hf_prompt,
        "tokenizer.json and chat template survive conversion"
    );
    let eos = gguf_model.info.eos_token_ids.clone();
    let from_gguf = greedy_batch(
        gguf_model.executor.as_mut(),
        std::slice::from_ref(&prompt),
        12,
        &eos,
        8,
    );
    let from_hf = greedy_batch(hf_model.executor.as_mut(), &[prompt], 12, &eos, 8);
    assert_eq!(from_gguf, from_hf);
}

/// Our GGUF path against candle-transformers' quantized_llama on the same file.
///
/// The device-generic path (`cpu_kernels` off, on [`test_device`]) does the same float
/// operations in the same order on the CPU, so its logits agree within 1e-4 relative at prefill
/// and at each decode step. The fused CPU
/// kernel sums attention in another order; on a 4-bit model such last-bit differences can flip
/// the rounding of a quantized activation and grow to ~1% of the logits a few layers later, so
/// for it we check the greedy tokens instead.
#[test]
fn smollm_gguf_matches_candle_quantized_llama() {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let Some(path) = smollm_path() else { return };
    let quantized = LoadOptions {
        quantized_matmul: QuantizedMatmul::Keep,
        ..options()
    };
    let device = test_device();
    let tensor_ops = LoadOptions {
        cpu_kernels: false,
        device,
        ..quantized.clone()
    };
    // On the CPU, candle's quantized kernels are the reference's own. CUDA's quantize the
    // activations for other block layouts and sum in another order: there the bound is looser,
    // as for the fused CPU kernel below (a first GPU run should tighten it).
    let tolerance = match device {
        DeviceChoice::Cpu => 1e-4,
        DeviceChoice::Cuda(_) => 2e-2,
    };
    let mut model = load_model(&path, &tensor_ops).expect("load");
    let prompt = chat_prompt(&model, "What is the capital of France?");
    let mut file = std::fs::File::open(&path).expect("open");
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).expect("gguf");
    let mut reference =
        ModelWeights::from_gguf(content, &mut file, &candle_core::Device::Cpu).expect("reference");
    let table: Vec<u32> = (0..8).collect();
    let mut tokens = prompt.clone();
    let mut start = 0;
    for step in 0..6 {
        let new_tokens = tokens[start..].to_vec();
        let ours = model
            .executor
            .forward(&ForwardBatch {
                chunks: vec![SequenceChunk {
                    sequence_id: 0,
                    tokens: new_tokens.clone(),
                    start_pos: start,
                    block_table: table.clone(),
                    wants_logits: true,
                }],
            })
            .expect("forward");
        let input = candle_core::Tensor::new(new_tokens.as_slice(), &candle_core::Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("input");
        let expected: Vec<f32> = reference
            .forward(&input, start)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("reference forward");
        let max_diff = ours[0]
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = expected.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(
            max_diff / scale < tolerance,
            "{device:?} step {step}: max diff {max_diff} (scale {scale})"
        );
        start = tokens.len();
        tokens.push(argmax(&expected));
    }
    let reference_tokens = tokens[prompt.len()..].to_vec();
    let mut fused = load_model(&path, &quantized).expect("load");
    let generated = greedy_batch(fused.executor.as_mut(), &[prompt], 6, &[], 8);
    assert_eq!(generated[0], reference_tokens);
}
