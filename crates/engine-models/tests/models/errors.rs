//! Load errors name the file and the problem.

use std::path::Path;

use adaptive_engine_models::{load_model, LoadOptions, ModelError};

use crate::common::smollm_path;

fn load_error(path: &Path) -> ModelError {
    load_model(path, &LoadOptions::default()).expect_err("load must fail")
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let error = load_error(Path::new("/nonexistent/model.gguf"));
    assert!(matches!(error, ModelError::Io { .. }), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/model.gguf"),
        "{error}"
    );
}

#[test]
fn garbage_file_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.gguf");
    std::fs::write(&path, b"this is not a gguf file at all").expect("write");
    let error = load_error(&path);
    assert!(matches!(error, ModelError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("garbage.gguf"), "{error}");
}

#[test]
fn truncated_gguf_is_corrupt() {
    let Some(model) = smollm_path() else { return };
    let bytes = std::fs::read(&model).expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    for keep in [bytes.len() / 2, 1000, 10] {
        let path = dir.path().join(format!("truncated-{keep}.gguf"));
        std::fs::write(&path, &bytes[..keep]).expect("write");
        let error = load_error(&path);
        assert!(
            matches!(error, ModelError::Corrupt { .. }),
            "{keep}: {error:?}"
        );
        assert!(
            error
                .to_string()
                .contains(&format!("truncated-{keep}.gguf")),
            "{error}"
        );
    }
}

/// A well-formed GGUF whose architecture we do not run.
#[test]
fn unsupported_gguf_architecture_is_named() {
    use candle_core::quantized::gguf_file::{self, Value};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mamba.gguf");
    let mut file = std::fs::File::create(&path).expect("create");
    let metadata = [("general.architecture", Value::String("mamba".into()))];
    let metadata_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut file, &metadata_refs, &[]).expect("write gguf");
    drop(file);
    let error = load_error(&path);
    assert!(matches!(error, ModelError::Unsupported { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("mamba.gguf") && message.contains("\"mamba\""),
        "{message}"
    );
}

#[test]
fn unsupported_hf_architecture_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "gpt_neox", "hidden_size": 8, "intermediate_size": 16, "vocab_size": 10,
            "num_hidden_layers": 1, "num_attention_heads": 2}"#,
    )
    .expect("write");
    let error = load_error(dir.path());
    assert!(matches!(error, ModelError::Unsupported { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("config.json") && message.contains("gpt_neox"),
        "{message}"
    );
}

#[test]
fn corrupt_safetensors_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::reference::write_tiny_model(dir.path(), crate::reference::Family::Llama, 1);
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).expect("read");
    std::fs::write(&weights, &bytes[..bytes.len() - 100]).expect("truncate");
    let error = load_error(dir.path());
    assert!(matches!(error, ModelError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("model.safetensors"), "{error}");
}

#[test]
fn impossible_kv_cache_sizes_are_option_errors() {
    use adaptive_engine_models::KvCacheSize;
    let dir = tempfile::tempdir().expect("tempdir");
    crate::reference::write_tiny_model(dir.path(), crate::reference::Family::Llama, 1);
    for (kv_cache, block_size) in [
        (KvCacheSize::Blocks(usize::MAX / 2), 16),
        (KvCacheSize::Blocks(0), 16),
        (KvCacheSize::MemoryBudgetBytes(10), 16),
        (KvCacheSize::Blocks(4), 0),
    ] {
        let options = LoadOptions {
            kv_cache,
            block_size,
            ..LoadOptions::default()
        };
        let error = load_model(dir.path(), &options).expect_err("must fail");
        assert!(
            matches!(error, ModelError::Options(_)),
            "{kv_cache:?}: {error:?}"
        );
    }
}
