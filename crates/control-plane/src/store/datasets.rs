//! Dataset metadata and processing state (`migrations/0006_datasets.sql`,
//! `0007_dataset_processing.sql`). The file itself is an object; see [`crate::datasets`].
//!
//! # Claims
//!
//! Processing a dataset is the work of one replica at a time: the one whose id is in the row's
//! `claimed_by` while its lease (`claim_expires_at`) runs. Every write of the processing (
//! progress, READY, FAILED) is conditional on holding the claim, so a replica that stalled past
//! its lease and lost the dataset to another one cannot overwrite what that one does. A new
//! row is claimed by the replica that inserts it; a row whose lease ran out, or whose claim was
//! given up, is taken over with one conditional `UPDATE` ([`MetadataStore::claim_dataset`]),
//! which two replicas cannot both win.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::rows::{int, opt_int, opt_text, text};
use super::{looks_like_id, now_ms, unique_violation, MetadataStore, StoreError};

/// A dataset of a project.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub id: String,
    pub project_id: String,
    pub key: String,
    pub name: String,
    /// `PROMPT`, `PROMPT_COMPLETION`, `PROMPT_COMPLETION_SCORE` or `PREFERENCE`.
    pub kind: String,
    /// `UPLOADED`, `GENERATED`, `GENERATING` or `FILTERED`.
    pub source: String,
    /// `PENDING`, `PROCESSING`, `READY` or `FAILED`.
    pub status: String,
    /// Fraction of the file processed, 0 to 1.
    pub progress: f64,
    pub error: Option<String>,
    pub records: Option<i64>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub upload_session_id: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Per metric key the records name, by key (empty until READY).
    pub metrics_usage: Vec<DatasetMetricCount>,
}

/// How many records of a dataset carry a score, and how many a comparison (a preference), for
/// one metric key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetMetricCount {
    pub metric: String,
    pub score_count: i64,
    pub comparison_count: i64,
}

/// A replica's claim on the processing of a dataset: who holds it, and until when (ms since
/// the epoch) unless renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetClaim<'a> {
    pub replica_id: &'a str,
    pub expires_at: i64,
}

/// A dataset just claimed for processing.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDataset {
    pub dataset: Dataset,
    /// How many claims on it ran out before this one (replicas that died processing it).
    pub expired_claims: i64,
}

pub const DATASET_PENDING: &str = "PENDING";
pub const DATASET_PROCESSING: &str = "PROCESSING";
pub const DATASET_READY: &str = "READY";
pub const DATASET_FAILED: &str = "FAILED";

/// What a processed file turned out to hold.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetContents {
    pub kind: String,
    pub records: i64,
    pub size_bytes: i64,
    pub sha256: String,
    pub metrics_usage: Vec<DatasetMetricCount>,
}

const DATASET_COLUMNS: &str = "id, project_id, key, name, kind, source, status, progress, error, \
                               records, size_bytes, sha256, upload_session_id, created_by, \
                               created_at, updated_at, metrics_usage";

impl Dataset {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            project_id: text(row, "project_id")?,
            key: text(row, "key")?,
            name: text(row, "name")?,
            kind: text(row, "kind")?,
            source: text(row, "source")?,
            status: text(row, "status")?,
            progress: row.try_get::<f64, _>("progress")?,
            error: opt_text(row, "error")?,
            records: opt_int(row, "records")?,
            size_bytes: opt_int(row, "size_bytes")?,
            sha256: opt_text(row, "sha256")?,
            upload_session_id: opt_text(row, "upload_session_id")?,
            created_by: opt_text(row, "created_by")?,
            created_at: int(row, "created_at")?,
            updated_at: int(row, "updated_at")?,
            metrics_usage: match opt_text(row, "metrics_usage")? {
                Some(usage) => serde_json::from_str(&usage)?,
                None => Vec::new(),
            },
        })
    }
}

impl MetadataStore {
    /// Inserts a new dataset row, claimed for processing by `claim`; `already_exists` when the
    /// project has the key.
    pub async fn insert_dataset(
        &self,
        dataset: &Dataset,
        claim: DatasetClaim<'_>,
    ) -> Result<(), StoreError> {
        let metrics_usage = usage_json(&dataset.metrics_usage)?;
        sqlx::query(&format!(
            "INSERT INTO datasets ({DATASET_COLUMNS}, claimed_by, claim_expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19)"
        ))
        .bind(&dataset.id)
        .bind(&dataset.project_id)
        .bind(&dataset.key)
        .bind(&dataset.name)
        .bind(&dataset.kind)
        .bind(&dataset.source)
        .bind(&dataset.status)
        .bind(dataset.progress)
        .bind(&dataset.error)
        .bind(dataset.records)
        .bind(dataset.size_bytes)
        .bind(&dataset.sha256)
        .bind(&dataset.upload_session_id)
        .bind(&dataset.created_by)
        .bind(dataset.created_at)
        .bind(dataset.updated_at)
        .bind(metrics_usage)
        .bind(claim.replica_id)
        .bind(claim.expires_at)
        .execute(self.pool())
        .await
        .map_err(|error| unique_violation(error, "dataset", &dataset.key))?;
        Ok(())
    }

    /// A project's dataset by id or key.
    pub async fn find_dataset(
        &self,
        project_id: &str,
        id_or_key: &str,
    ) -> Result<Option<Dataset>, StoreError> {
        let column = if looks_like_id(id_or_key) {
            "id"
        } else {
            "key"
        };
        let row = sqlx::query(&format!(
            "SELECT {DATASET_COLUMNS} FROM datasets WHERE project_id = $1 AND {column} = $2"
        ))
        .bind(project_id)
        .bind(id_or_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(Dataset::from_row).transpose()
    }

    pub async fn get_dataset(
        &self,
        project_id: &str,
        id_or_key: &str,
    ) -> Result<Dataset, StoreError> {
        self.find_dataset(project_id, id_or_key)
            .await?
            .ok_or_else(|| StoreError::not_found("dataset", id_or_key))
    }

    /// A project's datasets, oldest first.
    pub async fn list_datasets(&self, project_id: &str) -> Result<Vec<Dataset>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DATASET_COLUMNS} FROM datasets WHERE project_id = $1 \
             ORDER BY created_at, key"
        ))
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Dataset::from_row).collect()
    }

    /// A dataset by id, whatever its project; `None` when there is none.
    pub async fn find_dataset_by_id(&self, id: &str) -> Result<Option<Dataset>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DATASET_COLUMNS} FROM datasets WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(Dataset::from_row).transpose()
    }

    /// Moves a dataset that `claim` holds to `status` with `progress`, renewing the lease.
    /// False when the claim is no longer held (the dataset was deleted or finished, or another
    /// replica took it over).
    pub async fn update_dataset_progress(
        &self,
        id: &str,
        claim: DatasetClaim<'_>,
        status: &str,
        progress: f64,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE datasets SET status = $3, progress = $4, claim_expires_at = $5, \
             updated_at = $6 \
             WHERE id = $1 AND claimed_by = $2 AND status IN ('PENDING', 'PROCESSING')",
        )
        .bind(id)
        .bind(claim.replica_id)
        .bind(status)
        .bind(progress)
        .bind(claim.expires_at)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Renews the lease of `claim`; false when the claim is no longer held.
    pub async fn renew_dataset_claim(
        &self,
        id: &str,
        claim: DatasetClaim<'_>,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE datasets SET claim_expires_at = $3 \
             WHERE id = $1 AND claimed_by = $2 AND status IN ('PENDING', 'PROCESSING')",
        )
        .bind(id)
        .bind(claim.replica_id)
        .bind(claim.expires_at)
        .execute(self.pool())
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives up `replica_id`'s claim so that any replica may take the dataset over at once
    /// (a replica stopping mid-processing). False when it did not hold it.
    pub async fn release_dataset_claim(
        &self,
        id: &str,
        replica_id: &str,
    ) -> Result<bool, StoreError> {
        let released = sqlx::query(
            "UPDATE datasets SET claimed_by = NULL, claim_expires_at = 0, updated_at = $3 \
             WHERE id = $1 AND claimed_by = $2 AND status IN ('PENDING', 'PROCESSING')",
        )
        .bind(id)
        .bind(replica_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(released.rows_affected() == 1)
    }

    /// Ids of the datasets pending or processing that nobody holds at `now_ms`: the claim was
    /// given up or its lease ran out; rows without a lease (written before leases existed)
    /// when they have not moved since `legacy_stall_cutoff_ms`.
    pub async fn datasets_to_claim(
        &self,
        now_ms: i64,
        legacy_stall_cutoff_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM datasets WHERE status IN ('PENDING', 'PROCESSING') \
             AND (claim_expires_at < $1 \
                  OR (claim_expires_at IS NULL AND updated_at < $2)) \
             ORDER BY created_at, id",
        )
        .bind(now_ms)
        .bind(legacy_stall_cutoff_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| text(row, "id")).collect()
    }

    /// Takes a dataset over for `claim` if nobody holds it (the same conditions as
    /// [`Self::datasets_to_claim`], checked again in the `UPDATE`, so of replicas racing for it
    /// exactly one wins). `None` when it was not claimable (anymore).
    pub async fn claim_dataset(
        &self,
        id: &str,
        claim: DatasetClaim<'_>,
        legacy_stall_cutoff_ms: i64,
    ) -> Result<Option<ClaimedDataset>, StoreError> {
        let now = now_ms();
        // A claim that is still named ran out (its replica died); a given-up one did not.
        let claimed = sqlx::query(
            "UPDATE datasets SET claimed_by = $2, claim_expires_at = $3, updated_at = $4, \
             expired_claims = expired_claims + CASE WHEN claimed_by IS NULL THEN 0 ELSE 1 END \
             WHERE id = $1 AND status IN ('PENDING', 'PROCESSING') \
             AND (claim_expires_at < $4 \
                  OR (claim_expires_at IS NULL AND updated_at < $5))",
        )
        .bind(id)
        .bind(claim.replica_id)
        .bind(claim.expires_at)
        .bind(now)
        .bind(legacy_stall_cutoff_ms)
        .execute(self.pool())
        .await?;
        if claimed.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {DATASET_COLUMNS}, expired_claims FROM datasets \
             WHERE id = $1 AND claimed_by = $2"
        ))
        .bind(id)
        .bind(claim.replica_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(ClaimedDataset {
            dataset: Dataset::from_row(&row)?,
            expired_claims: int(&row, "expired_claims")?,
        }))
    }

    /// Marks a dataset that `replica_id` holds READY with what its file holds, giving the
    /// claim up. False when the claim is no longer held (deleted, or taken over).
    pub async fn mark_dataset_ready(
        &self,
        id: &str,
        replica_id: &str,
        contents: &DatasetContents,
    ) -> Result<bool, StoreError> {
        let metrics_usage = usage_json(&contents.metrics_usage)?;
        let updated = sqlx::query(
            "UPDATE datasets SET status = 'READY', progress = 1.0, error = NULL, kind = $3, \
             records = $4, size_bytes = $5, sha256 = $6, metrics_usage = $7, updated_at = $8, \
             claimed_by = NULL, claim_expires_at = NULL \
             WHERE id = $1 AND claimed_by = $2 AND status IN ('PENDING', 'PROCESSING')",
        )
        .bind(id)
        .bind(replica_id)
        .bind(&contents.kind)
        .bind(contents.records)
        .bind(contents.size_bytes)
        .bind(&contents.sha256)
        .bind(metrics_usage)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Marks a dataset that `replica_id` holds FAILED with the reason the uploader will read,
    /// giving the claim up. False when the claim is no longer held.
    pub async fn mark_dataset_failed(
        &self,
        id: &str,
        replica_id: &str,
        error: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE datasets SET status = 'FAILED', error = $3, updated_at = $4, \
             claimed_by = NULL, claim_expires_at = NULL \
             WHERE id = $1 AND claimed_by = $2 AND status IN ('PENDING', 'PROCESSING')",
        )
        .bind(id)
        .bind(replica_id)
        .bind(error)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Deletes a dataset row (its object is the caller's to remove first). False when it was
    /// already gone.
    pub async fn delete_dataset(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM datasets WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(deleted.rows_affected() == 1)
    }
}

/// `metrics_usage` as stored: JSON, NULL when empty.
fn usage_json(usage: &[DatasetMetricCount]) -> Result<Option<String>, StoreError> {
    if usage.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_string(usage)?))
}
