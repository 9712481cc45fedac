//! Processing of chunked uploads and its claims: a dataset is copied from its parts by the
//! replica that holds its claim, resumed by any replica once nobody does, and failed only when
//! its file cannot be had again (see the module docs of [`super`], "Failure and races").

use std::sync::Arc;

use futures::stream::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::records::ScannedFile;
use super::{millis, DatasetError, Datasets, ResumeReport};
use crate::store::{
    ClaimedDataset, Dataset, DatasetClaim, DatasetContents, StoreError, DATASET_PROCESSING,
};
use crate::uploads::{CompletedUpload, UploadError, UploadProgress};

impl Datasets {
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
            crate::periodic::every(datasets.policy.sweep_interval, &shutdown, || async {
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
            })
            .await;
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

    pub(super) fn spawn_processing(&self, dataset: Dataset, completed: CompletedUpload) {
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
    pub(super) async fn after_claim_lost(&self, dataset: &Dataset) -> bool {
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
    pub(super) fn claim(&self) -> DatasetClaim<'_> {
        let expires_at = chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(millis(self.policy.claim_ttl));
        DatasetClaim {
            replica_id: &self.replica_id,
            expires_at,
        }
    }

    /// Renews this replica's claim: `ClaimLost` when another one has it, or the dataset ended.
    pub(super) async fn renew_claim(&self, dataset_id: &str) -> Result<(), DatasetError> {
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

    /// Marks the dataset READY; false when this replica no longer holds it (deleted meanwhile,
    /// or taken over: see [`Self::after_claim_lost`]).
    pub(super) async fn finish(
        &self,
        dataset: &Dataset,
        scanned: &ScannedFile,
    ) -> Result<bool, DatasetError> {
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
}

/// How [`Datasets::resume`] left a dataset it took over.
enum Resumed {
    Processing,
    Failed,
    Deferred,
}
