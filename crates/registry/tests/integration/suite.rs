//! The registry suite: every function runs against each backend (see `main.rs`). Keys differ
//! between functions so several can share one server.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use adaptive_api_types::ErrorCode;
use adaptive_registry::{
    import_model, DownloadOptions, ImportOptions, ImportRequest, ModelCache, ModelFormat, ModelKey,
    Registry, RegistryError, RegistryStore,
};
use futures::TryStreamExt;
use tempfile::TempDir;

use crate::fixtures::{gguf_file, hf_model_dir, sha256_of_file, tree_digests};
use crate::instrumented::instrument;
use adaptive_registry::test_util::TestBackend;

const MIB: usize = 1 << 20;

fn import_options() -> ImportOptions {
    ImportOptions {
        part_size: 5 * MIB,
        max_concurrent_parts: 4,
        show_progress: false,
    }
}

fn download_options() -> DownloadOptions {
    DownloadOptions {
        chunk_size: 4 << 20,
        concurrency: 8,
        attempts: 3,
    }
}

fn key(name: &str) -> ModelKey {
    ModelKey::parse(name).expect("valid key")
}

fn cache(store: &RegistryStore, directory: &Path, budget_bytes: u64) -> ModelCache {
    ModelCache::new(store.clone(), directory, budget_bytes)
        .with_download_options(download_options())
}

async fn import(
    store: &RegistryStore,
    source: &Path,
    model_key: &ModelKey,
) -> adaptive_registry::ImportSummary {
    let request = ImportRequest {
        source: source.to_path_buf(),
        key: model_key.clone(),
        name: None,
    };
    import_model(&Registry::new(store.clone()), &request, &import_options())
        .await
        .expect("import")
}

async fn object_paths_under(store: &RegistryStore, model_key: &ModelKey) -> Vec<String> {
    let prefix = store.path(model_key.as_str());
    store
        .object_store()
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list objects")
}

pub async fn import_gguf_then_resolve(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = gguf_file(work.path(), "tiny.Q8_0.gguf", 200_000, 1);
    let model_key = key("tiny-gguf");
    let summary = import(&backend.store, &source, &model_key).await;
    let manifest = &summary.manifest;
    assert_eq!(summary.uploaded_files, 1);
    assert_eq!(manifest.format, ModelFormat::Gguf);
    assert_eq!(manifest.architecture.as_deref(), Some("llama"));
    assert_eq!(manifest.context_length, Some(2048));
    assert_eq!(manifest.quantization.as_deref(), Some("Q8_0"));
    assert_eq!(manifest.parameters, Some(256));
    assert_eq!(manifest.files.len(), 1);
    assert_eq!(manifest.files[0].path, "tiny.Q8_0.gguf");
    assert_eq!(manifest.files[0].sha256, sha256_of_file(&source));

    let registry = Registry::new(backend.store.clone());
    let listed: Vec<ModelKey> = registry
        .list_models()
        .await
        .expect("list")
        .into_iter()
        .map(|manifest| manifest.key)
        .collect();
    assert!(listed.contains(&model_key), "{listed:?}");

    let (counted_store, counters) = instrument(&backend.store);
    let model_cache = cache(&counted_store, &work.path().join("cache"), 1 << 30);
    let model_dir = model_cache
        .resolve("model_registry://tiny-gguf")
        .await
        .expect("resolve");
    assert_eq!(
        sha256_of_file(&model_dir.join("tiny.Q8_0.gguf")),
        manifest.files[0].sha256
    );
    let gets_after_first_resolve = counters.ranged_gets();
    assert!(gets_after_first_resolve > 0);
    let again = model_cache
        .resolve("tiny-gguf")
        .await
        .expect("resolve again");
    assert_eq!(again, model_dir);
    assert_eq!(
        counters.ranged_gets(),
        gets_after_first_resolve,
        "a cached, verified model is not downloaded again"
    );
}

pub async fn multipart_upload_over_100mb_and_parallel_download(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = hf_model_dir(work.path(), 110 * MIB, 7);
    let model_key = key("big-hf");
    let (counted_store, counters) = instrument(&backend.store);
    let summary = import(&counted_store, &source, &model_key).await;
    assert_eq!(summary.uploaded_files, 4);
    assert_eq!(summary.manifest.format, ModelFormat::HfSafetensors);
    assert_eq!(summary.manifest.parameters, Some(110 * MIB as u64));
    assert!(
        counters.parts_uploaded() >= 22,
        "110 MiB in 5 MiB parts, got {} parts",
        counters.parts_uploaded()
    );

    let model_cache = cache(&counted_store, &work.path().join("cache"), 1 << 30);
    let resolved = model_cache.resolve_model("big-hf").await.expect("resolve");
    assert_eq!(
        resolved.load_path(),
        resolved.directory,
        "HF models load from the directory"
    );
    assert_eq!(tree_digests(&resolved.directory), tree_digests(&source));
    assert!(
        counters.ranged_gets() >= 28,
        "110 MiB in 4 MiB ranges, got {} gets",
        counters.ranged_gets()
    );
    assert!(
        counters.max_gets_in_flight() > 1,
        "range requests ran one at a time"
    );
}

pub async fn resume_after_interrupted_upload(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = hf_model_dir(work.path(), 30 * MIB, 11);
    let model_key = key("resumed-hf");
    let registry = Registry::new(backend.store.clone());
    let request = ImportRequest {
        source: source.clone(),
        key: model_key.clone(),
        name: Some("Resumed".into()),
    };

    // added_tokens.json and config.json upload whole; model.safetensors dies after two parts.
    let (failing_store, counters) = instrument(&backend.store);
    counters.parts_before_failure.store(2, Ordering::SeqCst);
    let interrupted =
        import_model(&Registry::new(failing_store), &request, &import_options()).await;
    let error = interrupted.expect_err("the upload was cut off");
    assert_eq!(error.error_code(), ErrorCode::Unavailable, "{error}");
    assert!(!registry.exists(&model_key).await.expect("exists"));
    let listed = registry.list_models().await.expect("list");
    assert!(listed.iter().all(|manifest| manifest.key != model_key));
    let unfinished = registry
        .list_unfinished_imports()
        .await
        .expect("unfinished");
    assert!(unfinished.contains(&model_key), "{unfinished:?}");

    let summary = import_model(&registry, &request, &import_options())
        .await
        .expect("resumed import");
    assert_eq!(
        summary.resumed_files, 2,
        "the small files were already uploaded"
    );
    assert_eq!(summary.uploaded_files, 2);
    assert_eq!(summary.manifest.name, "Resumed");
    let unfinished = registry
        .list_unfinished_imports()
        .await
        .expect("unfinished");
    assert!(!unfinished.contains(&model_key), "{unfinished:?}");
    let leftovers: Vec<String> = object_paths_under(&backend.store, &model_key)
        .await
        .into_iter()
        .filter(|path| path.contains("/.import/"))
        .collect();
    assert!(leftovers.is_empty(), "markers left: {leftovers:?}");

    let model_cache = cache(&backend.store, &work.path().join("cache"), 1 << 30);
    let model_dir = model_cache.resolve("resumed-hf").await.expect("resolve");
    assert_eq!(tree_digests(&model_dir), tree_digests(&source));
}

/// The importing task is dropped mid-file, as a killed process would stop: no error path runs,
/// no abort is sent. A second import resumes.
pub async fn resume_after_killed_upload(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = hf_model_dir(work.path(), 30 * MIB, 13);
    let model_key = key("killed-hf");
    let request = ImportRequest {
        source: source.clone(),
        key: model_key.clone(),
        name: None,
    };
    let (stalling_store, counters) = instrument(&backend.store);
    counters.parts_before_stall.store(2, Ordering::SeqCst);
    let importing = {
        let registry = Registry::new(stalling_store);
        let request = request.clone();
        tokio::spawn(async move { import_model(&registry, &request, &import_options()).await })
    };
    wait_for("two parts of model.safetensors", || {
        counters.parts_uploaded() >= 2
    })
    .await;
    importing.abort();
    assert!(importing.await.expect_err("killed").is_cancelled());

    let registry = Registry::new(backend.store.clone());
    assert!(!registry.exists(&model_key).await.expect("exists"));
    let summary = import_model(&registry, &request, &import_options())
        .await
        .expect("resumed import");
    assert_eq!(
        summary.resumed_files, 2,
        "the small files were already uploaded"
    );
    assert_eq!(summary.uploaded_files, 2);
    let model_cache = cache(&backend.store, &work.path().join("cache"), 1 << 30);
    let model_dir = model_cache.resolve("killed-hf").await.expect("resolve");
    assert_eq!(tree_digests(&model_dir), tree_digests(&source));
}

/// Polls `condition` (bounded) instead of sleeping for a guessed duration.
async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..600 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn corrupt_object_is_detected_and_refused(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = gguf_file(work.path(), "victim.gguf", MIB, 21);
    let model_key = key("corrupt-gguf");
    import(&backend.store, &source, &model_key).await;
    let object = backend.store.path("corrupt-gguf/files/victim.gguf");
    let mut tampered = std::fs::read(&source).expect("read source");
    tampered[1000] ^= 0x01;
    backend
        .store
        .object_store()
        .put(&object, tampered.into())
        .await
        .expect("overwrite object");

    let cache_dir = work.path().join("cache");
    let model_cache = cache(&backend.store, &cache_dir, 1 << 30);
    let error = model_cache
        .resolve("corrupt-gguf")
        .await
        .expect_err("corrupt model must not load");
    assert!(
        matches!(error, RegistryError::ChecksumMismatch { .. }),
        "{error}"
    );
    assert_eq!(error.error_code(), ErrorCode::Internal);
    let model_dir = cache_dir.join("corrupt-gguf");
    assert!(!model_dir.join("manifest.json").exists());
    assert!(!model_dir.join("files/victim.gguf").exists());
    assert!(!model_dir.join("partial").exists());
}

pub async fn transient_corruption_is_retried(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = gguf_file(work.path(), "flaky.gguf", MIB, 31);
    let model_key = key("flaky-gguf");
    import(&backend.store, &source, &model_key).await;
    let (flaky_store, counters) = instrument(&backend.store);
    counters.corrupt_ranged_gets.store(1, Ordering::SeqCst);
    let model_cache = cache(&flaky_store, &work.path().join("cache"), 1 << 30);
    let model_dir = model_cache.resolve("flaky-gguf").await.expect("resolve");
    assert_eq!(
        sha256_of_file(&model_dir.join("flaky.gguf")),
        sha256_of_file(&source)
    );
    assert_eq!(counters.ranged_gets(), 2, "one corrupted read, one retry");
}

pub async fn damaged_cache_is_repaired(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = hf_model_dir(work.path(), MIB, 41);
    let model_key = key("repaired-hf");
    import(&backend.store, &source, &model_key).await;
    let cache_dir = work.path().join("cache");
    let model_cache = cache(&backend.store, &cache_dir, 1 << 30);
    let model_dir = model_cache.resolve("repaired-hf").await.expect("resolve");

    // A crash after the files landed but before the completion mark, with damage on disk:
    // a flipped byte, a truncated file, a leftover partial download and a stray file.
    let model_root = cache_dir.join("repaired-hf");
    std::fs::remove_file(model_root.join("manifest.json")).expect("remove mark");
    let weights = model_dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).expect("read weights");
    bytes[500] ^= 0x80;
    std::fs::write(&weights, bytes).expect("damage weights");
    let tokenizer = model_dir.join("tokenizer.json");
    let tokenizer_bytes = std::fs::read(&tokenizer).expect("read tokenizer");
    std::fs::write(&tokenizer, &tokenizer_bytes[..100]).expect("truncate tokenizer");
    std::fs::create_dir_all(model_root.join("partial")).expect("partial dir");
    std::fs::write(model_root.join("partial/model.safetensors"), b"junk").expect("junk");
    std::fs::write(model_dir.join("stray.bin"), b"stray").expect("stray");

    let repaired = model_cache
        .resolve("repaired-hf")
        .await
        .expect("resolve again");
    assert_eq!(tree_digests(&repaired), tree_digests(&source));
    assert!(!model_root.join("partial").exists());
}

pub async fn cached_file_rewritten_in_place_is_fetched_again(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = gguf_file(work.path(), "rewritten.gguf", MIB, 81);
    let model_key = key("rewritten-gguf");
    import(&backend.store, &source, &model_key).await;
    let (counted_store, counters) = instrument(&backend.store);
    let model_cache = cache(&counted_store, &work.path().join("cache"), 1 << 30);
    let model_dir = model_cache
        .resolve("rewritten-gguf")
        .await
        .expect("resolve");
    let cached = model_dir.join("rewritten.gguf");
    let gets_after_download = counters.ranged_gets();
    model_cache.resolve("rewritten-gguf").await.expect("cached");
    assert_eq!(
        counters.ranged_gets(),
        gets_after_download,
        "an untouched copy is used as is"
    );

    // Same size, one bit different: only the modification time tells.
    adaptive_registry::test_util::flip_bit_in_place(&cached, 100);

    model_cache
        .resolve("rewritten-gguf")
        .await
        .expect("repaired");
    assert_eq!(sha256_of_file(&cached), sha256_of_file(&source));
    assert!(
        counters.ranged_gets() > gets_after_download,
        "fetched again"
    );
}

pub async fn delete_removes_every_object(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = hf_model_dir(work.path(), 64 * 1024, 51);
    let model_key = key("deleted-hf");
    import(&backend.store, &source, &model_key).await;
    let registry = Registry::new(backend.store.clone());
    assert_eq!(
        object_paths_under(&backend.store, &model_key).await.len(),
        5
    );

    let deleted = registry.delete_model(&model_key).await.expect("delete");
    assert!(deleted.had_manifest);
    assert_eq!(deleted.objects_deleted, 5, "four files and the manifest");
    assert!(object_paths_under(&backend.store, &model_key)
        .await
        .is_empty());
    let listed = registry.list_models().await.expect("list");
    assert!(listed.iter().all(|manifest| manifest.key != model_key));
    let missing = registry.manifest(&model_key).await.expect_err("gone");
    assert_eq!(missing.error_code(), ErrorCode::NotFound);
    let again = registry
        .delete_model(&model_key)
        .await
        .expect_err("already gone");
    assert!(
        matches!(again, RegistryError::ModelNotFound { .. }),
        "{again}"
    );
}

pub async fn lru_eviction_respects_budget(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    for (index, name) in ["lru-a", "lru-b", "lru-c"].iter().enumerate() {
        let source = gguf_file(work.path(), &format!("{name}.gguf"), MIB, 60 + index as u64);
        import(&backend.store, &source, &key(name)).await;
    }
    let budget = 2 * MIB as u64 + MIB as u64 / 2;
    let cache_dir = work.path().join("cache");
    let model_cache = cache(&backend.store, &cache_dir, budget);
    let cached_keys = |models: Vec<adaptive_registry::CachedModel>| -> Vec<String> {
        let mut keys: Vec<String> = models.into_iter().map(|model| model.key).collect();
        keys.sort();
        keys
    };

    model_cache.resolve("lru-a").await.expect("a");
    model_cache.resolve("lru-b").await.expect("b");
    model_cache.resolve("lru-a").await.expect("a again");
    model_cache.resolve("lru-c").await.expect("c");
    let models = model_cache.cached_models().await.expect("cached");
    assert!(models.iter().map(|model| model.size).sum::<u64>() <= budget);
    assert_eq!(
        cached_keys(models),
        ["lru-a", "lru-c"],
        "b was least recently used"
    );

    model_cache.resolve("lru-b").await.expect("b again");
    let models = model_cache.cached_models().await.expect("cached");
    assert_eq!(
        cached_keys(models),
        ["lru-b", "lru-c"],
        "a was least recently used"
    );

    let tiny_cache = cache(&backend.store, &work.path().join("tiny"), 1000);
    let error = tiny_cache.resolve("lru-a").await.expect_err("cannot fit");
    assert!(
        matches!(error, RegistryError::CacheBudgetTooSmall { .. }),
        "{error}"
    );
}

pub async fn import_refuses_an_existing_key(backend: &TestBackend) {
    let work = TempDir::new().expect("tempdir");
    let source = gguf_file(work.path(), "twice.gguf", 1000, 71);
    let model_key = key("twice-gguf");
    import(&backend.store, &source, &model_key).await;
    let request = ImportRequest {
        source,
        key: model_key,
        name: None,
    };
    let registry = Registry::new(backend.store.clone());
    let error = import_model(&registry, &request, &import_options())
        .await
        .expect_err("second import");
    assert_eq!(error.error_code(), ErrorCode::AlreadyExists, "{error}");
}

pub fn smollm2_path() -> Option<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        return Some(path);
    }
    adaptive_registry::test_util::skip_or_fail(&format!(
        "{} missing (scripts/fetch-model.sh fetches it)",
        path.display()
    ));
    None
}

pub async fn import_smollm2_then_cold_load(backend: &TestBackend) {
    let Some(source) = smollm2_path() else {
        return;
    };
    let model_key = key("smollm2-135m-instruct-q4_1");
    let summary = import(&backend.store, &source, &model_key).await;
    let manifest = &summary.manifest;
    assert_eq!(manifest.format, ModelFormat::Gguf);
    assert_eq!(manifest.architecture.as_deref(), Some("llama"));
    assert_eq!(manifest.quantization.as_deref(), Some("Q4_1"));
    assert_eq!(manifest.context_length, Some(8192));
    let parameters = manifest.parameters.expect("parameter count");
    assert!(
        (130_000_000..140_000_000).contains(&parameters),
        "{parameters}"
    );

    let work = TempDir::new().expect("tempdir");
    let model_cache = cache(&backend.store, &work.path().join("cache"), 1 << 30);
    let resolved = model_cache
        .resolve_model(&model_key.registry_path())
        .await
        .expect("cold load");
    assert_eq!(&resolved.manifest, manifest);
    let gguf_path = resolved.load_path();
    assert_eq!(
        gguf_path,
        resolved.directory.join("SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    assert_eq!(sha256_of_file(&gguf_path), manifest.files[0].sha256);
}
