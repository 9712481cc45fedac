//! GGUF → HF layout: the same weights, dequantized, under HF names, with the files
//! `load_model` reads from a directory.
//!
//! llama.cpp's converter permutes the rows of Llama's Q and K projections (per head,
//! `[2, head_dim/2]` → `[head_dim/2, 2]`) so that RoPE pairs adjacent dimensions; HF checkpoints
//! rotate halves instead, so the permutation is undone here. Qwen GGUFs are not permuted. A tied
//! embedding stays tied (`tie_word_embeddings`, no `lm_head.weight`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::config::{parse_gguf_config, Architecture, GgufMetadata, RopeScaling, RopeStyle};
use crate::error::ModelError;
use crate::tokenizer::gguf_tokenizer_json;
use crate::weights::{hf_name, GgufWeights};

/// Undoes llama.cpp's Q/K row permutation for a `[heads * head_dim, in]` matrix.
fn unpermute_rows(weight: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    let head_dim = rows / heads;
    weight
        .reshape((heads, head_dim / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ModelError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ModelError::invalid(path, e.to_string()))?;
    std::fs::write(path, text).map_err(|e| ModelError::io(path, e))
}

/// Writes `config.json`, `model.safetensors` (f32), `tokenizer.json`, `tokenizer_config.json`
/// and `generation_config.json` for the model in `gguf_path` into `out_dir` (created if needed).
pub fn gguf_to_hf(gguf_path: &Path, out_dir: &Path) -> Result<(), ModelError> {
    let mut gguf = GgufWeights::open(gguf_path)?;
    let metadata = GgufMetadata {
        path: gguf_path,
        content: &gguf.content,
    };
    let config = parse_gguf_config(&metadata, None)?;
    if gguf.content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(ModelError::unsupported(
            gguf_path,
            "conversion of per-frequency RoPE factors (rope_freqs.weight) to HF rope_scaling",
        ));
    }
    let (tokenizer_json, special) = gguf_tokenizer_json(&metadata)?;
    let chat_template = metadata
        .string("tokenizer.chat_template")
        .map(str::to_string);
    std::fs::create_dir_all(out_dir).map_err(|e| ModelError::io(out_dir, e))?;

    let names: Vec<String> = gguf.content.tensor_infos.keys().cloned().collect();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for gguf_tensor in names {
        let Some(hf) = hf_name(&gguf_tensor) else {
            return Err(ModelError::unsupported(
                gguf_path,
                format!("tensor {gguf_tensor} has no HF equivalent"),
            ));
        };
        let weight = gguf
            .qtensor_by_gguf_name(&gguf_tensor, &Device::Cpu)?
            .dequantize(&Device::Cpu)?;
        let is_permuted = config.rope_style == RopeStyle::Interleaved;
        let weight = if is_permuted && gguf_tensor.ends_with("attn_q.weight") {
            unpermute_rows(&weight, config.num_heads)?
        } else if is_permuted && gguf_tensor.ends_with("attn_k.weight") {
            unpermute_rows(&weight, config.num_kv_heads)?
        } else {
            weight
        };
        tensors.insert(hf, weight);
    }
    let tied = !tensors.contains_key("lm_head.weight");
    let weights_path = out_dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights_path)
        .map_err(|e| ModelError::invalid(&weights_path, format!("cannot write: {e}")))?;

    let (model_type, hf_architecture) = match config.architecture {
        Architecture::Llama => ("llama", "LlamaForCausalLM"),
        Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        Architecture::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
    };
    let rope_scaling = match &config.rope_scaling {
        RopeScaling::Linear { factor } => json!({"type": "linear", "factor": factor}),
        _ => serde_json::Value::Null,
    };
    let hf_config = json!({
        "architectures": [hf_architecture],
        "model_type": model_type,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": tied,
        "attention_bias": config.qkv_bias,
        "hidden_act": "silu",
        "bos_token_id": special.bos_token_id,
        "eos_token_id": special.eos_token_ids.first(),
        "torch_dtype": "float32",
    });
    write_json(&out_dir.join("config.json"), &hf_config)?;
    write_json(&out_dir.join("tokenizer.json"), &tokenizer_json)?;
    write_json(
        &out_dir.join("tokenizer_config.json"),
        &json!({
            "bos_token": special.bos_token,
            "eos_token": special.eos_token,
            "add_bos_token": special.add_bos_token,
            "chat_template": chat_template,
        }),
    )?;
    write_json(
        &out_dir.join("generation_config.json"),
        &json!({"bos_token_id": special.bos_token_id, "eos_token_id": special.eos_token_ids}),
    )?;
    Ok(())
}
