//! Importing a model into the registry: an HF-layout directory or a single `.gguf` file.
//!
//! Each file streams once from disk: a blocking reader thread reads part-sized chunks, feeds
//! them to a sha256 hasher and hands them to the uploader, which keeps up to
//! `max_concurrent_parts` multipart parts in flight (object_store's `WriteMultipart`). Files
//! at or below one part are a single PUT.
//!
//! ## Resume
//!
//! After a file's upload completes, a small marker `<key>/.import/<path>.json` records its size
//! and sha256. A re-run hashes the local file and skips it when the marker and the uploaded
//! object's size agree with the local bytes; anything else is uploaded again from the start.
//! This is file-level resume, chosen deliberately: object_store exposes no way to continue
//! another process's multipart upload (the upload id and the uploaded parts' ETags live only
//! in the writer), and the local-directory backend has no multipart state at all, so part-level
//! resume would be S3-only code below the abstraction. Models are a handful of files of a few
//! GB at most, so the worst case re-sends one file. A killed process leaves its S3 multipart
//! upload open; buckets should carry an `AbortIncompleteMultipartUpload` lifecycle rule, while
//! uploads that fail in-process are aborted here.
//!
//! The manifest is written last and the markers are removed after it, so a model is either
//! complete and visible or invisible.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use object_store::path::Path as ObjectPath;
use object_store::{PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{RegistryError, Result};
use crate::inspect::{inspect_gguf, inspect_hf_directory, ModelFacts};
use crate::key::ModelKey;
use crate::manifest::{Manifest, ManifestFile, ModelFormat, MANIFEST_VERSION};
use crate::registry::Registry;

const IMPORT_MARKERS_DIR: &str = ".import";

/// What to import and under which key.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// An HF-layout directory (with `config.json`) or a `.gguf` file.
    pub source: PathBuf,
    pub key: ModelKey,
    /// Display name; defaults to the key.
    pub name: Option<String>,
}

/// How to upload. The defaults suit S3: 16 MiB parts (S3's minimum is 5 MiB), 8 in flight.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub part_size: usize,
    pub max_concurrent_parts: usize,
    /// Draw indicatif progress bars on stderr.
    pub show_progress: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            part_size: 16 << 20,
            max_concurrent_parts: 8,
            show_progress: false,
        }
    }
}

/// The outcome of an import, for the CLI's summary.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub manifest: Manifest,
    pub uploaded_files: usize,
    pub uploaded_bytes: u64,
    /// Files a previous, interrupted run had already uploaded.
    pub resumed_files: usize,
    pub resumed_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ImportMarker {
    size: u64,
    sha256: String,
}

/// A regular file found under an import source.
#[derive(Debug, Clone)]
pub(crate) struct LocalFile {
    pub relative_path: String,
    pub absolute_path: PathBuf,
    pub size: u64,
}

struct ImportSource {
    format: ModelFormat,
    facts: ModelFacts,
    files: Vec<LocalFile>,
}

/// Uploads the model and writes its manifest. Fails with
/// [`RegistryError::ModelAlreadyExists`] when the key already has a manifest.
pub async fn import_model(
    registry: &Registry,
    request: &ImportRequest,
    options: &ImportOptions,
) -> Result<ImportSummary> {
    let key = &request.key;
    if registry.exists(key).await? {
        return Err(RegistryError::ModelAlreadyExists {
            key: key.to_string(),
        });
    }
    let source_path = request.source.clone();
    let source = tokio::task::spawn_blocking(move || scan_source(&source_path))
        .await
        .map_err(join_error)??;
    let total_bytes: u64 = source.files.iter().map(|file| file.size).sum();
    let progress = progress_bar(total_bytes, options.show_progress);
    let mut summary_files = Vec::with_capacity(source.files.len());
    let mut uploaded_files = 0;
    let mut uploaded_bytes = 0;
    let mut resumed_files = 0;
    let mut resumed_bytes = 0;
    for file in &source.files {
        progress.set_message(file.relative_path.clone());
        let uploader = FileUploader {
            registry,
            key,
            file,
            options,
            progress: &progress,
        };
        if let Some(sha256) = uploader.already_uploaded().await? {
            tracing::info!(%key, path = %file.relative_path, "file already uploaded, skipping");
            progress.inc(file.size);
            resumed_files += 1;
            resumed_bytes += file.size;
            summary_files.push(manifest_file(file, sha256));
            continue;
        }
        let sha256 = uploader.upload().await?;
        uploaded_files += 1;
        uploaded_bytes += file.size;
        summary_files.push(manifest_file(file, sha256));
    }
    progress.finish_and_clear();

    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        key: key.clone(),
        name: request.name.clone().unwrap_or_else(|| key.to_string()),
        format: source.format,
        architecture: source.facts.architecture,
        parameters: source.facts.parameters,
        context_length: source.facts.context_length,
        quantization: source.facts.quantization,
        files: summary_files,
        created_at: Utc::now(),
    };
    let manifest_path = registry.store().path(&Manifest::manifest_object(key));
    registry
        .object_store()
        .put(&manifest_path, PutPayload::from(manifest.to_json()))
        .await
        .map_err(RegistryError::store(format!("write manifest of {key}")))?;
    remove_markers(registry, key).await;
    Ok(ImportSummary {
        manifest,
        uploaded_files,
        uploaded_bytes,
        resumed_files,
        resumed_bytes,
    })
}

fn manifest_file(file: &LocalFile, sha256: String) -> ManifestFile {
    ManifestFile {
        path: file.relative_path.clone(),
        size: file.size,
        sha256,
    }
}

fn progress_bar(total_bytes: u64, visible: bool) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total_bytes), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

async fn remove_markers(registry: &Registry, key: &ModelKey) {
    use futures::{StreamExt, TryStreamExt};
    let prefix = registry
        .store()
        .path(&format!("{key}/{IMPORT_MARKERS_DIR}"));
    let store = registry.object_store();
    let locations = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .boxed();
    let removed: std::result::Result<Vec<_>, _> =
        store.delete_stream(locations).try_collect().await;
    if let Err(error) = removed {
        // Harmless: markers are only read by an import of a key that has no manifest.
        tracing::warn!(%key, %error, "could not remove import markers");
    }
}

struct FileUploader<'a> {
    registry: &'a Registry,
    key: &'a ModelKey,
    file: &'a LocalFile,
    options: &'a ImportOptions,
    progress: &'a ProgressBar,
}

impl FileUploader<'_> {
    fn object_path(&self) -> ObjectPath {
        let relative = Manifest::file_object(self.key, &self.file.relative_path);
        self.registry.store().path(&relative)
    }

    fn marker_path(&self) -> ObjectPath {
        let relative = format!(
            "{}/{IMPORT_MARKERS_DIR}/{}.json",
            self.key, self.file.relative_path
        );
        self.registry.store().path(&relative)
    }

    /// The file's sha256 when an earlier run finished uploading exactly these bytes.
    async fn already_uploaded(&self) -> Result<Option<String>> {
        let store = self.registry.object_store();
        let marker_bytes = match store.get(&self.marker_path()).await {
            Ok(result) => result.bytes().await.ok(),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(error) => return Err(RegistryError::store("read import marker")(error)),
        };
        let Some(marker) =
            marker_bytes.and_then(|bytes| serde_json::from_slice::<ImportMarker>(&bytes).ok())
        else {
            return Ok(None);
        };
        if marker.size != self.file.size {
            return Ok(None);
        }
        match store.head(&self.object_path()).await {
            Ok(meta) if meta.size == self.file.size => {}
            Ok(_) | Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(RegistryError::store("head uploaded file")(error)),
        }
        let path = self.file.absolute_path.clone();
        let local_sha256 = tokio::task::spawn_blocking(move || sha256_file(&path))
            .await
            .map_err(join_error)??;
        Ok((local_sha256 == marker.sha256).then_some(local_sha256))
    }

    /// Uploads the file (multipart when larger than a part), then writes its marker.
    async fn upload(&self) -> Result<String> {
        let store = self.registry.object_store();
        let object_path = self.object_path();
        let part_size = self.options.part_size.max(1);
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(2);
        let path = self.file.absolute_path.clone();
        let reader = tokio::task::spawn_blocking(move || read_and_hash(&path, part_size, sender));
        let context = format!("upload {}", self.file.relative_path);
        let uploaded = if self.file.size as usize <= part_size {
            let mut chunks = Vec::new();
            while let Some(chunk) = receiver.recv().await {
                self.progress.inc(chunk.len() as u64);
                chunks.push(chunk);
            }
            let payload = PutPayload::from_iter(chunks);
            store
                .put(&object_path, payload)
                .await
                .map(|_| ())
                .map_err(RegistryError::store(context))
        } else {
            let upload = store
                .put_multipart(&object_path)
                .await
                .map_err(RegistryError::store(format!("start {context}")))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
            let mut failure = None;
            while let Some(chunk) = receiver.recv().await {
                if let Err(error) = writer
                    .wait_for_capacity(self.options.max_concurrent_parts)
                    .await
                {
                    failure = Some(error);
                    break;
                }
                self.progress.inc(chunk.len() as u64);
                writer.put(chunk);
            }
            // Dropping the receiver stops the reader if we bailed out early.
            drop(receiver);
            match failure {
                Some(error) => {
                    if let Err(abort_error) = writer.abort().await {
                        tracing::warn!(error = %abort_error, "could not abort multipart upload");
                    }
                    Err(RegistryError::store(context)(error))
                }
                None => writer
                    .finish()
                    .await
                    .map(|_| ())
                    .map_err(RegistryError::store(context)),
            }
        };
        let read_result = reader.await.map_err(join_error)?;
        uploaded?;
        let (sha256, bytes_read) = read_result?;
        if bytes_read != self.file.size {
            // The file changed while we read it; the object does not match what we scanned.
            return Err(RegistryError::SizeMismatch {
                path: self.file.absolute_path.display().to_string(),
                expected: self.file.size,
                actual: bytes_read,
            });
        }
        let marker = ImportMarker {
            size: self.file.size,
            sha256: sha256.clone(),
        };
        let marker_json = serde_json::to_vec(&marker).unwrap_or_default();
        store
            .put(&self.marker_path(), PutPayload::from(marker_json))
            .await
            .map_err(RegistryError::store("write import marker"))?;
        Ok(sha256)
    }
}

/// Reads `path` in `part_size` chunks, hashing as it goes and sending each chunk on. Stops
/// quietly when the receiver is gone (the upload failed).
fn read_and_hash(
    path: &Path,
    part_size: usize,
    sender: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(String, u64)> {
    let context = || format!("read {}", path.display());
    let mut file = std::fs::File::open(path).map_err(RegistryError::io(context()))?;
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    loop {
        let mut buffer = Vec::with_capacity(part_size);
        let read = (&mut file)
            .take(part_size as u64)
            .read_to_end(&mut buffer)
            .map_err(RegistryError::io(context()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer);
        total += read as u64;
        if sender.blocking_send(Bytes::from(buffer)).is_err() {
            break;
        }
    }
    Ok((hex::encode(hasher.finalize()), total))
}

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let context = || format!("hash {}", path.display());
    let mut file = std::fs::File::open(path).map_err(RegistryError::io(context()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(RegistryError::io(context()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub(crate) fn join_error(error: tokio::task::JoinError) -> RegistryError {
    RegistryError::Io {
        context: "blocking task".to_owned(),
        source: std::io::Error::other(error),
    }
}

fn scan_source(source: &Path) -> Result<ImportSource> {
    let unsupported = |reason: &str| RegistryError::UnsupportedSource {
        path: source.display().to_string(),
        reason: reason.to_owned(),
    };
    let metadata = std::fs::metadata(source)
        .map_err(RegistryError::io(format!("stat {}", source.display())))?;
    if metadata.is_file() {
        let is_gguf = source
            .extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("gguf"));
        let file_name = source.file_name().and_then(|name| name.to_str());
        let (true, Some(file_name)) = (is_gguf, file_name) else {
            return Err(unsupported("a single file must be a .gguf"));
        };
        let facts = inspect_gguf(source)?;
        return Ok(ImportSource {
            format: ModelFormat::Gguf,
            facts,
            files: vec![LocalFile {
                relative_path: file_name.to_owned(),
                absolute_path: source.to_path_buf(),
                size: metadata.len(),
            }],
        });
    }
    let files = walk_files(source)?;
    if !files.iter().any(|file| file.relative_path == "config.json") {
        return Err(unsupported(
            "a directory must be an HF layout with config.json (pass a .gguf file directly)",
        ));
    }
    let safetensors: Vec<&Path> = files
        .iter()
        .filter(|file| file.relative_path.ends_with(".safetensors"))
        .map(|file| file.absolute_path.as_path())
        .collect();
    if safetensors.is_empty() {
        return Err(unsupported("no .safetensors files"));
    }
    let facts = inspect_hf_directory(source, &safetensors);
    Ok(ImportSource {
        format: ModelFormat::HfSafetensors,
        facts,
        files,
    })
}

/// Regular files under `root`, sorted by relative path; hidden entries (`.git`, `.cache`) are
/// skipped, and so are symlinks to directories (HF cache snapshots link files, not dirs).
pub(crate) fn walk_files(root: &Path) -> Result<Vec<LocalFile>> {
    let mut files = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((directory, relative_directory)) = pending.pop() {
        let entries = std::fs::read_dir(&directory)
            .map_err(RegistryError::io(format!("list {}", directory.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(RegistryError::io(format!("list {}", directory.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let relative_path = if relative_directory.is_empty() {
                name
            } else {
                format!("{relative_directory}/{name}")
            };
            let absolute_path = entry.path();
            let metadata = std::fs::metadata(&absolute_path).map_err(RegistryError::io(
                format!("stat {}", absolute_path.display()),
            ))?;
            if metadata.is_dir() {
                if !entry.file_type().is_ok_and(|kind| kind.is_symlink()) {
                    pending.push((absolute_path, relative_path));
                }
            } else if metadata.is_file() {
                files.push(LocalFile {
                    relative_path,
                    absolute_path,
                    size: metadata.len(),
                });
            }
        }
    }
    files.sort_by(|left, right| left.relative_path.cmp(&right.relative_path));
    Ok(files)
}
