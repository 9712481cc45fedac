//! Chunked uploads: remote clients send a large file (a dataset, a model) in numbered parts,
//! which a later step (dataset or model import) reads back in order. The REST surface is
//! [`crate::http::uploads`]; this module owns the rules and the storage.
//!
//! # Where things live
//!
//! - Sessions and received parts are rows of the metadata store (`upload_sessions`,
//!   `upload_parts`), so a session survives a control-plane restart and every replica behind
//!   the load balancer sees the same one.
//! - Part bytes are objects `.uploads/<session id>/<part number>` under the model registry root
//!   (S3 or a local directory, opened once as [`ModelStorage`]). Model keys may not start with
//!   `.`, so these never collide with a model and the registry's listing skips them.
//!
//! # Rules
//!
//! - A session belongs to its creator: for anyone else it does not exist (404), whatever their
//!   permissions.
//! - Parts are numbered `1..=total_parts_count`, in any order. Receiving a part again replaces
//!   it (clients retry failed parts). The object is written before its row, so a part listed as
//!   completed is always readable. A part written while its session is being completed may
//!   still replace the object the import reads; clients do not do that (they complete after
//!   the last part's answer).
//! - Limits ([`UploadLimits`]): part size, number of parts, total size. The total is checked
//!   against the parts already recorded, so parts racing each other may overshoot it by at most
//!   one part each.
//! - A part streams from the request body to its object ([`Uploads::put_part`]): memory per
//!   part upload is bounded by [`PART_WRITE_BUFFER_BYTES`] and a couple of pieces in flight,
//!   whatever the part size; the limits are enforced on the announced length and again on the
//!   bytes as they arrive. Part uploads have their own timeout
//!   (`server.upload_part_timeout_seconds`).
//! - [`Uploads::complete`] hands all parts to an import and freezes the session: later parts
//!   are refused with `conflict`.
//! - Sessions without a part received for [`UploadLimits::idle_ttl`] (completed ones included)
//!   are removed, objects first, then rows, by [`Uploads::spawn_sweeper`] in every replica (two
//!   replicas removing the same session is harmless), except the sessions of datasets still
//!   pending or processing: their parts are the only copy of an acknowledged file until the
//!   dataset is READY or FAILED (see [`crate::datasets`]).

use std::time::Duration;

use adaptive_api_types::ErrorCode;
use adaptive_registry::RegistryStore;
use axum::body::Bytes;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::model_storage::{ModelStorage, ModelStorageError};
use crate::store::{MetadataStore, StoreError, UploadPart, UploadSession};

/// The largest part accepted. The SDK sends at most 100 MB per part.
pub const DEFAULT_MAX_PART_BYTES: usize = 128 << 20;
/// The most parts a session may have (the SDK's `MAX_PARTS_COUNT`).
pub const DEFAULT_MAX_PARTS: i64 = 10_000;
/// The largest file a session may carry.
pub const DEFAULT_MAX_TOTAL_BYTES: i64 = 100 << 30;
/// A session with no part received for this long is abandoned and removed.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often each replica looks for abandoned sessions.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// How much of a part is buffered before it goes to object storage in pieces of this size (a
/// multipart upload; S3 wants pieces of at least 5 MiB). The SDK's 5 MB parts fit in one.
pub const PART_WRITE_BUFFER_BYTES: usize = 8 << 20;
/// How many of those pieces may be in flight at once.
const PART_WRITE_CONCURRENCY: usize = 2;

/// The object prefix of every session, under the registry root.
const UPLOADS_PREFIX: &str = ".uploads";

/// Size limits and the abandonment policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    pub max_part_bytes: usize,
    pub max_parts: i64,
    pub max_total_bytes: i64,
    pub idle_ttl: Duration,
    pub sweep_interval: Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_part_bytes: DEFAULT_MAX_PART_BYTES,
            max_parts: DEFAULT_MAX_PARTS,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            idle_ttl: DEFAULT_IDLE_TTL,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Unknown, removed, or someone else's.
    #[error("upload session '{0}' not found")]
    SessionNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("upload session '{0}' is already completed")]
    Completed(String),
    #[error("upload session '{session_id}' is missing parts {missing:?}")]
    Incomplete {
        session_id: String,
        missing: Vec<i64>,
    },
    /// Its parts are being made into a dataset, which needs them until it is READY or FAILED.
    #[error(
        "upload session '{session_id}' is being processed into dataset '{dataset_id}'; its parts \
         are removed when that ends (delete the dataset to stop it)"
    )]
    InUse {
        session_id: String,
        dataset_id: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] ModelStorageError),
    #[error("object storage failed to {action}")]
    Objects {
        action: String,
        #[source]
        source: object_store::Error,
    },
    /// Writing a part's bytes to object storage failed.
    #[error("object storage failed to write part {part_number}")]
    PartWrite {
        part_number: i64,
        #[source]
        source: std::io::Error,
    },
}

impl UploadError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            UploadError::SessionNotFound(_) => ErrorCode::NotFound,
            UploadError::Invalid(_) => ErrorCode::InvalidRequest,
            UploadError::Completed(_)
            | UploadError::Incomplete { .. }
            | UploadError::InUse { .. } => ErrorCode::Conflict,
            UploadError::Store(error) => error.error_code(),
            UploadError::Storage(error) => error.error_code(),
            UploadError::Objects { .. } | UploadError::PartWrite { .. } => ErrorCode::Unavailable,
        }
    }

    fn objects(action: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        let action = action.into();
        move |source| UploadError::Objects { action, source }
    }
}

/// What a client asks for when opening a session.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    pub content_type: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub total_parts_count: i64,
}

/// A session with the parts received so far.
#[derive(Debug, Clone)]
pub struct UploadProgress {
    pub session: UploadSession,
    pub parts: Vec<UploadPart>,
}

impl UploadProgress {
    pub fn uploaded_bytes(&self) -> i64 {
        self.parts.iter().map(|part| part.size_bytes).sum()
    }

    pub fn missing_parts(&self) -> Vec<i64> {
        let received: std::collections::BTreeSet<i64> =
            self.parts.iter().map(|part| part.part_number).collect();
        (1..=self.session.total_parts_count)
            .filter(|number| !received.contains(number))
            .collect()
    }
}

/// A session whose parts an import may now read, in order.
#[derive(Debug, Clone)]
pub struct CompletedUpload {
    pub session: UploadSession,
    pub parts: Vec<UploadPart>,
    pub total_bytes: i64,
}

/// The chunked-upload service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Uploads {
    store: MetadataStore,
    storage: ModelStorage,
    limits: UploadLimits,
}

impl Uploads {
    pub fn new(store: MetadataStore, storage: ModelStorage, limits: UploadLimits) -> Self {
        Self {
            store,
            storage,
            limits,
        }
    }

    pub fn with_limits(self, limits: UploadLimits) -> Self {
        Self { limits, ..self }
    }

    pub fn limits(&self) -> UploadLimits {
        self.limits
    }

    pub async fn init(
        &self,
        owner: &str,
        request: NewUpload,
    ) -> Result<UploadSession, UploadError> {
        if !(1..=self.limits.max_parts).contains(&request.total_parts_count) {
            return Err(UploadError::Invalid(format!(
                "total_parts_count must be between 1 and {}, got {}",
                self.limits.max_parts, request.total_parts_count
            )));
        }
        let metadata = match request.metadata {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(object)) => {
                Some(serde_json::Value::Object(object).to_string())
            }
            Some(_) => {
                return Err(UploadError::Invalid(
                    "metadata must be a JSON object".to_owned(),
                ))
            }
        };
        let now = chrono::Utc::now().timestamp_millis();
        let session = UploadSession {
            id: uuid::Uuid::new_v4().to_string(),
            created_by: owner.to_owned(),
            content_type: request.content_type,
            metadata,
            total_parts_count: request.total_parts_count,
            created_at: now,
            updated_at: now,
            completed_at: None,
        };
        self.store.insert_upload_session(&session).await?;
        tracing::info!(session_id = %session.id, owner, parts = session.total_parts_count, "upload session opened");
        Ok(session)
    }

    /// Stores part `part_number` of the caller's session from a stream of chunks, replacing an
    /// earlier copy. The part is written as it arrives (at most [`PART_WRITE_BUFFER_BYTES`]
    /// buffered, a few more in flight to S3), never held whole; the limits are checked against
    /// the `announced_length` (`Content-Length`) first, then against the bytes received, and a
    /// part that breaks them, or whose body cannot be read, leaves the earlier copy in place.
    pub async fn put_part<S, E>(
        &self,
        owner: &str,
        session_id: &str,
        part_number: i64,
        announced_length: Option<u64>,
        body: S,
    ) -> Result<UploadPart, UploadError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let progress = self.progress(owner, session_id).await?;
        let session = &progress.session;
        if session.completed_at.is_some() {
            return Err(UploadError::Completed(session.id.clone()));
        }
        if !(1..=session.total_parts_count).contains(&part_number) {
            return Err(UploadError::Invalid(format!(
                "part_number must be between 1 and {}, got {part_number}",
                session.total_parts_count
            )));
        }
        if let Some(length) = announced_length {
            self.check_part_size(usize::try_from(length).unwrap_or(usize::MAX))?;
        }
        let other_parts_bytes: i64 = progress
            .parts
            .iter()
            .filter(|received| received.part_number != part_number)
            .map(|received| received.size_bytes)
            .sum();
        let limits = PartLimits {
            max_part_bytes: self.limits.max_part_bytes,
            room_in_file: self
                .limits
                .max_total_bytes
                .saturating_sub(other_parts_bytes),
            max_total_bytes: self.limits.max_total_bytes,
        };
        let objects = self.storage.objects()?;
        let path = part_path(&objects, &session.id, part_number);
        let mut writer = BufWriter::with_capacity(
            objects.object_store().clone(),
            path.clone(),
            PART_WRITE_BUFFER_BYTES,
        )
        .with_max_concurrency(PART_WRITE_CONCURRENCY);
        let size_bytes = match copy_part(body, &mut writer, part_number, limits).await {
            Ok(size_bytes) => size_bytes,
            Err(error) => {
                if let Err(abort_error) = writer.abort().await {
                    tracing::warn!(session_id = %session.id, part_number, error = %abort_error, "cannot abort the write of a refused part");
                }
                return Err(error);
            }
        };
        writer
            .shutdown()
            .await
            .map_err(|source| UploadError::PartWrite {
                part_number,
                source,
            })?;
        let part = UploadPart {
            part_number,
            size_bytes,
        };
        match self.store.record_upload_part(&session.id, part).await {
            Ok(()) => Ok(part),
            Err(StoreError::Conflict(_)) => Err(UploadError::Completed(session.id.clone())),
            Err(StoreError::NotFound { .. }) => {
                // Aborted or swept while the bytes were written: leave nothing behind.
                if let Err(error) = objects.object_store().delete(&path).await {
                    tracing::warn!(session_id = %session.id, part_number, %error, "cannot remove the part of a removed upload session");
                }
                Err(UploadError::SessionNotFound(session.id.clone()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Refuses a part over [`UploadLimits::max_part_bytes`] (also used before reading a body
    /// whose announced length is too big).
    pub fn check_part_size(&self, size: usize) -> Result<(), UploadError> {
        if size == 0 {
            return Err(UploadError::Invalid("a part must not be empty".to_owned()));
        }
        if size > self.limits.max_part_bytes {
            return Err(part_too_large(self.limits.max_part_bytes));
        }
        Ok(())
    }

    /// The caller's session and the parts received.
    pub async fn progress(
        &self,
        owner: &str,
        session_id: &str,
    ) -> Result<UploadProgress, UploadError> {
        let session = self.owned_session(owner, session_id).await?;
        let parts = self.store.list_upload_parts(&session.id).await?;
        Ok(UploadProgress { session, parts })
    }

    /// Removes the caller's session and its parts; refused while a dataset still pending or
    /// processing reads them.
    pub async fn abort(&self, owner: &str, session_id: &str) -> Result<(), UploadError> {
        let session = self.owned_session(owner, session_id).await?;
        // adaptive-sdk aborts its session on any error after `createDatasetFromMultipartUpload`
        // was acknowledged (a failed status poll, say); the dataset must not lose its file.
        if let Some(dataset_id) = self
            .store
            .dataset_reading_upload_session(&session.id)
            .await?
        {
            return Err(UploadError::InUse {
                session_id: session.id,
                dataset_id,
            });
        }
        let objects_deleted = self.remove(&session.id).await?;
        tracing::info!(session_id = %session.id, objects_deleted, "upload session aborted");
        Ok(())
    }

    /// Hands every part to an import: all must be there, and the session is frozen from now on.
    pub async fn complete(
        &self,
        owner: &str,
        session_id: &str,
    ) -> Result<CompletedUpload, UploadError> {
        let progress = self.progress(owner, session_id).await?;
        let missing = progress.missing_parts();
        if !missing.is_empty() {
            return Err(UploadError::Incomplete {
                session_id: progress.session.id,
                missing,
            });
        }
        if !self
            .store
            .complete_upload_session(&progress.session.id)
            .await?
        {
            return Err(UploadError::Completed(progress.session.id));
        }
        let total_bytes = progress.uploaded_bytes();
        Ok(CompletedUpload {
            session: progress.session,
            parts: progress.parts,
            total_bytes,
        })
    }

    /// The bytes of one part of a completed upload.
    pub async fn read_part(
        &self,
        completed: &CompletedUpload,
        part_number: i64,
    ) -> Result<Bytes, UploadError> {
        let objects = self.storage.objects()?;
        let path = part_path(&objects, &completed.session.id, part_number);
        let read = objects
            .object_store()
            .get(&path)
            .await
            .map_err(UploadError::objects(format!("read part {part_number}")))?;
        read.bytes()
            .await
            .map_err(UploadError::objects(format!("read part {part_number}")))
    }

    /// The bytes of one part of a completed upload, as a stream of chunks (an import of a
    /// large file holds one chunk at a time, not the part).
    pub async fn part_stream(
        &self,
        completed: &CompletedUpload,
        part_number: i64,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, UploadError>>, UploadError> {
        use futures::StreamExt;
        let objects = self.storage.objects()?;
        let path = part_path(&objects, &completed.session.id, part_number);
        let read = objects
            .object_store()
            .get(&path)
            .await
            .map_err(UploadError::objects(format!("read part {part_number}")))?;
        let chunks = read
            .into_stream()
            .map_err(move |source| UploadError::Objects {
                action: format!("read part {part_number}"),
                source,
            })
            .boxed();
        Ok(chunks)
    }

    /// Removes every session idle since `cutoff_ms` (objects, then rows) and returns how many.
    /// A session that fails is logged and retried on the next sweep.
    pub async fn remove_idle_since(&self, cutoff_ms: i64) -> Result<usize, UploadError> {
        let mut removed = 0;
        for session_id in self.store.upload_sessions_idle_since(cutoff_ms).await? {
            match self.remove(&session_id).await {
                Ok(objects_deleted) => {
                    removed += 1;
                    tracing::info!(%session_id, objects_deleted, "abandoned upload session removed");
                }
                Err(error) => {
                    tracing::warn!(%session_id, %error, "cannot remove an abandoned upload session")
                }
            }
        }
        Ok(removed)
    }

    /// Every [`UploadLimits::sweep_interval`], removes the sessions idle for longer than
    /// [`UploadLimits::idle_ttl`], until `shutdown`.
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let uploads = self.clone();
        tokio::spawn(async move {
            crate::periodic::every(uploads.limits.sweep_interval, &shutdown, || async {
                let idle_ttl_ms =
                    i64::try_from(uploads.limits.idle_ttl.as_millis()).unwrap_or(i64::MAX);
                let cutoff_ms = chrono::Utc::now()
                    .timestamp_millis()
                    .saturating_sub(idle_ttl_ms);
                if let Err(error) = uploads.remove_idle_since(cutoff_ms).await {
                    tracing::warn!(%error, "cannot look for abandoned upload sessions");
                }
            })
            .await;
        })
    }

    async fn owned_session(
        &self,
        owner: &str,
        session_id: &str,
    ) -> Result<UploadSession, UploadError> {
        let not_found = || UploadError::SessionNotFound(session_id.to_owned());
        // Ids are UUIDs: anything else cannot name a session (nor escape the object prefix).
        if uuid::Uuid::parse_str(session_id).is_err() {
            return Err(not_found());
        }
        match self.store.get_upload_session(session_id).await {
            Ok(session) if session.created_by == owner => Ok(session),
            Ok(_) | Err(StoreError::NotFound { .. }) => Err(not_found()),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes a session's objects, then its rows; returns how many objects there were.
    async fn remove(&self, session_id: &str) -> Result<usize, UploadError> {
        let objects = self.storage.objects()?;
        let prefix = objects.path(&format!("{UPLOADS_PREFIX}/{session_id}"));
        let store = objects.object_store();
        let listed: Vec<_> = store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(UploadError::objects("list parts"))?;
        for object in &listed {
            match store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(UploadError::objects("delete a part")(error)),
            }
        }
        self.store.delete_upload_session(session_id).await?;
        Ok(listed.len())
    }
}

/// What one part may add: its own limit and what is left of the file's.
#[derive(Debug, Clone, Copy)]
struct PartLimits {
    max_part_bytes: usize,
    room_in_file: i64,
    max_total_bytes: i64,
}

/// Writes the body's chunks, counting them against the limits; returns the part's size.
async fn copy_part<S, E>(
    body: S,
    writer: &mut BufWriter,
    part_number: i64,
    limits: PartLimits,
) -> Result<i64, UploadError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut received: usize = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| {
            UploadError::Invalid(format!("the part's body could not be read: {error}"))
        })?;
        received = received.saturating_add(chunk.len());
        if received > limits.max_part_bytes {
            return Err(part_too_large(limits.max_part_bytes));
        }
        if i64::try_from(received).unwrap_or(i64::MAX) > limits.room_in_file {
            return Err(UploadError::Invalid(format!(
                "the upload would exceed the {}-byte limit on a file",
                limits.max_total_bytes
            )));
        }
        writer
            .write_all(&chunk)
            .await
            .map_err(|source| UploadError::PartWrite {
                part_number,
                source,
            })?;
    }
    if received == 0 {
        return Err(UploadError::Invalid("a part must not be empty".to_owned()));
    }
    Ok(i64::try_from(received).unwrap_or(i64::MAX))
}

/// The error for a part over `max_part_bytes`.
pub fn part_too_large(max_part_bytes: usize) -> UploadError {
    UploadError::Invalid(format!("a part may hold at most {max_part_bytes} bytes"))
}

fn part_path(objects: &RegistryStore, session_id: &str, part_number: i64) -> ObjectPath {
    objects.path(&format!("{UPLOADS_PREFIX}/{session_id}/{part_number}"))
}
