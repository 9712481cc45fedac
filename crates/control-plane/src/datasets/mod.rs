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
//!   bad line as `error` (the SDK polls `datasetUploadProcessingStatus` and raises it). The
//!   session's parts are removed once that end is stored, not before.
//!
//! While the records are checked they are also counted per metric key (scores and
//! comparisons, [`records`]); the counts are stored with the dataset (`metricsUsage`).
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
//! - An acknowledged chunked upload is not lost when its replica stops: processing is resumable.
//!   The replica processing a dataset holds a claim on its row with a lease
//!   ([`DatasetPolicy::claim_ttl`]) that it renews while it works (see [`crate::store`]
//!   "Claims"). A replica that stops gives its claims up; one that dies lets the leases run out.
//!   Every [`DatasetPolicy::sweep_interval`], and once at start, every replica takes over the
//!   datasets nobody holds ([`Datasets::resume_unclaimed`]; a conditional update, so one
//!   replica wins each) and copies the parts again from the first: the object is rewritten
//!   whole, so a copy cut short leaves nothing behind. The parts stay stored until the dataset
//!   is READY or FAILED: the upload sweeper skips them meanwhile, and an abort of the session
//!   is refused (409; adaptive-sdk sends one on any error after the dataset was acknowledged).
//! - A resumed dataset is failed only when its file cannot be had again: the parts are gone, or
//!   a direct upload (`createDataset`) was cut (its file lived in the request), or the content
//!   is bad, or its processing died with its replica more than
//!   [`DatasetPolicy::max_expired_claims`] times (a file that kills whoever reads it is not
//!   retried forever). Other errors (storage or database unavailable) give the claim up for a
//!   later sweep to retry.
//! - A replica that stalled past its lease and lost the dataset to another one notices at its
//!   next write (all are conditional on the claim) and stops; the copy it may still finish is
//!   the same bytes, written whole.
//! - Deleting removes the object, then the row. A task still processing a deleted dataset
//!   notices when it cannot write its progress or mark it READY, and removes the object it
//!   wrote and the parts.

mod processing;
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
use tokio_util::task::TaskTracker;

use crate::model_storage::{ModelStorage, ModelStorageError};
use crate::store::{
    Dataset, DatasetMetricCount, MetadataStore, Metric, Project, StoreError, DATASET_FAILED,
    DATASET_PENDING, DATASET_READY,
};
use crate::uploads::{UploadError, Uploads};
use records::{InvalidRecords, RecordScanner, ScannedFile};

/// The object prefix of every dataset file, under the registry root.
const DATASETS_PREFIX: &str = ".datasets";

/// How much of an uploaded file is read at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// How long a row without a lease (written before leases existed) may go without progress
/// before it counts as abandoned.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// What the upload source of a new dataset is when the client does not say.
pub const SOURCE_UPLOADED: &str = "UPLOADED";

/// How processing is shared between replicas and resumed (see the module docs); from the
/// `datasets.*` configuration keys ([`crate::config::DatasetsConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetPolicy {
    /// The lease of a claim; renewed every quarter of it while the replica works.
    pub claim_ttl: Duration,
    pub sweep_interval: Duration,
    pub stall_timeout: Duration,
    pub max_expired_claims: i64,
}

impl Default for DatasetPolicy {
    fn default() -> Self {
        Self::from(&crate::config::DatasetsConfig::default())
    }
}

impl From<&crate::config::DatasetsConfig> for DatasetPolicy {
    fn from(config: &crate::config::DatasetsConfig) -> Self {
        Self {
            claim_ttl: Duration::from_secs(config.claim_ttl_seconds),
            sweep_interval: Duration::from_secs(config.sweep_interval_seconds),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_expired_claims: i64::from(config.max_expired_claims),
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
    /// The file of a dataset being processed cannot be had anymore.
    #[error("the uploaded file is gone ({0})")]
    FileGone(String),
    /// This replica is stopping; the processing is left to another one.
    #[error("the control plane is stopping")]
    Stopping,
    /// Another replica took the processing over, or the dataset was deleted.
    #[error("dataset '{0}' is no longer processed here")]
    ClaimLost(String),
}

impl DatasetError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DatasetError::Store(error) => error.error_code(),
            DatasetError::Upload(error) => error.error_code(),
            DatasetError::Storage(error) => error.error_code(),
            DatasetError::InvalidFile(_) | DatasetError::Invalid(_) => ErrorCode::InvalidRequest,
            DatasetError::Objects { .. } | DatasetError::Stopping => ErrorCode::Unavailable,
            DatasetError::ReadUpload(_) => ErrorCode::Internal,
            DatasetError::FileGone(_) => ErrorCode::NotFound,
            DatasetError::ClaimLost(_) => ErrorCode::Conflict,
        }
    }

    /// Whether processing that ended with this error must end FAILED: trying again cannot
    /// help. Other errors (storage or database unavailable) are worth another try.
    fn is_final(&self) -> bool {
        matches!(
            self,
            DatasetError::InvalidFile(_) | DatasetError::Invalid(_) | DatasetError::FileGone(_)
        )
    }

    /// The `error` a FAILED dataset shows its uploader.
    fn failure_reason(&self) -> String {
        match self {
            DatasetError::InvalidFile(_) | DatasetError::Invalid(_) => self.to_string(),
            _ => format!("{self}: upload the file again"),
        }
    }

    /// A part that cannot be read: gone when its object is.
    fn from_part(error: UploadError) -> Self {
        match error {
            UploadError::Objects {
                action,
                source: object_store::Error::NotFound { .. },
            } => DatasetError::FileGone(format!("cannot {action}: not found")),
            other => DatasetError::Upload(other),
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

/// What a [`Datasets::resume_unclaimed`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeReport {
    /// Datasets taken over and being processed again.
    pub resumed: usize,
    /// Datasets whose file cannot be had again, now FAILED.
    pub failed: usize,
    /// Datasets taken over but given up again for a later pass (storage or database trouble).
    pub deferred: usize,
}

/// The dataset service. Cheap to clone; clones share the processing tasks.
#[derive(Debug, Clone)]
pub struct Datasets {
    store: MetadataStore,
    storage: ModelStorage,
    uploads: Uploads,
    policy: DatasetPolicy,
    /// This replica's name in the claims it takes: new at every start, so that a restarted
    /// replica treats its predecessor's claims as anyone's (they run out).
    replica_id: Arc<str>,
    /// Cancelled when the replica stops: processing gives its claims up.
    stopping: CancellationToken,
    /// The processing tasks, waited for (each giving its claim up) when the replica stops.
    tasks: TaskTracker,
}

impl Datasets {
    pub fn new(store: MetadataStore, storage: ModelStorage, uploads: Uploads) -> Self {
        Self {
            store,
            storage,
            uploads,
            policy: DatasetPolicy::default(),
            replica_id: Arc::from(uuid::Uuid::new_v4().to_string()),
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
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

    /// The dataset's record counts per metric (`metricsUsage`), each with its metric, by key.
    ///
    /// The counts are kept by metric key, as the file names them, and resolved here against the
    /// metrics the dataset's project uses: the rule scores follow (a score is accepted only
    /// for a metric linked to its completion's project). A key the project has no metric for
    /// is left out rather than invented or refused: a file may carry scores of metrics not
    /// registered yet, and its counts show up once the metric is created in (or linked to) the
    /// project.
    pub async fn metrics_usage(
        &self,
        dataset: &Dataset,
    ) -> Result<Vec<(Metric, DatasetMetricCount)>, DatasetError> {
        if dataset.metrics_usage.is_empty() {
            return Ok(Vec::new());
        }
        let mut project_metrics: std::collections::HashMap<String, Metric> = self
            .store
            .list_project_metrics(&dataset.project_id)
            .await?
            .into_iter()
            .map(|metric| (metric.key.clone(), metric))
            .collect();
        Ok(dataset
            .metrics_usage
            .iter()
            .filter_map(|counts| {
                let metric = project_metrics.remove(&counts.metric)?;
                Some((metric, counts.clone()))
            })
            .collect())
    }

    /// Creates a dataset from a whole file (a GraphQL multipart upload): checked while it is
    /// stored; READY on return, or refused with nothing kept.
    pub async fn create_from_file(
        &self,
        creator: &str,
        request: NewDataset,
        file: std::fs::File,
    ) -> Result<Dataset, DatasetError> {
        let dataset = self.insert_claimed(creator, request, None).await?;
        let stored = self.store_file(&dataset, file).await;
        let scanned = match stored {
            Ok(scanned) => scanned,
            Err(error) => {
                self.discard(&dataset).await;
                return Err(error);
            }
        };
        if !self.finish(&dataset, &scanned).await? {
            self.after_claim_lost(&dataset).await;
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
            .insert_claimed(creator, request, Some(session_id.to_owned()))
            .await?;
        let completed = match self.uploads.complete(creator, session_id).await {
            Ok(completed) => completed,
            Err(error) => {
                let _ = self.store.delete_dataset(&dataset.id).await;
                return Err(error.into());
            }
        };
        self.spawn_processing(dataset.clone(), completed);
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

    /// Inserts the new dataset's row (PENDING, processed by this replica), claiming its key; a
    /// FAILED dataset holding the key is removed first.
    async fn insert_claimed(
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
            metrics_usage: Vec::new(),
        };
        match self.store.insert_dataset(&dataset, self.claim()).await {
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
        self.store.insert_dataset(&dataset, self.claim()).await?;
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
        // The request is not cut short when the replica stops: it is drained like any other.
        let never = CancellationToken::new();
        self.store_and_scan(dataset, chunks, &never).await
    }

    /// Copies `chunks` into the dataset's object while scanning them, renewing the claim, until
    /// `stop`; on any error the object is not created (or removed).
    async fn store_and_scan<S>(
        &self,
        dataset: &Dataset,
        chunks: S,
        stop: &CancellationToken,
    ) -> Result<ScannedFile, DatasetError>
    where
        S: futures::Stream<Item = Result<Bytes, DatasetError>> + Send,
    {
        let objects = self.storage.objects()?;
        let object_store: Arc<dyn ObjectStore> = objects.object_store().clone();
        let mut writer = BufWriter::new(object_store, object_path(&objects, dataset));
        let copied = self
            .copy_and_scan(&dataset.id, chunks, &mut writer, stop)
            .await;
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

    /// The copy loop of [`Self::store_and_scan`]: renews the claim every quarter of its lease
    /// (a part may be slow to read), and stops between chunks at `stop`.
    async fn copy_and_scan<S>(
        &self,
        dataset_id: &str,
        chunks: S,
        writer: &mut BufWriter,
        stop: &CancellationToken,
    ) -> Result<ScannedFile, DatasetError>
    where
        S: futures::Stream<Item = Result<Bytes, DatasetError>> + Send,
    {
        let mut chunks = std::pin::pin!(chunks);
        let mut scanner = RecordScanner::new();
        let renew_every = (self.policy.claim_ttl / 4).max(Duration::from_millis(10));
        let mut renewals =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Polling the stream again after another branch won loses nothing: a stream keeps
            // its state between polls.
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => return Err(DatasetError::Stopping),
                _ = renewals.tick() => {
                    self.renew_claim(dataset_id).await?;
                    continue;
                }
                next = chunks.try_next() => next?,
            };
            let Some(chunk) = next else {
                break;
            };
            scanner.feed(&chunk)?;
            writer
                .write_all(&chunk)
                .await
                .map_err(DatasetError::objects("write the dataset"))?;
        }
        Ok(scanner.finish()?)
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

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn object_path(objects: &adaptive_registry::RegistryStore, dataset: &Dataset) -> ObjectPath {
    objects.path(&format!(
        "{DATASETS_PREFIX}/{}/{}.jsonl",
        dataset.project_id, dataset.id
    ))
}
