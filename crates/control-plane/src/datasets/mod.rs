//! Datasets (reference §3.1 "Dataset", §3.4): JSONL files of records uploaded to a project,
//! checked on the way in ([`records`]), stored as objects, and listed, described, downloaded
//! and deleted through the API ([`crate::graphql`] `datasets`, `dataset`, `createDataset`,
//! `createDatasetFromMultipartUpload`, `datasetUploadProcessingStatus`, `deleteDataset`;
//! `GET /api/v1/projects/{project}/datasets/{id}/download`).
//!
//! # Two ways in, as `adaptive-sdk` 0.14 uploads
//!
//! - Files up to 5 MB come in one GraphQL multipart request (`createDataset(input, file)`).
//!   The file is checked while it is copied to its object; a bad file is refused with
//!   `invalid_request` naming the first bad line, and nothing is kept. The answer is the READY
//!   dataset.
//! - Larger files come through a chunked upload ([`crate::uploads`]) that
//!   `createDatasetFromMultipartUpload` completes. The answer is a PENDING dataset; a task
//!   copies the parts in order into the dataset's object (streamed: one chunk in memory at a
//!   time), checks them on the way, records progress, and ends READY, or FAILED with the first
//!   bad line as `error` (the SDK polls `datasetUploadProcessingStatus` and raises it). Either
//!   way the session's parts are removed afterwards.
//!
//! # Where things live
//!
//! - Metadata and processing state: the `datasets` table ([`crate::store::Dataset`]).
//! - The file, byte for byte as uploaded: `.datasets/<project id>/<dataset id>.jsonl` in the
//!   shared directory (`harmony.shared_directory`, S3 or a local directory; by default
//!   `<app.data_dir>/shared`), where harmony's jobs read it. Chunked-upload parts stay in the
//!   model registry root and are copied from there.
//!
//! # Failure and races
//!
//! - A dataset's key is claimed by inserting its row (PENDING) before any byte is stored, so two
//!   uploads of one key cannot both win. A FAILED dataset gives its key up to a new upload.
//! - A processing task that dies with its replica leaves a dataset that stops progressing;
//!   [`Datasets::spawn_sweeper`] marks those FAILED after [`DatasetPolicy::stall_timeout`].
//! - Deleting removes the object, then the row. A task still processing a deleted dataset
//!   notices when it cannot mark it READY and removes the object it wrote.

pub mod recipe;
pub mod records;

use std::sync::Arc;
use std::time::Duration;

use adaptive_api_types::ErrorCode;
use axum::body::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::model_storage::{ModelStorage, ModelStorageError};
use crate::store::{
    Dataset, DatasetContents, MetadataStore, Project, StoreError, DATASET_FAILED, DATASET_PENDING,
    DATASET_PROCESSING, DATASET_READY,
};
use crate::uploads::{CompletedUpload, UploadError, Uploads};
use records::{InvalidRecords, RecordScanner, ScannedFile};

/// The object prefix of every dataset file, under the registry root.
const DATASETS_PREFIX: &str = ".datasets";

/// How much of an uploaded file is read at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// How long a dataset may stay pending or processing without progress before it is failed.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often each replica looks for stalled datasets.
pub const DEFAULT_STALL_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// What the upload source of a new dataset is when the client does not say.
pub const SOURCE_UPLOADED: &str = "UPLOADED";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetPolicy {
    pub stall_timeout: Duration,
    pub sweep_interval: Duration,
}

impl Default for DatasetPolicy {
    fn default() -> Self {
        Self {
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            sweep_interval: DEFAULT_STALL_SWEEP_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Storage(#[from] ModelStorageError),
    #[error("invalid dataset file: {0}")]
    InvalidFile(#[from] InvalidRecords),
    #[error("{0}")]
    Invalid(String),
    #[error("object storage failed to {action}")]
    Objects {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The uploaded file (a temporary file of the GraphQL request) could not be read.
    #[error("cannot read the uploaded file")]
    ReadUpload(#[source] std::io::Error),
}

impl DatasetError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DatasetError::Store(error) => error.error_code(),
            DatasetError::Upload(error) => error.error_code(),
            DatasetError::Storage(error) => error.error_code(),
            DatasetError::InvalidFile(_) | DatasetError::Invalid(_) => ErrorCode::InvalidRequest,
            DatasetError::Objects { .. } => ErrorCode::Unavailable,
            DatasetError::ReadUpload(_) => ErrorCode::Internal,
        }
    }

    fn objects<E>(action: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| DatasetError::Objects {
            action,
            source: Box::new(source),
        }
    }
}

/// What a client asks for when creating a dataset (`DatasetCreate`,
/// `DatasetCreateFromMultipartUpload`).
#[derive(Debug, Clone, Default)]
pub struct NewDataset {
    /// Project id or key.
    pub project: String,
    pub name: String,
    /// Defaults to the name turned into a key.
    pub key: Option<String>,
    /// Defaults to [`SOURCE_UPLOADED`].
    pub source: Option<String>,
}

/// The processing state the SDK polls (`SessionStatus`: PENDING, DONE, ERROR).
pub fn session_status(dataset: &Dataset) -> &'static str {
    match dataset.status.as_str() {
        DATASET_READY => "DONE",
        DATASET_FAILED => "ERROR",
        _ => "PENDING",
    }
}

/// The download route of a dataset, as `downloadUrl` gives it (the SDK strips `/api/v1`).
pub fn download_url(dataset: &Dataset) -> String {
    format!(
        "/api/v1/projects/{}/datasets/{}/download",
        dataset.project_id, dataset.id
    )
}

/// The dataset service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Datasets {
    store: MetadataStore,
    storage: ModelStorage,
    uploads: Uploads,
    policy: DatasetPolicy,
}

impl Datasets {
    pub fn new(store: MetadataStore, storage: ModelStorage, uploads: Uploads) -> Self {
        Self {
            store,
            storage,
            uploads,
            policy: DatasetPolicy::default(),
        }
    }

    pub fn with_policy(self, policy: DatasetPolicy) -> Self {
        Self { policy, ..self }
    }

    pub async fn project(&self, id_or_key: &str) -> Result<Project, DatasetError> {
        Ok(self.store.get_project(id_or_key).await?)
    }

    pub async fn list(&self, project: &str) -> Result<Vec<Dataset>, DatasetError> {
        let project = self.project(project).await?;
        Ok(self.store.list_datasets(&project.id).await?)
    }

    /// A project's dataset by id or key; `None` when there is none.
    pub async fn find(
        &self,
        project: &str,
        id_or_key: &str,
    ) -> Result<Option<Dataset>, DatasetError> {
        let project = self.project(project).await?;
        Ok(self.store.find_dataset(&project.id, id_or_key).await?)
    }

    pub async fn get(&self, project: &str, id_or_key: &str) -> Result<Dataset, DatasetError> {
        let project = self.project(project).await?;
        Ok(self.store.get_dataset(&project.id, id_or_key).await?)
    }

    /// Creates a dataset from a whole file (a GraphQL multipart upload): checked while it is
    /// stored; READY on return, or refused with nothing kept.
    pub async fn create_from_file(
        &self,
        creator: &str,
        request: NewDataset,
        file: std::fs::File,
    ) -> Result<Dataset, DatasetError> {
        let dataset = self.claim(creator, request, None).await?;
        let stored = self.store_file(&dataset, file).await;
        let scanned = match stored {
            Ok(scanned) => scanned,
            Err(error) => {
                self.discard(&dataset).await;
                return Err(error);
            }
        };
        if !self.finish(&dataset, &scanned).await? {
            return Err(StoreError::not_found("dataset", &dataset.key).into());
        }
        tracing::info!(dataset_id = %dataset.id, key = %dataset.key, records = scanned.records, "dataset uploaded");
        Ok(self
            .store
            .get_dataset(&dataset.project_id, &dataset.id)
            .await?)
    }

    /// Creates a dataset from the caller's completed chunked upload: returns it PENDING and
    /// processes the parts in a task (see the module docs).
    pub async fn create_from_upload(
        &self,
        creator: &str,
        request: NewDataset,
        session_id: &str,
    ) -> Result<Dataset, DatasetError> {
        let dataset = self
            .claim(creator, request, Some(session_id.to_owned()))
            .await?;
        let completed = match self.uploads.complete(creator, session_id).await {
            Ok(completed) => completed,
            Err(error) => {
                let _ = self.store.delete_dataset(&dataset.id).await;
                return Err(error.into());
            }
        };
        let datasets = self.clone();
        let task_dataset = dataset.clone();
        let creator = creator.to_owned();
        tokio::spawn(async move {
            datasets
                .process_upload(&creator, &task_dataset, completed)
                .await;
        });
        Ok(dataset)
    }

    /// Removes a dataset (its file, then its row). False when there was none.
    pub async fn delete(&self, project: &str, id_or_key: &str) -> Result<bool, DatasetError> {
        let project = self.project(project).await?;
        let Some(dataset) = self.store.find_dataset(&project.id, id_or_key).await? else {
            return Ok(false);
        };
        self.delete_object(&dataset).await?;
        let deleted = self.store.delete_dataset(&dataset.id).await?;
        tracing::info!(dataset_id = %dataset.id, key = %dataset.key, "dataset deleted");
        Ok(deleted)
    }

    /// The stored file of a READY dataset, as a stream of chunks.
    pub async fn open(
        &self,
        project: &str,
        id_or_key: &str,
    ) -> Result<(Dataset, BoxStream<'static, Result<Bytes, DatasetError>>), DatasetError> {
        let dataset = self.get(project, id_or_key).await?;
        if dataset.status != DATASET_READY {
            return Err(StoreError::Conflict(format!(
                "dataset '{}' is {}: only READY datasets can be downloaded",
                dataset.key, dataset.status
            ))
            .into());
        }
        let objects = self.storage.objects()?;
        let read = objects
            .object_store()
            .get(&object_path(&objects, &dataset))
            .await
            .map_err(DatasetError::objects("read the dataset"))?;
        let chunks = read
            .into_stream()
            .map_err(|source| DatasetError::Objects {
                action: "read the dataset",
                source: Box::new(source),
            })
            .boxed();
        Ok((dataset, chunks))
    }

    /// Marks every dataset stalled since `cutoff_ms` FAILED; returns how many.
    pub async fn fail_stalled_since(&self, cutoff_ms: i64) -> Result<usize, DatasetError> {
        let mut failed = 0;
        for dataset_id in self.store.datasets_stalled_since(cutoff_ms).await? {
            let reason =
                "processing was interrupted (the control plane stopped?): upload the file again";
            if self.store.mark_dataset_failed(&dataset_id, reason).await? {
                failed += 1;
                tracing::warn!(%dataset_id, "stalled dataset marked failed");
            }
        }
        Ok(failed)
    }

    /// Every [`DatasetPolicy::sweep_interval`], fails the datasets stalled for longer than
    /// [`DatasetPolicy::stall_timeout`], until `shutdown`.
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let datasets = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(datasets.policy.sweep_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let stall_ms =
                    i64::try_from(datasets.policy.stall_timeout.as_millis()).unwrap_or(i64::MAX);
                let cutoff_ms = chrono::Utc::now()
                    .timestamp_millis()
                    .saturating_sub(stall_ms);
                if let Err(error) = datasets.fail_stalled_since(cutoff_ms).await {
                    tracing::warn!(%error, "cannot look for stalled datasets");
                }
            }
        })
    }

    /// Inserts the new dataset's row (PENDING), claiming its key; a FAILED dataset holding the
    /// key is removed first.
    async fn claim(
        &self,
        creator: &str,
        request: NewDataset,
        upload_session_id: Option<String>,
    ) -> Result<Dataset, DatasetError> {
        let project = self.project(&request.project).await?;
        let name = request.name.trim().to_owned();
        if name.is_empty() {
            return Err(DatasetError::Invalid("a dataset needs a name".to_owned()));
        }
        let key = request
            .key
            .filter(|key| !key.is_empty())
            .unwrap_or_else(|| crate::store::slugify(&name));
        crate::store::validate_key("dataset", &key)?;
        let source = request.source.unwrap_or_else(|| SOURCE_UPLOADED.to_owned());
        let now = chrono::Utc::now().timestamp_millis();
        let dataset = Dataset {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: project.id.clone(),
            key,
            name,
            kind: records::DatasetKind::Prompt.as_str().to_owned(),
            source,
            status: DATASET_PENDING.to_owned(),
            progress: 0.0,
            error: None,
            records: None,
            size_bytes: None,
            sha256: None,
            upload_session_id,
            created_by: Some(creator.to_owned()),
            created_at: now,
            updated_at: now,
        };
        match self.store.insert_dataset(&dataset).await {
            Ok(()) => return Ok(dataset),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let existing = self.store.find_dataset(&project.id, &dataset.key).await?;
        match existing {
            Some(failed) if failed.status == DATASET_FAILED => {
                self.delete_object(&failed).await?;
                self.store.delete_dataset(&failed.id).await?;
                tracing::info!(dataset_id = %failed.id, key = %failed.key, "failed dataset replaced");
            }
            _ => {
                return Err(StoreError::AlreadyExists {
                    what: "dataset",
                    key: dataset.key,
                }
                .into())
            }
        }
        self.store.insert_dataset(&dataset).await?;
        Ok(dataset)
    }

    async fn store_file(
        &self,
        dataset: &Dataset,
        file: std::fs::File,
    ) -> Result<ScannedFile, DatasetError> {
        use std::io::Seek;
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(DatasetError::ReadUpload)?;
        let reader = tokio::fs::File::from_std(file);
        let chunks = futures::stream::try_unfold(reader, |mut reader| async move {
            let mut buffer = vec![0u8; READ_CHUNK_BYTES];
            let read = reader
                .read(&mut buffer)
                .await
                .map_err(DatasetError::ReadUpload)?;
            if read == 0 {
                return Ok(None);
            }
            buffer.truncate(read);
            Ok(Some((Bytes::from(buffer), reader)))
        });
        self.store_and_scan(dataset, chunks).await
    }

    /// Copies `chunks` into the dataset's object while scanning them; on any error the object
    /// is not created (or removed).
    async fn store_and_scan<S>(
        &self,
        dataset: &Dataset,
        chunks: S,
    ) -> Result<ScannedFile, DatasetError>
    where
        S: futures::Stream<Item = Result<Bytes, DatasetError>> + Send,
    {
        let objects = self.storage.objects()?;
        let object_store: Arc<dyn ObjectStore> = objects.object_store().clone();
        let mut writer = BufWriter::new(object_store, object_path(&objects, dataset));
        let copied = copy_and_scan(chunks, &mut writer).await;
        match copied {
            Ok(scanned) => {
                writer
                    .shutdown()
                    .await
                    .map_err(DatasetError::objects("write the dataset"))?;
                Ok(scanned)
            }
            Err(error) => {
                if let Err(abort_error) = writer.abort().await {
                    tracing::warn!(dataset_id = %dataset.id, error = %abort_error, "cannot abort the write of a refused dataset");
                }
                Err(error)
            }
        }
    }

    async fn process_upload(&self, creator: &str, dataset: &Dataset, completed: CompletedUpload) {
        let outcome = self.copy_upload(dataset, &completed).await;
        match outcome {
            Ok(scanned) => match self.finish(dataset, &scanned).await {
                Ok(true) => {
                    tracing::info!(dataset_id = %dataset.id, key = %dataset.key, records = scanned.records, bytes = scanned.size_bytes, "dataset processed");
                }
                Ok(false) => self.discard_object(dataset).await,
                Err(error) => {
                    tracing::warn!(dataset_id = %dataset.id, %error, "cannot mark a processed dataset ready");
                }
            },
            Err(error) => {
                let reason = match &error {
                    DatasetError::InvalidFile(_) | DatasetError::Invalid(_) => error.to_string(),
                    _ => format!("{error}; upload the file again"),
                };
                tracing::warn!(dataset_id = %dataset.id, error = %reason, "dataset processing failed");
                if let Err(store_error) = self.store.mark_dataset_failed(&dataset.id, &reason).await
                {
                    tracing::warn!(dataset_id = %dataset.id, error = %store_error, "cannot mark a dataset failed");
                }
            }
        }
        if let Err(error) = self.uploads.abort(creator, &completed.session.id).await {
            tracing::warn!(session_id = %completed.session.id, %error, "cannot remove the parts of a processed upload");
        }
    }

    /// Streams the session's parts, in order, into the dataset's object, reporting progress
    /// after each part.
    async fn copy_upload(
        &self,
        dataset: &Dataset,
        completed: &CompletedUpload,
    ) -> Result<ScannedFile, DatasetError> {
        if !self
            .store
            .update_dataset_progress(&dataset.id, DATASET_PROCESSING, 0.0)
            .await?
        {
            return Err(StoreError::not_found("dataset", &dataset.id).into());
        }
        let total_bytes = completed.total_bytes.max(1) as f64;
        let mut parts = Vec::new();
        let mut bytes_before = 0i64;
        for part in &completed.parts {
            parts.push((part.part_number, bytes_before));
            bytes_before += part.size_bytes;
        }
        // Owned captures and a boxed stream: the task that runs this must be `Send + 'static`.
        let datasets = self.clone();
        let dataset_id = dataset.id.clone();
        let completed = Arc::new(completed.clone());
        let chunks = futures::stream::iter(parts)
            .then(move |(part_number, bytes_before)| {
                let datasets = datasets.clone();
                let dataset_id = dataset_id.clone();
                let completed = completed.clone();
                async move {
                    let progress = bytes_before as f64 / total_bytes;
                    datasets
                        .store
                        .update_dataset_progress(&dataset_id, DATASET_PROCESSING, progress)
                        .await?;
                    let part = datasets
                        .uploads
                        .part_stream(&completed, part_number)
                        .await?;
                    Ok::<_, DatasetError>(part.map_err(DatasetError::from))
                }
            })
            .try_flatten()
            .boxed();
        self.store_and_scan(dataset, chunks).await
    }

    /// Marks the dataset READY; false (and the object removed) when it was deleted meanwhile.
    async fn finish(&self, dataset: &Dataset, scanned: &ScannedFile) -> Result<bool, DatasetError> {
        let contents = DatasetContents {
            kind: scanned.kind.as_str().to_owned(),
            records: scanned.records,
            size_bytes: scanned.size_bytes,
            sha256: scanned.sha256.clone(),
        };
        let marked = self
            .store
            .mark_dataset_ready(&dataset.id, &contents)
            .await?;
        if !marked {
            self.discard_object(dataset).await;
        }
        Ok(marked)
    }

    /// Removes a refused dataset: its object (if any) and its row.
    async fn discard(&self, dataset: &Dataset) {
        self.discard_object(dataset).await;
        if let Err(error) = self.store.delete_dataset(&dataset.id).await {
            tracing::warn!(dataset_id = %dataset.id, %error, "cannot remove a refused dataset");
        }
    }

    async fn discard_object(&self, dataset: &Dataset) {
        if let Err(error) = self.delete_object(dataset).await {
            tracing::warn!(dataset_id = %dataset.id, %error, "cannot remove a dataset's file");
        }
    }

    async fn delete_object(&self, dataset: &Dataset) -> Result<(), DatasetError> {
        let objects = self.storage.objects()?;
        match objects
            .object_store()
            .delete(&object_path(&objects, dataset))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(DatasetError::objects("delete the dataset")(error)),
        }
    }
}

async fn copy_and_scan<S>(chunks: S, writer: &mut BufWriter) -> Result<ScannedFile, DatasetError>
where
    S: futures::Stream<Item = Result<Bytes, DatasetError>> + Send,
{
    let mut chunks = std::pin::pin!(chunks);
    let mut scanner = RecordScanner::new();
    while let Some(chunk) = chunks.try_next().await? {
        scanner.feed(&chunk)?;
        writer
            .write_all(&chunk)
            .await
            .map_err(DatasetError::objects("write the dataset"))?;
    }
    Ok(scanner.finish()?)
}

fn object_path(objects: &adaptive_registry::RegistryStore, dataset: &Dataset) -> ObjectPath {
    objects.path(&format!(
        "{DATASETS_PREFIX}/{}/{}.jsonl",
        dataset.project_id, dataset.id
    ))
}
