//! Model files made on the fly: an HF-layout directory with a safetensors file of any size,
//! and a small GGUF file with a real header.

use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

pub fn random_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; length];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_of_file(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).expect("read file"))
}

/// `config.json`, `tokenizer.json`, an empty `added_tokens.json` and `model.safetensors` whose
/// tensor data is `weight_bytes` random bytes (one U8 tensor).
pub fn hf_model_dir(root: &Path, weight_bytes: usize, seed: u64) -> PathBuf {
    let directory = root.join(format!("hf-model-{seed}"));
    std::fs::create_dir_all(&directory).expect("model dir");
    std::fs::write(
        directory.join("config.json"),
        r#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":4096,"torch_dtype":"bfloat16"}"#,
    )
    .expect("config");
    std::fs::write(
        directory.join("tokenizer.json"),
        random_bytes(3000, seed + 1),
    )
    .expect("tokenizer");
    std::fs::write(directory.join("added_tokens.json"), b"").expect("empty file");
    let header = format!(
        r#"{{"weight":{{"dtype":"U8","shape":[{weight_bytes}],"data_offsets":[0,{weight_bytes}]}}}}"#
    );
    let mut weights = (header.len() as u64).to_le_bytes().to_vec();
    weights.extend(header.as_bytes());
    weights.extend(random_bytes(weight_bytes, seed));
    std::fs::write(directory.join("model.safetensors"), weights).expect("weights");
    directory
}

fn gguf_string(buffer: &mut Vec<u8>, text: &str) {
    buffer.extend((text.len() as u64).to_le_bytes());
    buffer.extend(text.as_bytes());
}

/// A GGUF v3 file (llama, context 2048, Q8_0, one 16x16 tensor) followed by `tail_bytes`.
pub fn gguf_file(root: &Path, name: &str, tail_bytes: usize, seed: u64) -> PathBuf {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(3u64.to_le_bytes());
    gguf_string(&mut bytes, "general.architecture");
    bytes.extend(8u32.to_le_bytes());
    gguf_string(&mut bytes, "llama");
    gguf_string(&mut bytes, "llama.context_length");
    bytes.extend(4u32.to_le_bytes());
    bytes.extend(2048u32.to_le_bytes());
    gguf_string(&mut bytes, "general.file_type");
    bytes.extend(4u32.to_le_bytes());
    bytes.extend(7u32.to_le_bytes());
    gguf_string(&mut bytes, "token_embd.weight");
    bytes.extend(2u32.to_le_bytes());
    bytes.extend(16u64.to_le_bytes());
    bytes.extend(16u64.to_le_bytes());
    bytes.extend(8u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(random_bytes(tail_bytes, seed));
    let path = root.join(name);
    std::fs::write(&path, bytes).expect("gguf");
    path
}

/// Every file under `directory`, relative path to sha256.
pub fn tree_digests(directory: &Path) -> Vec<(String, String)> {
    let mut digests = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(directory)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            digests.push((relative, sha256_of_file(&path)));
        }
    }
    digests.sort();
    digests
}
