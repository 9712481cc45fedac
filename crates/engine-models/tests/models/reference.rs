//! Exactness: tiny random-weight HF-layout models, written by the test, run through our paged
//! forward pass and through candle-transformers' own model code on the same weights.
//!
//! Tolerance: the largest absolute logit difference, relative to the largest reference logit
//! magnitude, stays within 1e-4, at prefill and at each decode step.
//!
//! Most tests run both code paths ([`PATHS`]): our CPU kernels, and the device-generic tensor
//! ops that CUDA runs (`LoadOptions::cpu_kernels` off). The generic path runs on
//! [`test_device`]: the CPU, or the GPU that `ENGINE_TEST_DEVICE=cuda` names, against the same
//! CPU reference.

use std::collections::HashMap;
use std::path::Path;

use adaptive_engine::{ForwardBatch, SequenceChunk};
use adaptive_engine_models::{load_model, DeviceChoice, KvCacheSize, LoadOptions};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::json;

use crate::common::{greedy_batch, sequence_blocks, test_device, Lcg};

const VOCAB: usize = 96;
const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const INTERMEDIATE: usize = 112;
const LAYERS: usize = 2;
const BLOCK_SIZE: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    /// Llama with llama3-style RoPE scaling and tied embeddings, stored in bf16 shards.
    Llama3TiedShardedBf16,
    Qwen2,
    Qwen3,
}

impl Family {
    fn head_dim(self) -> usize {
        match self {
            // Qwen3 decouples head_dim from hidden_size / heads.
            Self::Qwen3 => 24,
            _ => HIDDEN / HEADS,
        }
    }

    fn config(self) -> serde_json::Value {
        let mut config = json!({
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "vocab_size": VOCAB,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "head_dim": self.head_dim(),
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "max_position_embeddings": 256,
            "tie_word_embeddings": false,
            "hidden_act": "silu",
            "sliding_window": 4096,
            "max_window_layers": LAYERS,
            "use_sliding_window": false,
            "attention_bias": false,
            "bos_token_id": 1,
            "eos_token_id": 2,
        });
        let fields = config.as_object_mut().expect("object");
        match self {
            Self::Llama => {
                fields.insert("model_type".into(), json!("llama"));
            }
            Self::Llama3TiedShardedBf16 => {
                fields.insert("model_type".into(), json!("llama"));
                fields.insert("tie_word_embeddings".into(), json!(true));
                fields.insert("rope_theta".into(), json!(500000.0));
                fields.insert(
                    "rope_scaling".into(),
                    json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
                );
            }
            Self::Qwen2 => {
                fields.insert("model_type".into(), json!("qwen2"));
                fields.insert("rope_theta".into(), json!(1000000.0));
            }
            Self::Qwen3 => {
                fields.insert("model_type".into(), json!("qwen3"));
            }
        }
        config
    }

    fn tensors(self, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = Lcg::new(seed);
        let head_dim = self.head_dim();
        let mut tensors = HashMap::new();
        let mut add = |name: String, shape: &[usize], scale: f32, offset: f32| {
            let len = shape.iter().product();
            let values: Vec<f32> = rng
                .vec(len, scale)
                .into_iter()
                .map(|v| v + offset)
                .collect();
            tensors.insert(
                name,
                Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor"),
            );
        };
        add(
            "model.embed_tokens.weight".into(),
            &[VOCAB, HIDDEN],
            1.0,
            0.,
        );
        add("model.norm.weight".into(), &[HIDDEN], 0.2, 1.);
        if self != Self::Llama3TiedShardedBf16 {
            add("lm_head.weight".into(), &[VOCAB, HIDDEN], 0.2, 0.);
        }
        for layer in 0..LAYERS {
            let name = |s: &str| format!("model.layers.{layer}.{s}");
            add(name("input_layernorm.weight"), &[HIDDEN], 0.2, 1.);
            add(name("post_attention_layernorm.weight"), &[HIDDEN], 0.2, 1.);
            add(
                name("self_attn.q_proj.weight"),
                &[HEADS * head_dim, HIDDEN],
                0.3,
                0.,
            );
            add(
                name("self_attn.k_proj.weight"),
                &[KV_HEADS * head_dim, HIDDEN],
                0.3,
                0.,
            );
            add(
                name("self_attn.v_proj.weight"),
                &[KV_HEADS * head_dim, HIDDEN],
                0.3,
                0.,
            );
            add(
                name("self_attn.o_proj.weight"),
                &[HIDDEN, HEADS * head_dim],
                0.2,
                0.,
            );
            add(
                name("mlp.gate_proj.weight"),
                &[INTERMEDIATE, HIDDEN],
                0.2,
                0.,
            );
            add(name("mlp.up_proj.weight"), &[INTERMEDIATE, HIDDEN], 0.2, 0.);
            add(
                name("mlp.down_proj.weight"),
                &[HIDDEN, INTERMEDIATE],
                0.2,
                0.,
            );
            if self == Self::Qwen2 {
                add(name("self_attn.q_proj.bias"), &[HEADS * head_dim], 0.5, 0.);
                add(
                    name("self_attn.k_proj.bias"),
                    &[KV_HEADS * head_dim],
                    0.5,
                    0.,
                );
                add(
                    name("self_attn.v_proj.bias"),
                    &[KV_HEADS * head_dim],
                    0.5,
                    0.,
                );
            }
            if self == Self::Qwen3 {
                add(name("self_attn.q_norm.weight"), &[head_dim], 0.2, 1.);
                add(name("self_attn.k_norm.weight"), &[head_dim], 0.2, 1.);
            }
        }
        if self == Self::Llama3TiedShardedBf16 {
            for tensor in tensors.values_mut() {
                *tensor = tensor.to_dtype(DType::BF16).expect("bf16");
            }
        }
        tensors
    }
}

/// A word-level tokenizer over `t0..t95`: enough for `load_model`, which needs tokenizer.json.
fn tiny_tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..VOCAB).map(|i| (format!("t{i}"), json!(i))).collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"},
    })
}

/// Writes config.json, tokenizer.json and the weights (sharded for the bf16 variant);
/// returns the tensors as written.
pub fn write_tiny_model(dir: &Path, family: Family, seed: u64) -> HashMap<String, Tensor> {
    let tensors = family.tensors(seed);
    std::fs::write(dir.join("config.json"), family.config().to_string()).expect("config");
    std::fs::write(
        dir.join("tokenizer.json"),
        tiny_tokenizer_json().to_string(),
    )
    .expect("tokenizer");
    if family == Family::Llama3TiedShardedBf16 {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let mut shards: [HashMap<String, Tensor>; 2] = [HashMap::new(), HashMap::new()];
        let mut weight_map = serde_json::Map::new();
        for (i, name) in names.into_iter().enumerate() {
            let file = format!("model-{:05}-of-00002.safetensors", i % 2 + 1);
            shards[i % 2].insert(name.clone(), tensors[name].clone());
            weight_map.insert(name.clone(), json!(file));
        }
        for (i, shard) in shards.iter().enumerate() {
            let file = dir.join(format!("model-{:05}-of-00002.safetensors", i + 1));
            candle_core::safetensors::save(shard, file).expect("shard");
        }
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            json!({"metadata": {}, "weight_map": weight_map}).to_string(),
        )
        .expect("index");
    } else {
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).expect("weights");
    }
    tensors
}

/// candle-transformers' model for a family, fed the same weights.
enum Reference {
    Llama(
        candle_transformers::models::llama::Llama,
        candle_transformers::models::llama::Cache,
    ),
    Qwen2(candle_transformers::models::qwen2::ModelForCausalLM),
    Qwen3(candle_transformers::models::qwen3::ModelForCausalLM),
}

impl Reference {
    fn new(family: Family, tensors: HashMap<String, Tensor>) -> Self {
        use candle_transformers::models::{llama, qwen2, qwen3};
        let device = Device::Cpu;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let config = family.config().to_string();
        match family {
            Family::Llama | Family::Llama3TiedShardedBf16 => {
                let config: llama::LlamaConfig = serde_json::from_str(&config).expect("config");
                let config = config.into_config(false);
                let model = llama::Llama::load(vb, &config).expect("llama");
                let cache = llama::Cache::new(true, DType::F32, &config, &device).expect("cache");
                Self::Llama(model, cache)
            }
            Family::Qwen2 => {
                let config: qwen2::Config = serde_json::from_str(&config).expect("config");
                Self::Qwen2(qwen2::ModelForCausalLM::new(&config, vb).expect("qwen2"))
            }
            Family::Qwen3 => {
                let config: qwen3::Config = serde_json::from_str(&config).expect("config");
                Self::Qwen3(qwen3::ModelForCausalLM::new(&config, vb).expect("qwen3"))
            }
        }
    }

    /// Logits after the last of `tokens`, which sit at `start_pos..`.
    fn forward(&mut self, tokens: &[u32], start_pos: usize) -> Vec<f32> {
        let input = Tensor::new(tokens, &Device::Cpu)
            .expect("input")
            .unsqueeze(0)
            .expect("batch");
        let logits = match self {
            Self::Llama(model, cache) => model.forward(&input, start_pos, cache),
            Self::Qwen2(model) => model.forward(&input, start_pos),
            Self::Qwen3(model) => model.forward(&input, start_pos),
        }
        .expect("reference forward");
        logits.flatten_all().expect("flat").to_vec1().expect("vec")
    }
}

fn relative_error(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    let max_diff = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = reference.iter().map(|v| v.abs()).fold(0f32, f32::max);
    max_diff / scale.max(1e-6)
}

fn options() -> LoadOptions {
    LoadOptions {
        kv_cache: KvCacheSize::Blocks(64),
        block_size: BLOCK_SIZE,
        max_seq_len: Some(128),
        ..LoadOptions::default()
    }
}

/// Options for one of the two code paths: our CPU kernels (on the CPU), or the device-generic
/// tensor ops that CUDA runs (on [`test_device`]: the CPU unless `ENGINE_TEST_DEVICE` says
/// otherwise), checked against the same CPU reference.
fn path_options(cpu_kernels: bool) -> LoadOptions {
    LoadOptions {
        cpu_kernels,
        device: match cpu_kernels {
            true => DeviceChoice::Cpu,
            false => test_device(),
        },
        ..options()
    }
}

/// Both code paths (`cpu_kernels` on and off).
const PATHS: [bool; 2] = [true, false];

fn prompt(seed: u64, len: usize) -> Vec<u32> {
    let mut rng = Lcg::new(seed);
    (0..len)
        .map(|_| ((rng.next_f32(1.) + 1.) * 0.5 * (VOCAB - 1) as f32) as u32)
        .collect()
}

fn check_against_reference(family: Family) {
    for fused in PATHS {
        check_against_reference_with(family, fused);
    }
}

fn check_against_reference_with(family: Family, cpu_kernels: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tensors = write_tiny_model(dir.path(), family, 7);
    let options = path_options(cpu_kernels);
    let mut model = load_model(dir.path(), &options).expect("load tiny model");
    let mut reference = Reference::new(family, tensors);
    let tokens = prompt(11, 13);
    let table = sequence_blocks(2, 8);
    let ours = model
        .executor
        .forward(&ForwardBatch {
            chunks: vec![SequenceChunk {
                sequence_id: 0,
                tokens: tokens.clone(),
                start_pos: 0,
                block_table: table.clone(),
                wants_logits: true,
            }],
        })
        .expect("prefill");
    let expected = reference.forward(&tokens, 0);
    let error = relative_error(&ours[0], &expected);
    assert!(
        error < 1e-4,
        "{family:?} cpu_kernels={cpu_kernels} prefill: relative error {error}"
    );

    let mut next = crate::common::argmax(&expected);
    for step in 0..6 {
        let position = tokens.len() + step;
        let ours = model
            .executor
            .forward(&ForwardBatch {
                chunks: vec![SequenceChunk {
                    sequence_id: 0,
                    tokens: vec![next],
                    start_pos: position,
                    block_table: table.clone(),
                    wants_logits: true,
                }],
            })
            .expect("decode");
        let expected = reference.forward(&[next], position);
        let error = relative_error(&ours[0], &expected);
        assert!(
            error < 1e-4,
            "{family:?} cpu_kernels={cpu_kernels} decode step {step}: relative error {error}"
        );
        next = crate::common::argmax(&expected);
    }
}

#[test]
fn llama_matches_candle_transformers() {
    check_against_reference(Family::Llama);
}

#[test]
fn llama3_rope_scaling_tied_sharded_bf16_matches_candle_transformers() {
    check_against_reference(Family::Llama3TiedShardedBf16);
}

#[test]
fn qwen2_matches_candle_transformers() {
    check_against_reference(Family::Qwen2);
}

#[test]
fn qwen3_matches_candle_transformers() {
    check_against_reference(Family::Qwen3);
}

/// A 100-token prompt prefilled in two long chunks (the CPU kernels attend those through
/// matmuls over query tiles, not token by token), then one decode step, against the reference.
#[test]
fn long_chunked_prefill_matches_candle_transformers() {
    for family in [Family::Llama, Family::Qwen3] {
        for cpu_kernels in PATHS {
            let dir = tempfile::tempdir().expect("tempdir");
            let tensors = write_tiny_model(dir.path(), family, 9);
            let options = path_options(cpu_kernels);
            let mut model = load_model(dir.path(), &options).expect("load tiny model");
            let mut reference = Reference::new(family, tensors);
            let tokens = prompt(21, 100);
            let table = sequence_blocks(1, 26);
            let mut forward = |tokens: &[u32], start_pos: usize| {
                model
                    .executor
                    .forward(&ForwardBatch {
                        chunks: vec![SequenceChunk {
                            sequence_id: 0,
                            tokens: tokens.to_vec(),
                            start_pos,
                            block_table: table.clone(),
                            wants_logits: true,
                        }],
                    })
                    .expect("forward")
            };
            forward(&tokens[..70], 0);
            let ours = forward(&tokens[70..], 70);
            let expected = reference.forward(&tokens, 0);
            let error = relative_error(&ours[0], &expected);
            assert!(
                error < 1e-4,
                "{family:?} cpu_kernels={cpu_kernels} prefill: relative error {error}"
            );
            let next = crate::common::argmax(&expected);
            let ours = forward(&[next], 100);
            let expected = reference.forward(&[next], 100);
            let error = relative_error(&ours[0], &expected);
            assert!(
                error < 1e-4,
                "{family:?} cpu_kernels={cpu_kernels} decode: relative error {error}"
            );
        }
    }
}

/// Eight prompts of different lengths decoded greedily together give the tokens each gives
/// alone.
#[test]
fn batched_greedy_equals_one_at_a_time() {
    for (family, cpu_kernels) in [(Family::Llama, true), (Family::Qwen2, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path(), family, 3);
        let options = path_options(cpu_kernels);
        let mut model = load_model(dir.path(), &options).expect("load");
        let prompts: Vec<Vec<u32>> = (0..8)
            .map(|i| prompt(100 + i, 1 + 3 * i as usize))
            .collect();
        let together = greedy_batch(model.executor.as_mut(), &prompts, 6, &[], 8);
        for (i, p) in prompts.iter().enumerate() {
            let alone = greedy_batch(model.executor.as_mut(), std::slice::from_ref(p), 6, &[], 8);
            assert_eq!(alone[0], together[i], "{family:?} prompt {i}");
        }
    }
}

/// The device-generic path (what CUDA runs) on batches of sequences of different lengths, their
/// KV in scattered blocks: one prefill step for six sequences (78 rows), three decode steps (six
/// rows), a step mixing six decodes with a seventh sequence's prefill, and a last decode step of
/// all seven. Every row's logits match candle-transformers run on that sequence alone, and our
/// CPU kernels (fused attention, SwiGLU, small-batch matmuls) on the same batches, within 1e-4.
#[test]
fn batched_generic_path_matches_reference_and_cpu_kernels() {
    const LENGTHS: [usize; 6] = [1, 3, 4, 9, 17, 44];
    const BLOCKS_PER_SEQUENCE: usize = 16;
    let families = [
        Family::Llama,
        Family::Llama3TiedShardedBf16,
        Family::Qwen2,
        Family::Qwen3,
    ];
    for family in families {
        let dir = tempfile::tempdir().expect("tempdir");
        let tensors = write_tiny_model(dir.path(), family, 13);
        let load = |cpu_kernels: bool| {
            let options = LoadOptions {
                kv_cache: KvCacheSize::Blocks((LENGTHS.len() + 1) * BLOCKS_PER_SEQUENCE),
                ..path_options(cpu_kernels)
            };
            load_model(dir.path(), &options).expect("load tiny model")
        };
        let mut generic = load(false);
        let mut kernels = load(true);
        let mut references: Vec<Reference> = (0..=LENGTHS.len())
            .map(|_| Reference::new(family, tensors.clone()))
            .collect();
        // Per sequence: the tokens of this round's chunk and the position it starts at.
        let mut step: Vec<(Vec<u32>, usize)> = LENGTHS
            .iter()
            .enumerate()
            .map(|(i, &len)| (prompt(60 + i as u64, len), 0))
            .collect();
        for round in 0..6 {
            if round == 4 {
                step.push((prompt(70, 11), 0));
            }
            let batch = ForwardBatch {
                chunks: step
                    .iter()
                    .enumerate()
                    .map(|(i, (tokens, start_pos))| SequenceChunk {
                        sequence_id: i as u64,
                        tokens: tokens.clone(),
                        start_pos: *start_pos,
                        block_table: sequence_blocks(i, BLOCKS_PER_SEQUENCE),
                        wants_logits: true,
                    })
                    .collect(),
            };
            let ours = generic.executor.forward(&batch).expect("generic forward");
            let fused = kernels
                .executor
                .forward(&batch)
                .expect("cpu kernels forward");
            assert_eq!(ours.len(), step.len());
            for (i, (tokens, start_pos)) in step.iter_mut().enumerate() {
                let expected = references[i].forward(tokens, *start_pos);
                let what = format!(
                    "{family:?} round {round} sequence {i} ({} tokens at {start_pos})",
                    tokens.len()
                );
                let error = relative_error(&ours[i], &expected);
                assert!(
                    error < 1e-4,
                    "{what}: generic path vs reference: relative error {error}"
                );
                let error = relative_error(&fused[i], &expected);
                assert!(
                    error < 1e-4,
                    "{what}: cpu kernels vs reference: relative error {error}"
                );
                let error = relative_error(&ours[i], &fused[i]);
                assert!(
                    error < 1e-4,
                    "{what}: generic path vs cpu kernels: relative error {error}"
                );
                *start_pos += tokens.len();
                *tokens = vec![crate::common::argmax(&expected)];
            }
        }
    }
}

/// One step mixing a decode step of one sequence with a prefill chunk (not the last) and a
/// final prefill chunk of others gives each the logits it gets alone.
#[test]
fn mixed_prefill_and_decode_batch_matches_separate_runs() {
    for cpu_kernels in PATHS {
        mixed_batch_with(cpu_kernels);
    }
}

fn mixed_batch_with(cpu_kernels: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path(), Family::Qwen3, 5);
    let options = path_options(cpu_kernels);
    let mut model = load_model(dir.path(), &options).expect("load");
    let first = prompt(1, 9);
    let second = prompt(2, 14);
    let third = prompt(3, 6);
    let chunk = |id: u64, tokens: &[u32], start: usize, logits: bool| SequenceChunk {
        sequence_id: id,
        tokens: tokens.to_vec(),
        start_pos: start,
        block_table: sequence_blocks(id as usize, 8),
        wants_logits: logits,
    };
    let run = |model: &mut adaptive_engine_models::LoadedModel, chunks: Vec<SequenceChunk>| {
        model
            .executor
            .forward(&ForwardBatch { chunks })
            .expect("forward")
    };
    // Separately: each sequence on its own.
    run(&mut model, vec![chunk(0, &first[..8], 0, false)]);
    let alone_decode = run(&mut model, vec![chunk(0, &first[8..], 8, true)]);
    run(&mut model, vec![chunk(1, &second[..5], 0, false)]);
    let alone_second = run(&mut model, vec![chunk(1, &second[5..], 5, true)]);
    let alone_third = run(&mut model, vec![chunk(2, &third, 0, true)]);

    // Together: sequence 0's prefix and sequence 1's first chunk are cached from the runs above
    // (same blocks), so rerun sequence 0's last token with 1's second chunk and 2's prefill,
    // plus a non-final chunk of a fourth sequence that must not return logits.
    let together = run(
        &mut model,
        vec![
            chunk(0, &first[8..], 8, true),
            chunk(3, &third[..3], 0, false),
            chunk(1, &second[5..], 5, true),
            chunk(2, &third, 0, true),
        ],
    );
    assert_eq!(together.len(), 3);
    for (ours, alone) in together
        .iter()
        .zip([&alone_decode[0], &alone_second[0], &alone_third[0]])
    {
        let error = relative_error(ours, alone);
        assert!(error < 1e-5, "relative error {error}");
    }
}

#[test]
fn invalid_batches_are_rejected_not_panicked() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path(), Family::Llama, 1);
    let mut model = load_model(dir.path(), &options()).expect("load");
    let bad = [
        SequenceChunk {
            sequence_id: 0,
            tokens: vec![1, 2, 3, 4, 5],
            start_pos: 0,
            block_table: vec![0],
            wants_logits: true,
        },
        SequenceChunk {
            sequence_id: 0,
            tokens: vec![VOCAB as u32],
            start_pos: 0,
            block_table: vec![0],
            wants_logits: true,
        },
        SequenceChunk {
            sequence_id: 0,
            tokens: vec![1],
            start_pos: 0,
            block_table: vec![64],
            wants_logits: true,
        },
        SequenceChunk {
            sequence_id: 0,
            tokens: vec![],
            start_pos: 0,
            block_table: vec![0],
            wants_logits: true,
        },
        SequenceChunk {
            sequence_id: 0,
            tokens: vec![1],
            start_pos: 128,
            block_table: (0..64).collect(),
            wants_logits: true,
        },
    ];
    for chunk in bad {
        let result = model.executor.forward(&ForwardBatch {
            chunks: vec![chunk.clone()],
        });
        assert!(
            matches!(result, Err(adaptive_engine::ExecutorError::InvalidBatch(_))),
            "{chunk:?}: {result:?}"
        );
    }
}

/// Prefix caching as the scheduler does it: a second sequence whose block table starts with the
/// first sequence's full blocks prefills only its own suffix, and gets the logits of a full
/// prefill.
#[test]
fn shared_prefix_blocks_give_full_prefill_logits() {
    for cpu_kernels in PATHS {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path(), Family::Llama, 9);
        let options = path_options(cpu_kernels);
        let mut model = load_model(dir.path(), &options).expect("load");
        let shared = prompt(40, 2 * BLOCK_SIZE);
        let mut first = shared.clone();
        first.extend(prompt(41, 3));
        let mut second = shared.clone();
        second.extend(prompt(42, 5));
        let chunk = |tokens: &[u32], start_pos: usize, block_table: Vec<u32>| SequenceChunk {
            sequence_id: 0,
            tokens: tokens.to_vec(),
            start_pos,
            block_table,
            wants_logits: true,
        };
        let run = |model: &mut adaptive_engine_models::LoadedModel, chunk: SequenceChunk| {
            model
                .executor
                .forward(&ForwardBatch {
                    chunks: vec![chunk],
                })
                .expect("forward")
                .remove(0)
        };
        // The first sequence fills blocks 10 and 11 with the shared prefix.
        run(&mut model, chunk(&first, 0, vec![10, 11, 12]));
        let cached = run(
            &mut model,
            chunk(
                &second[2 * BLOCK_SIZE..],
                2 * BLOCK_SIZE,
                vec![10, 11, 20, 21],
            ),
        );
        let full = run(&mut model, chunk(&second, 0, vec![30, 31, 32, 33]));
        let error = relative_error(&cached, &full);
        assert!(
            error < 1e-5,
            "cpu_kernels={cpu_kernels}: relative error {error}"
        );
    }
}

/// Mistral's sliding window caps the context instead of being ignored: within the window,
/// sliding-window attention is full attention.
#[test]
fn mistral_sliding_window_caps_the_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path(), Family::Llama, 1);
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("read")).expect("json");
    config["model_type"] = "mistral".into();
    config["sliding_window"] = 64.into();
    std::fs::write(&config_path, config.to_string()).expect("write");
    let model = load_model(dir.path(), &LoadOptions::default()).expect("load");
    assert_eq!(model.info.context_length, 64);
}
