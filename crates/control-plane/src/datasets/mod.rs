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
//!   is READY or FAILED (the upload sweeper skips them meanwhile).
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
    ClaimedDataset, Dataset, DatasetClaim, DatasetContents, DatasetMetricCount, MetadataStore,
    Metric, Project, StoreError, DATASET_FAILED, DATASET_PENDING, DATASET_PROCESSING,
    DATASET_READY,
};
use crate::uploads::{CompletedUpload, UploadError, UploadProgress, Uploads};
use records::{InvalidRecords, RecordScanner, ScannedFile};

/// The object prefix of every dataset file, under the registry root.
const DATASETS_PREFIX: &str = ".datasets";

/// How much of an uploaded file is read at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// How long a replica's claim on a dataset it processes lasts unless renewed.
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(60);
/// How often each replica looks for datasets nobody processes.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How long a row without a lease (written before leases existed) may go without progress
/// before it counts as abandoned.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How many times a dataset's processing may die with its replica before the dataset is failed.
pub const DEFAULT_MAX_EXPIRED_CLAIMS: i64 = 5;

/// What the upload source of a new dataset is when the client does not say.
pub const SOURCE_UPLOADED: &str = "UPLOADED";

/// How processing is shared between replicas and resumed (see the module docs).
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
        Self {
            claim_ttl: DEFAULT_CLAIM_TTL,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_expired_claims: DEFAULT_MAX_EXPIRED_CLAIMS,
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

    /// Takes over every dataset pending or processing that no replica holds (its claim given
    /// up or run out) and processes it again from its upload's parts; fails those whose file
    /// cannot be had again (see the module docs).
    pub async fn resume_unclaimed(&self) -> Result<ResumeReport, DatasetError> {
        let now = chrono::Utc::now().timestamp_millis();
        let legacy_stall_cutoff = now.saturating_sub(millis(self.policy.stall_timeout));
        let mut report = ResumeReport::default();
        for dataset_id in self
            .store
            .datasets_to_claim(now, legacy_stall_cutoff)
            .await?
        {
            if self.stopping.is_cancelled() {
                break;
            }
            let claimed = self
                .store
                .claim_dataset(&dataset_id, self.claim(), legacy_stall_cutoff)
                .await?;
            // Another replica was quicker, or it ended meanwhile.
            let Some(claimed) = claimed else {
                continue;
            };
            match self.resume(claimed).await {
                Resumed::Processing => report.resumed += 1,
                Resumed::Failed => report.failed += 1,
                Resumed::Deferred => report.deferred += 1,
            }
        }
        Ok(report)
    }

    /// Every [`DatasetPolicy::sweep_interval`], from the start, resumes the datasets no replica
    /// processes ([`Self::resume_unclaimed`]); at `shutdown`, stops processing ([`Self::stop`]).
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let datasets = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(datasets.policy.sweep_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                match datasets.resume_unclaimed().await {
                    Ok(report) if report != ResumeReport::default() => {
                        tracing::info!(
                            resumed = report.resumed,
                            failed = report.failed,
                            deferred = report.deferred,
                            "unclaimed datasets taken over"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot look for unclaimed datasets"),
                }
            }
            datasets.stop().await;
        })
    }

    /// Stops processing here: every task gives its claim up, so another replica (or this one
    /// restarted) resumes the dataset at once, and is waited for.
    pub async fn stop(&self) {
        self.stopping.cancel();
        self.tasks.close();
        self.tasks.wait().await;
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

    fn spawn_processing(&self, dataset: Dataset, completed: CompletedUpload) {
        let datasets = self.clone();
        self.tasks.spawn(async move {
            datasets.process_upload(&dataset, &completed).await;
        });
    }

    /// Processes a claimed dataset from its upload's parts to READY or FAILED, then removes the
    /// parts; or gives the claim up, keeping the parts, when it cannot end it now.
    async fn process_upload(&self, dataset: &Dataset, completed: &CompletedUpload) {
        let outcome = self.copy_upload(dataset, completed).await;
        let ended = match outcome {
            Ok(scanned) => match self.finish(dataset, &scanned).await {
                Ok(true) => {
                    tracing::info!(dataset_id = %dataset.id, key = %dataset.key, records = scanned.records, bytes = scanned.size_bytes, "dataset processed");
                    true
                }
                Ok(false) => self.after_claim_lost(dataset).await,
                Err(error) => {
                    tracing::warn!(dataset_id = %dataset.id, %error, "cannot mark a processed dataset ready");
                    self.give_up_claim(dataset).await;
                    false
                }
            },
            Err(DatasetError::Stopping) => {
                tracing::info!(dataset_id = %dataset.id, "dataset processing stopped, left to the next replica");
                self.give_up_claim(dataset).await;
                false
            }
            Err(DatasetError::ClaimLost(_)) => self.after_claim_lost(dataset).await,
            Err(error) if error.is_final() => {
                self.mark_failed(dataset, &error.failure_reason()).await
            }
            Err(error) => {
                tracing::warn!(dataset_id = %dataset.id, %error, "dataset processing failed, to be retried");
                self.give_up_claim(dataset).await;
                false
            }
        };
        if ended {
            self.remove_parts(&completed.session.id).await;
        }
    }

    /// Processes a dataset this replica just took over; see [`Self::resume_unclaimed`].
    async fn resume(&self, claimed: ClaimedDataset) -> Resumed {
        let dataset = claimed.dataset;
        if claimed.expired_claims > self.policy.max_expired_claims {
            let reason = format!(
                "processing was interrupted {} times (the control plane stopped while reading \
                 this file): upload the file again",
                claimed.expired_claims
            );
            return self.fail_resumed(&dataset, &reason).await;
        }
        match self.stored_upload(&dataset).await {
            Ok(completed) => {
                tracing::info!(dataset_id = %dataset.id, key = %dataset.key, expired_claims = claimed.expired_claims, "resuming the processing of a dataset");
                self.spawn_processing(dataset, completed);
                Resumed::Processing
            }
            Err(error) if error.is_final() => {
                self.fail_resumed(&dataset, &error.failure_reason()).await
            }
            Err(error) => {
                tracing::warn!(dataset_id = %dataset.id, %error, "cannot resume the processing of a dataset yet");
                self.give_up_claim(&dataset).await;
                Resumed::Deferred
            }
        }
    }

    async fn fail_resumed(&self, dataset: &Dataset, reason: &str) -> Resumed {
        if !self.mark_failed(dataset, reason).await {
            return Resumed::Deferred;
        }
        if let Some(session_id) = &dataset.upload_session_id {
            self.remove_parts(session_id).await;
        }
        Resumed::Failed
    }

    /// The upload a dataset is processed from, as stored: every part must be there.
    async fn stored_upload(&self, dataset: &Dataset) -> Result<CompletedUpload, DatasetError> {
        let Some(session_id) = &dataset.upload_session_id else {
            // `createDataset` keeps the file in the request until it is stored.
            return Err(DatasetError::FileGone(
                "its upload was interrupted before the file was stored".to_owned(),
            ));
        };
        let session = match self.store.get_upload_session(session_id).await {
            Ok(session) => session,
            Err(StoreError::NotFound { .. }) => {
                return Err(DatasetError::FileGone(format!(
                    "upload session '{session_id}' was removed"
                )))
            }
            Err(error) => return Err(error.into()),
        };
        let parts = self.store.list_upload_parts(&session.id).await?;
        let progress = UploadProgress { session, parts };
        let missing = progress.missing_parts();
        if !missing.is_empty() {
            return Err(DatasetError::FileGone(format!(
                "upload session '{session_id}' lacks parts {missing:?}"
            )));
        }
        // Interrupted between claiming the key and completing the session: freeze it now.
        if progress.session.completed_at.is_none() {
            self.store
                .complete_upload_session(&progress.session.id)
                .await?;
        }
        let total_bytes = progress.uploaded_bytes();
        Ok(CompletedUpload {
            session: progress.session,
            parts: progress.parts,
            total_bytes,
        })
    }

    /// Marks a dataset this replica holds FAILED; true when that is stored (the parts may go).
    async fn mark_failed(&self, dataset: &Dataset, reason: &str) -> bool {
        tracing::warn!(dataset_id = %dataset.id, error = %reason, "dataset processing failed");
        match self
            .store
            .mark_dataset_failed(&dataset.id, &self.replica_id, reason)
            .await
        {
            Ok(true) => true,
            Ok(false) => self.after_claim_lost(dataset).await,
            Err(error) => {
                // The claim runs out and the next holder tries again.
                tracing::warn!(dataset_id = %dataset.id, %error, "cannot mark a dataset failed");
                false
            }
        }
    }

    /// After a write found the claim gone: when the dataset was deleted, removes what this
    /// replica may have written and returns true (the parts may go too); when another replica
    /// took it over, leaves everything to that one.
    async fn after_claim_lost(&self, dataset: &Dataset) -> bool {
        match self.store.find_dataset_by_id(&dataset.id).await {
            Ok(None) => {
                self.discard_object(dataset).await;
                true
            }
            Ok(Some(_)) => {
                tracing::info!(dataset_id = %dataset.id, "dataset taken over by another replica");
                false
            }
            Err(error) => {
                tracing::warn!(dataset_id = %dataset.id, %error, "cannot tell whether a dataset was deleted");
                false
            }
        }
    }

    /// Lets any replica take the dataset over at once (its parts stay).
    async fn give_up_claim(&self, dataset: &Dataset) {
        if let Err(error) = self
            .store
            .release_dataset_claim(&dataset.id, &self.replica_id)
            .await
        {
            tracing::warn!(dataset_id = %dataset.id, %error, "cannot give up the claim on a dataset; it runs out");
        }
    }

    /// Removes an upload session's parts, whoever its owner.
    async fn remove_parts(&self, session_id: &str) {
        let owner = match self.store.get_upload_session(session_id).await {
            Ok(session) => session.created_by,
            Err(StoreError::NotFound { .. }) => return,
            Err(error) => {
                tracing::warn!(%session_id, %error, "cannot remove the parts of a processed upload");
                return;
            }
        };
        match self.uploads.abort(&owner, session_id).await {
            Ok(()) | Err(UploadError::SessionNotFound(_)) => {}
            Err(error) => {
                tracing::warn!(%session_id, %error, "cannot remove the parts of a processed upload");
            }
        }
    }

    /// This replica's claim, with a lease from now.
    fn claim(&self) -> DatasetClaim<'_> {
        let expires_at = chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(millis(self.policy.claim_ttl));
        DatasetClaim {
            replica_id: &self.replica_id,
            expires_at,
        }
    }

    /// Renews this replica's claim: `ClaimLost` when another one has it, or the dataset ended.
    async fn renew_claim(&self, dataset_id: &str) -> Result<(), DatasetError> {
        match self
            .store
            .renew_dataset_claim(dataset_id, self.claim())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(DatasetError::ClaimLost(dataset_id.to_owned())),
            Err(error) => {
                // Keep working: if the lease runs out meanwhile, the next write tells.
                tracing::warn!(%dataset_id, %error, "cannot renew the claim on a dataset");
                Ok(())
            }
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
            .update_dataset_progress(&dataset.id, self.claim(), DATASET_PROCESSING, 0.0)
            .await?
        {
            return Err(DatasetError::ClaimLost(dataset.id.clone()));
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
                    if !datasets
                        .store
                        .update_dataset_progress(
                            &dataset_id,
                            datasets.claim(),
                            DATASET_PROCESSING,
                            progress,
                        )
                        .await?
                    {
                        return Err(DatasetError::ClaimLost(dataset_id));
                    }
                    let part = datasets
                        .uploads
                        .part_stream(&completed, part_number)
                        .await
                        .map_err(DatasetError::from_part)?;
                    Ok::<_, DatasetError>(part.map_err(DatasetError::from_part))
                }
            })
            .try_flatten()
            .boxed();
        self.store_and_scan(dataset, chunks, &self.stopping).await
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

    /// Marks the dataset READY; false when this replica no longer holds it (deleted meanwhile,
    /// or taken over: see [`Self::after_claim_lost`]).
    async fn finish(&self, dataset: &Dataset, scanned: &ScannedFile) -> Result<bool, DatasetError> {
        let contents = DatasetContents {
            kind: scanned.kind.as_str().to_owned(),
            records: scanned.records,
            size_bytes: scanned.size_bytes,
            sha256: scanned.sha256.clone(),
            metrics_usage: scanned.metrics_usage.clone(),
        };
        Ok(self
            .store
            .mark_dataset_ready(&dataset.id, &self.replica_id, &contents)
            .await?)
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

/// How [`Datasets::resume`] left a dataset it took over.
enum Resumed {
    Processing,
    Failed,
    Deferred,
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
