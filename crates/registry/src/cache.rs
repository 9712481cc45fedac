//! The worker-side model cache: `model_registry://<key>` in, a verified local directory out.
//!
//! Layout under the cache directory, one directory per model key:
//!
//! ```text
//! <cache>/<key>/files/<path>      verified model files (what resolve returns)
//! <cache>/<key>/partial/<path>    downloads in progress, never returned
//! <cache>/<key>/verified.json     size and modification time of each file when it verified
//! <cache>/<key>/manifest.json     copy of the registry manifest, written only once every file
//!                                 has been verified: the "this directory is complete" mark
//! <cache>/<key>/last_used         LRU stamp (nanoseconds), rewritten on every resolve
//! ```
//!
//! `resolve` compares the local mark with the registry's manifest. When they agree and every
//! file still has the size and modification time it had when it verified, the directory is
//! returned as is (sha256 was checked when the files arrived; re-hashing gigabytes on every
//! start would defeat the cache). A file written to since, even at the same size, fails that
//! check, as git's index does. Otherwise files whose
//! size and sha256 already match are kept, everything else is fetched: each file is split into
//! `chunk_size` ranges and up to `concurrency` range GETs run at once across all files. The
//! ranges are consumed in order, so a single writer thread appends and hashes each file while
//! later ranges are still in flight: verification costs no second read. A file whose size or
//! sha256 differs from the manifest, or a transfer error, deletes the partial copy and retries
//! it, up to `attempts` rounds, after which resolve fails. A file is moved into `files/` only after it verified, and
//! the mark is written after the last one, so a crash at any point leaves a directory the next
//! resolve repairs rather than trusts.
//!
//! Downloads of 64 MiB or more log their progress (`downloading model`, every tenth, with the
//! rate) so a replica pulling a large model shows what it is doing.
//!
//! Before downloading, least-recently-used models (other than the one being resolved) are
//! removed until the new model fits `budget_bytes`. Unix keeps an evicted file's data alive
//! while it is open or mapped, so evicting a model another engine still has loaded is safe.
//! Resolves within one `ModelCache` are serialized; two processes must not share a cache
//! directory (each harmony replica owns its volume).
//!
//! When the registry is unreachable but a complete copy is cached, that copy is used with a
//! warning: a replica can restart during an object-store outage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};

use crate::error::{RegistryError, Result};
use crate::import::{join_error, sha256_file, walk_files};
use crate::key::ModelKey;
use crate::location::RegistryStore;
use crate::manifest::{Manifest, ManifestFile, ModelFormat, FILES_DIR, MANIFEST_FILE};
use crate::registry::Registry;

const PARTIAL_DIR: &str = "partial";
const LAST_USED_FILE: &str = "last_used";
const VERIFIED_FILE: &str = "verified.json";
/// Smaller downloads finish before a progress line would help.
const PROGRESS_MIN_BYTES: u64 = 64 << 20;
/// Chunks queued between the downloader and the writer thread.
const WRITER_QUEUE: usize = 2;

/// How files are fetched. Defaults: 16 MiB ranges, 8 in flight, 3 attempts per file.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub chunk_size: u64,
    pub concurrency: usize,
    pub attempts: u32,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            chunk_size: 16 << 20,
            concurrency: 8,
            attempts: 3,
        }
    }
}

/// One model directory in the cache, as seen by [`ModelCache::cached_models`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// The directory name (a model key).
    pub key: String,
    /// Bytes on disk, partial downloads included.
    pub size: u64,
    /// Whether the directory holds a complete, verified copy.
    pub complete: bool,
    /// LRU stamp; larger is more recent, 0 when never completed.
    pub last_used: u64,
}

/// A model ready to load from local disk.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// Holds every file of `manifest` at its relative path, verified.
    pub directory: PathBuf,
    pub manifest: Manifest,
}

impl ResolvedModel {
    fn new(directory: PathBuf, manifest: Manifest) -> Self {
        Self {
            directory,
            manifest,
        }
    }

    /// What a loader opens: the `.gguf` file of a GGUF model, the directory of an HF model.
    pub fn load_path(&self) -> PathBuf {
        let gguf_file = self
            .manifest
            .files
            .iter()
            .find(|file| file.path.to_ascii_lowercase().ends_with(".gguf"));
        match (self.manifest.format, gguf_file) {
            (ModelFormat::Gguf, Some(file)) => self.directory.join(&file.path),
            _ => self.directory.clone(),
        }
    }
}

/// Local cache of registry models for one harmony replica. See the module docs.
#[derive(Debug)]
pub struct ModelCache {
    registry: Registry,
    cache_dir: PathBuf,
    budget_bytes: u64,
    download: DownloadOptions,
    resolve_lock: tokio::sync::Mutex<()>,
    last_stamp: AtomicU64,
}

impl ModelCache {
    /// A cache of models from `store` in `cache_dir` (created on first resolve), holding at
    /// most `budget_bytes` of model files.
    pub fn new(store: RegistryStore, cache_dir: impl Into<PathBuf>, budget_bytes: u64) -> Self {
        Self {
            registry: Registry::new(store),
            cache_dir: cache_dir.into(),
            budget_bytes,
            download: DownloadOptions::default(),
            resolve_lock: tokio::sync::Mutex::new(()),
            last_stamp: AtomicU64::new(0),
        }
    }

    pub fn with_download_options(mut self, download: DownloadOptions) -> Self {
        self.download = download;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Returns the local directory holding the model's files (the manifest's relative paths
    /// resolve under it), downloading and verifying whatever is missing. Accepts
    /// `model_registry://<key>` or a bare key.
    pub async fn resolve(&self, model_path: &str) -> Result<PathBuf> {
        Ok(self.resolve_model(model_path).await?.directory)
    }

    /// [`ModelCache::resolve`], also returning the manifest the files were verified against.
    pub async fn resolve_model(&self, model_path: &str) -> Result<ResolvedModel> {
        let key = ModelKey::from_registry_path(model_path)?;
        let _serialized = self.resolve_lock.lock().await;
        let model_dir = self.cache_dir.join(key.as_str());
        let files_dir = model_dir.join(FILES_DIR);
        let local_manifest = read_local_manifest(&key, &model_dir).await;
        let remote_manifest = match self.registry.manifest(&key).await {
            Ok(manifest) => manifest,
            Err(error @ RegistryError::Store { .. }) => {
                let Some(local_manifest) = local_manifest else {
                    return Err(error);
                };
                if !unchanged_since_verified(&model_dir, &local_manifest.files).await {
                    return Err(error);
                }
                tracing::warn!(%key, %error, "registry unreachable, using the cached copy");
                self.touch(&model_dir).await?;
                return Ok(ResolvedModel::new(files_dir, local_manifest));
            }
            Err(error) => return Err(error),
        };
        let cached_copy_is_current = local_manifest
            .is_some_and(|local| local.files == remote_manifest.files)
            && unchanged_since_verified(&model_dir, &remote_manifest.files).await;
        if cached_copy_is_current {
            self.touch(&model_dir).await?;
            return Ok(ResolvedModel::new(files_dir, remote_manifest));
        }

        let needed_bytes = remote_manifest.total_size();
        if needed_bytes > self.budget_bytes {
            return Err(RegistryError::CacheBudgetTooSmall {
                key: key.to_string(),
                needed: needed_bytes,
                budget: self.budget_bytes,
            });
        }
        remove_file_if_present(&model_dir.join(MANIFEST_FILE)).await?;
        self.evict_for(&key, needed_bytes).await?;
        let started = tokio::time::Instant::now();
        self.fill(&key, &remote_manifest, &model_dir).await?;
        write_verified_stamps(&model_dir, &remote_manifest.files).await?;
        let mark_tmp = model_dir.join(format!("{MANIFEST_FILE}.tmp"));
        tokio::fs::write(&mark_tmp, remote_manifest.to_json())
            .await
            .map_err(RegistryError::io("write cache mark"))?;
        tokio::fs::rename(&mark_tmp, model_dir.join(MANIFEST_FILE))
            .await
            .map_err(RegistryError::io("write cache mark"))?;
        self.touch(&model_dir).await?;
        tracing::info!(
            %key,
            bytes = needed_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model cached and verified"
        );
        Ok(ResolvedModel::new(files_dir, remote_manifest))
    }

    /// The model directories in the cache, least recently used first.
    pub async fn cached_models(&self) -> Result<Vec<CachedModel>> {
        let cache_dir = self.cache_dir.clone();
        let mut models = tokio::task::spawn_blocking(move || scan_cache(&cache_dir))
            .await
            .map_err(join_error)??;
        models
            .sort_by(|left, right| (left.last_used, &left.key).cmp(&(right.last_used, &right.key)));
        Ok(models)
    }

    /// Removes least-recently-used models other than `keep` until `incoming` more bytes fit.
    async fn evict_for(&self, keep: &ModelKey, incoming_bytes: u64) -> Result<()> {
        let models = self.cached_models().await?;
        let mut used_bytes: u64 = models
            .iter()
            .filter(|model| model.key != keep.as_str())
            .map(|model| model.size)
            .sum();
        for model in models.iter().filter(|model| model.key != keep.as_str()) {
            if used_bytes + incoming_bytes <= self.budget_bytes {
                break;
            }
            let directory = self.cache_dir.join(&model.key);
            tokio::fs::remove_dir_all(&directory)
                .await
                .map_err(RegistryError::io(format!("evict {}", directory.display())))?;
            used_bytes -= model.size;
            tracing::info!(key = %model.key, bytes = model.size, "evicted model from cache");
        }
        Ok(())
    }

    /// Makes `files/` hold exactly the manifest's files, verified.
    async fn fill(&self, key: &ModelKey, manifest: &Manifest, model_dir: &Path) -> Result<()> {
        let files_dir = model_dir.join(FILES_DIR);
        let partial_dir = model_dir.join(PARTIAL_DIR);
        remove_dir_if_present(&partial_dir).await?;
        let missing = {
            let manifest = manifest.clone();
            let files_dir = files_dir.clone();
            tokio::task::spawn_blocking(move || keep_verified_files(&files_dir, &manifest))
                .await
                .map_err(join_error)??
        };
        if !missing.is_empty() {
            tracing::info!(
                %key,
                files = missing.len(),
                bytes = missing.iter().map(|file| file.size).sum::<u64>(),
                "downloading model from the registry"
            );
        }
        let mut pending = missing;
        let mut last_error = None;
        for attempt in 1..=self.download.attempts.max(1) {
            if pending.is_empty() {
                break;
            }
            let round = self
                .download_round(key, &pending, &partial_dir, &files_dir)
                .await;
            pending = match round {
                Ok(failed) => failed
                    .into_iter()
                    .map(|(file, error)| {
                        tracing::warn!(%key, path = %file.path, attempt, %error, "download failed verification");
                        last_error = Some(error);
                        file
                    })
                    .collect(),
                Err(error) => {
                    tracing::warn!(%key, attempt, %error, "download failed");
                    last_error = Some(error);
                    pending
                }
            };
            remove_dir_if_present(&partial_dir).await?;
        }
        match (pending.is_empty(), last_error) {
            (true, _) => Ok(()),
            (false, Some(error)) => Err(error),
            (false, None) => Err(RegistryError::InvalidManifest {
                key: key.to_string(),
                reason: "download made no progress".to_owned(),
            }),
        }
    }

    /// Fetches `files` into `partial/` with parallel range requests, verifies each and moves
    /// the good ones into `files/`. Returns the files that failed verification.
    ///
    /// Ranges are requested `concurrency` at a time but consumed in order (`buffered`), so one
    /// blocking writer appends each file sequentially and hashes it as it goes: verification
    /// overlaps the transfer instead of re-reading the file afterwards, and memory stays
    /// bounded by `concurrency + WRITER_QUEUE` chunks.
    async fn download_round(
        &self,
        key: &ModelKey,
        files: &[ManifestFile],
        partial_dir: &Path,
        files_dir: &Path,
    ) -> Result<Vec<(ManifestFile, RegistryError)>> {
        let chunk_size = self.download.chunk_size.max(1);
        let objects: Vec<ObjectPath> = files
            .iter()
            .map(|file| {
                self.registry
                    .store()
                    .path(&Manifest::file_object(key, &file.path))
            })
            .collect();
        let (chunk_sender, chunk_receiver) = tokio::sync::mpsc::channel(WRITER_QUEUE);
        let writer = {
            let files = files.to_vec();
            let partial_dir = partial_dir.to_path_buf();
            tokio::task::spawn_blocking(move || {
                write_and_verify(&files, &partial_dir, chunk_receiver)
            })
        };
        let chunks = files.iter().enumerate().flat_map(|(index, file)| {
            (0..file.size.div_ceil(chunk_size)).map(move |chunk| {
                let start = chunk * chunk_size;
                (index, start..(start + chunk_size).min(file.size))
            })
        });
        let store = self.registry.object_store();
        let objects = &objects;
        let mut fetched = futures::stream::iter(chunks)
            .map(|(index, range)| async move {
                let object = &objects[index];
                store
                    .get_range(object, range)
                    .await
                    .map(|bytes| (index, bytes))
                    .map_err(RegistryError::store(format!("download {object}")))
            })
            .buffered(self.download.concurrency.max(1));
        let mut transfer_error = None;
        let mut progress = DownloadProgress::new(key, files.iter().map(|file| file.size).sum());
        while let Some(chunk) = fetched.next().await {
            match chunk {
                Ok(chunk) => {
                    progress.advance(chunk.1.len() as u64);
                    if chunk_sender.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(error) => {
                    transfer_error = Some(error);
                    break;
                }
            }
        }
        drop(fetched);
        drop(chunk_sender);
        let outcomes = writer.await.map_err(join_error)??;
        if let Some(error) = transfer_error {
            return Err(error);
        }

        let mut failed = Vec::new();
        for (file, outcome) in files.iter().zip(outcomes) {
            let partial_path = partial_dir.join(&file.path);
            match outcome {
                Ok(()) => {
                    let final_path = files_dir.join(&file.path);
                    create_parent(&final_path).await?;
                    tokio::fs::rename(&partial_path, &final_path)
                        .await
                        .map_err(RegistryError::io(format!("move {}", file.path)))?;
                }
                Err(error) => {
                    remove_file_if_present(&partial_path).await?;
                    failed.push((file.clone(), error));
                }
            }
        }
        Ok(failed)
    }

    async fn touch(&self, model_dir: &Path) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        // Strictly increasing within the process, so LRU order never depends on clock ties.
        let previous = self
            .last_stamp
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(0);
        let stamp = now.max(previous + 1);
        tokio::fs::write(model_dir.join(LAST_USED_FILE), stamp.to_string())
            .await
            .map_err(RegistryError::io("write last_used"))
    }
}

/// Logs a large download every tenth of the way, with the rate so far.
struct DownloadProgress<'a> {
    key: &'a ModelKey,
    total_bytes: u64,
    done_bytes: u64,
    next_tenth: u64,
    started: tokio::time::Instant,
}

impl<'a> DownloadProgress<'a> {
    fn new(key: &'a ModelKey, total_bytes: u64) -> Self {
        Self {
            key,
            total_bytes,
            done_bytes: 0,
            next_tenth: 1,
            started: tokio::time::Instant::now(),
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done_bytes += bytes;
        if self.total_bytes < PROGRESS_MIN_BYTES {
            return;
        }
        let tenths = self.done_bytes * 10 / self.total_bytes;
        if tenths < self.next_tenth {
            return;
        }
        self.next_tenth = tenths + 1;
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let mib_per_second = self.done_bytes as f64 / f64::from(1 << 20) / seconds;
        tracing::info!(
            key = %self.key,
            percent = tenths * 10,
            done_bytes = self.done_bytes,
            total_bytes = self.total_bytes,
            mib_per_second = (mib_per_second * 10.0).round() / 10.0,
            "downloading model"
        );
    }
}

/// Appends in-order chunks `(file index, bytes)` to each file's partial copy, hashing as it
/// writes, and checks every file against the manifest. Fails only on local I/O errors; a file
/// that does not match is an `Err` in its slot of the returned vector.
fn write_and_verify(
    files: &[ManifestFile],
    partial_dir: &Path,
    mut chunks: tokio::sync::mpsc::Receiver<(usize, Bytes)>,
) -> Result<Vec<Result<()>>> {
    let mut writer = VerifyingWriter {
        files,
        partial_dir,
        outcomes: Vec::with_capacity(files.len()),
        current: None,
    };
    while let Some((index, bytes)) = chunks.blocking_recv() {
        writer.write(index, &bytes)?;
    }
    writer.finish()
}

struct VerifyingWriter<'a> {
    files: &'a [ManifestFile],
    partial_dir: &'a Path,
    /// One outcome per file, in manifest order, for every file before `current`.
    outcomes: Vec<Result<()>>,
    current: Option<PartialFile>,
}

struct PartialFile {
    index: usize,
    file: std::fs::File,
    hasher: Sha256,
    written: u64,
}

impl VerifyingWriter<'_> {
    fn write(&mut self, index: usize, bytes: &[u8]) -> Result<()> {
        let is_current = self
            .current
            .as_ref()
            .is_some_and(|partial| partial.index == index);
        if !is_current {
            self.close_files_before(index)?;
            self.current = Some(PartialFile {
                index,
                file: self.create(index)?,
                hasher: Sha256::new(),
                written: 0,
            });
        }
        if let Some(partial) = self.current.as_mut() {
            partial
                .file
                .write_all(bytes)
                .map_err(RegistryError::io(format!(
                    "write {}",
                    self.files[index].path
                )))?;
            partial.hasher.update(bytes);
            partial.written += bytes.len() as u64;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Result<()>>> {
        self.close_files_before(self.files.len())?;
        Ok(self.outcomes)
    }

    /// Checks the open file, then every file before `index` that got no chunk (empty files,
    /// or files cut off by a failed transfer).
    fn close_files_before(&mut self, index: usize) -> Result<()> {
        if let Some(partial) = self.current.take() {
            let outcome = self.check(partial.index, partial.hasher, partial.written);
            self.outcomes.push(outcome);
        }
        while self.outcomes.len() < index {
            let next = self.outcomes.len();
            self.create(next)?;
            let outcome = self.check(next, Sha256::new(), 0);
            self.outcomes.push(outcome);
        }
        Ok(())
    }

    fn create(&self, index: usize) -> Result<std::fs::File> {
        let path = self.partial_dir.join(&self.files[index].path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(RegistryError::io(format!("create {}", parent.display())))?;
        }
        std::fs::File::create(&path)
            .map_err(RegistryError::io(format!("create {}", path.display())))
    }

    fn check(&self, index: usize, hasher: Sha256, written: u64) -> Result<()> {
        let expected = &self.files[index];
        if written != expected.size {
            return Err(RegistryError::SizeMismatch {
                path: expected.path.clone(),
                expected: expected.size,
                actual: written,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != expected.sha256 {
            return Err(RegistryError::ChecksumMismatch {
                path: expected.path.clone(),
                expected: expected.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

async fn read_local_manifest(key: &ModelKey, model_dir: &Path) -> Option<Manifest> {
    let bytes = tokio::fs::read(model_dir.join(MANIFEST_FILE)).await.ok()?;
    Manifest::from_json(key, &bytes).ok()
}

/// A file's size and modification time (nanoseconds since the epoch); changes when the file is
/// written to.
type FileStamp = (u64, u64);

async fn file_stamp(path: &Path) -> Option<FileStamp> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    if !metadata.is_file() {
        return None;
    }
    let modified = metadata
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((metadata.len(), modified.as_nanos() as u64))
}

/// Records the stamp of every verified file (before the completion mark is written).
async fn write_verified_stamps(model_dir: &Path, files: &[ManifestFile]) -> Result<()> {
    let files_dir = model_dir.join(FILES_DIR);
    let mut stamps = std::collections::BTreeMap::new();
    for file in files {
        let path = files_dir.join(&file.path);
        let stamp = file_stamp(&path).await.ok_or_else(|| {
            RegistryError::io(format!("stat {}", path.display()))(std::io::Error::other(
                "verified file vanished",
            ))
        })?;
        stamps.insert(file.path.clone(), stamp);
    }
    let json = serde_json::to_vec(&stamps).map_err(|error| {
        RegistryError::io("write verified stamps")(std::io::Error::other(error))
    })?;
    tokio::fs::write(model_dir.join(VERIFIED_FILE), json)
        .await
        .map_err(RegistryError::io("write verified stamps"))
}

/// Whether every file has the manifest's size and the stamp it had when it verified. False
/// when stamps are missing (a cache from before they existed): the files are then re-hashed.
async fn unchanged_since_verified(model_dir: &Path, files: &[ManifestFile]) -> bool {
    let Ok(json) = tokio::fs::read(model_dir.join(VERIFIED_FILE)).await else {
        return false;
    };
    let Ok(stamps) = serde_json::from_slice::<std::collections::BTreeMap<String, FileStamp>>(&json)
    else {
        return false;
    };
    let files_dir = model_dir.join(FILES_DIR);
    for file in files {
        let current = file_stamp(&files_dir.join(&file.path)).await;
        let unchanged = current
            .is_some_and(|stamp| stamp.0 == file.size && stamps.get(&file.path) == Some(&stamp));
        if !unchanged {
            return false;
        }
    }
    true
}

/// Deletes files that are not in the manifest or do not match it; returns the files to fetch.
fn keep_verified_files(files_dir: &Path, manifest: &Manifest) -> Result<Vec<ManifestFile>> {
    if files_dir.exists() {
        for local in walk_files(files_dir)? {
            let wanted = manifest
                .files
                .iter()
                .any(|file| file.path == local.relative_path);
            if !wanted {
                std::fs::remove_file(&local.absolute_path).map_err(RegistryError::io(format!(
                    "remove stale {}",
                    local.relative_path
                )))?;
            }
        }
    }
    let mut missing = Vec::new();
    for file in &manifest.files {
        let local_path = files_dir.join(&file.path);
        if !local_path.exists() {
            missing.push(file.clone());
            continue;
        }
        if let Err(error) = verify_file(&local_path, file) {
            tracing::warn!(path = %file.path, %error, "cached file is corrupt, fetching again");
            std::fs::remove_file(&local_path)
                .map_err(RegistryError::io(format!("remove corrupt {}", file.path)))?;
            missing.push(file.clone());
        }
    }
    Ok(missing)
}

fn verify_file(path: &Path, expected: &ManifestFile) -> Result<()> {
    let size = std::fs::metadata(path)
        .map_err(RegistryError::io(format!("stat {}", path.display())))?
        .len();
    if size != expected.size {
        return Err(RegistryError::SizeMismatch {
            path: expected.path.clone(),
            expected: expected.size,
            actual: size,
        });
    }
    let actual = sha256_file(path)?;
    if actual != expected.sha256 {
        return Err(RegistryError::ChecksumMismatch {
            path: expected.path.clone(),
            expected: expected.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

fn scan_cache(cache_dir: &Path) -> Result<Vec<CachedModel>> {
    let entries = match std::fs::read_dir(cache_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(RegistryError::io("list cache directory")(error)),
    };
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(RegistryError::io("list cache directory"))?;
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let Some(key) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let directory = entry.path();
        let complete = directory.join(MANIFEST_FILE).exists();
        // Only directories this cache created are ever sized or evicted.
        let ours =
            complete || directory.join(FILES_DIR).is_dir() || directory.join(PARTIAL_DIR).is_dir();
        if ModelKey::parse(&key).is_err() || !ours {
            continue;
        }
        let last_used = std::fs::read_to_string(directory.join(LAST_USED_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .filter(|_| complete)
            .unwrap_or(0);
        let size = walk_files(&directory)?.iter().map(|file| file.size).sum();
        models.push(CachedModel {
            key,
            size,
            complete,
            last_used,
        });
    }
    Ok(models)
}

async fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(RegistryError::io(format!("create {}", parent.display())))?;
    }
    Ok(())
}

async fn remove_file_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(RegistryError::io(
            format!("remove {}", path.display()),
        )(error)),
        _ => Ok(()),
    }
}

async fn remove_dir_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_dir_all(path).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(RegistryError::io(
            format!("remove {}", path.display()),
        )(error)),
        _ => Ok(()),
    }
}
