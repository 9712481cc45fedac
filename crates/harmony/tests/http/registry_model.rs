//! SmolLM2 served from the model registry on S3: imported into SeaweedFS (`weed mini`, SigV4
//! credentials) or s3s-fs, then spawned as `model_registry://<key>` by replicas configured with
//! the variables the Helm chart sets (`ADAPTIVE_MODEL_REGISTRY`, `HARMONY_SETTING_MODEL_CACHE_DIR`,
//! `AWS_*`). The first replica starts from an empty cache; the next ones reuse it, fetch again a
//! cached file that was written to, and refuse a model whose registry object is corrupt.
//!
//! Skipped locally when the model or the `weed` binary cannot be had; failing under CI.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use adaptive_registry::test_util::{self, TestBackend};
use adaptive_registry::{import_model, ImportOptions, ImportRequest, ModelKey, Registry};
use object_store::ObjectStore;
use tempfile::TempDir;

use super::real_model::{ask, model_path, REAL};
use super::*;

const REGISTRY_KEY: &str = "smollm2-135m-instruct";
const GGUF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QUESTION: &str = "What is the capital of France?";

/// Imports SmolLM2 into the backend's registry; None when the model file is unavailable.
async fn import_smollm2(backend: &TestBackend) -> Option<PathBuf> {
    let source = model_path()?;
    let request = ImportRequest {
        source: source.clone(),
        key: ModelKey::parse(REGISTRY_KEY).expect("valid key"),
        name: None,
    };
    import_model(
        &Registry::new(backend.store.clone()),
        &request,
        &ImportOptions::default(),
    )
    .await
    .expect("SmolLM2 imported");
    Some(source)
}

/// A replica's configuration from the environment the chart gives a pod, with the test's S3
/// endpoint and credentials.
fn replica_config(backend: &TestBackend, cache_dir: &Path) -> HarmonyConfig {
    let mut env: HashMap<String, String> = backend.env.iter().cloned().collect();
    for (name, value) in [
        ("ADAPTIVE_MODEL_REGISTRY", backend.url.clone()),
        (
            "HARMONY_SETTING_MODEL_CACHE_DIR",
            cache_dir.display().to_string(),
        ),
        ("HARMONY_SETTING_MODEL_CACHE_BUDGET", "1Gi".to_owned()),
        ("HARMONY_BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("HARMONY_DRAIN_GRACE_SECONDS", "5".to_owned()),
    ] {
        env.insert(name.to_owned(), value);
    }
    HarmonyConfig::from_env(&env).expect("chart environment parses")
}

fn spawn_request() -> Value {
    json!({
        "key": REAL,
        "path": format!("model_registry://{REGISTRY_KEY}"),
        "max_seq_len": 2048,
        "kv_cache_len": 4096,
    })
}

fn cached_gguf(cache_dir: &Path) -> PathBuf {
    cache_dir.join(REGISTRY_KEY).join("files").join(GGUF_FILE)
}

/// Inode and modification time: a fresh download renames a new file into place.
fn file_identity(path: &Path) -> (u64, i64, i64) {
    let metadata = std::fs::metadata(path).expect("cached file present");
    (metadata.ino(), metadata.mtime(), metadata.mtime_nsec())
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

/// Starts a replica, spawns the registry model over HTTP (as the control plane does), asks the
/// question and stops the replica; returns the answer.
async fn spawn_and_ask(config: HarmonyConfig) -> String {
    let harmony = TestHarmony::start_with(config, None).await;
    let (status, spawned) = harmony.post("/models/spawn", &spawn_request()).await;
    assert_eq!(status, 200, "{spawned}");
    assert_eq!(spawned["key"], REAL);
    let (status, completion) = harmony
        .post("/v1/chat/completions", &ask(QUESTION, 24))
        .await;
    assert_eq!(status, 200, "{completion}");
    let answer = completion["choices"][0]["message"]["content"]
        .as_str()
        .expect("text")
        .to_owned();
    harmony.stop().await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_model_on_seaweedfs_loads_into_an_empty_cache_is_reused_and_never_loaded_corrupt()
{
    let Some(backend) = test_util::seaweedfs().await else {
        return;
    };
    let Some(source) = import_smollm2(&backend).await else {
        return;
    };
    let work = TempDir::new().expect("tempdir");
    let cache_dir = work.path().join("cloud_cache");
    let config = replica_config(&backend, &cache_dir);

    // An empty cache: the replica downloads, verifies and serves.
    assert!(!cache_dir.exists());
    let answer = spawn_and_ask(config.clone()).await;
    eprintln!("answer: {answer:?}");
    assert!(answer.contains("Paris"), "{answer}");
    let cached = cached_gguf(&cache_dir);
    assert_eq!(sha256_hex(&cached), sha256_hex(&source));
    let downloaded = file_identity(&cached);

    // The next replica on the same volume loads the cached copy without downloading it again.
    assert_eq!(spawn_and_ask(config.clone()).await, answer);
    assert_eq!(file_identity(&cached), downloaded, "cache reused");

    // A cached file written to since it verified (same size, one bit flipped) is fetched again,
    // never loaded.
    test_util::flip_bit_in_place(&cached, 1 << 20);
    assert_eq!(spawn_and_ask(config.clone()).await, answer);
    assert_ne!(file_identity(&cached), downloaded, "fetched again");
    assert_eq!(sha256_hex(&cached), sha256_hex(&source));

    // A corrupt object in the registry (same size, one bit flipped): every attempt fails
    // verification, the spawn is refused with a clear error, and nothing is left to load.
    let object = backend
        .store
        .path(&format!("{REGISTRY_KEY}/files/{GGUF_FILE}"));
    let mut corrupt = std::fs::read(&source).expect("read source");
    corrupt[1 << 20] ^= 0x01;
    backend
        .store
        .object_store()
        .put(&object, corrupt.into())
        .await
        .expect("overwrite object");
    std::fs::remove_dir_all(&cache_dir).expect("empty the cache");
    let harmony = TestHarmony::start_with(config, None).await;
    let (status, error) = harmony.post("/models/spawn", &spawn_request()).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "invalid_request");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("model registry") && message.contains("checksum mismatch"),
        "{message}"
    );
    assert!(!cached.exists(), "a corrupt download is never kept");
    let (status, completion) = harmony
        .post("/v1/chat/completions", &ask(QUESTION, 4))
        .await;
    assert_eq!(status, 404, "{completion}");
    harmony.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_model_on_s3s_fs_loads_and_answers() {
    let backend = test_util::s3s_fs().await;
    if import_smollm2(&backend).await.is_none() {
        return;
    }
    let work = TempDir::new().expect("tempdir");
    let config = replica_config(&backend, &work.path().join("cloud_cache"));
    let answer = spawn_and_ask(config).await;
    assert!(answer.contains("Paris"), "{answer}");
}

#[tokio::test]
async fn registry_paths_are_refused_clearly_without_a_registry_or_for_unknown_keys() {
    let harmony = TestHarmony::start_with(HarmonyConfig::for_test(), None).await;
    let (status, error) = harmony.post("/models/spawn", &spawn_request()).await;
    assert_eq!(status, 501, "{error}");
    assert_eq!(error["error"]["code"], "not_supported");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("ADAPTIVE_MODEL_REGISTRY")),
        "{error}"
    );
    harmony.stop().await;

    let backend = test_util::local().await;
    let work = TempDir::new().expect("tempdir");
    let harmony =
        TestHarmony::start_with(replica_config(&backend, &work.path().join("cache")), None).await;
    let (status, error) = harmony.post("/models/spawn", &spawn_request()).await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["code"], "not_found");
    harmony.stop().await;
}
