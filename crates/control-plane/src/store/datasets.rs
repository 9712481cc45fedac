//! Dataset metadata and processing state (`migrations/0006_datasets.sql`). The file itself is
//! an object; see [`crate::datasets`].

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
}

const DATASET_COLUMNS: &str = "id, project_id, key, name, kind, source, status, progress, error, \
                               records, size_bytes, sha256, upload_session_id, created_by, \
                               created_at, updated_at";

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
        })
    }
}

impl MetadataStore {
    /// Inserts a new dataset row; `already_exists` when the project has the key.
    pub async fn insert_dataset(&self, dataset: &Dataset) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO datasets ({DATASET_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
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

    /// Moves a dataset that is still being processed to `status` with `progress`. False when
    /// it is no longer pending or processing (deleted, or finished by someone else).
    pub async fn update_dataset_progress(
        &self,
        id: &str,
        status: &str,
        progress: f64,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE datasets SET status = $2, progress = $3, updated_at = $4 \
             WHERE id = $1 AND status IN ('PENDING', 'PROCESSING')",
        )
        .bind(id)
        .bind(status)
        .bind(progress)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Marks a dataset READY with what its file holds. False when it was deleted or failed
    /// meanwhile.
    pub async fn mark_dataset_ready(
        &self,
        id: &str,
        contents: &DatasetContents,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE datasets SET status = 'READY', progress = 1.0, error = NULL, kind = $2, \
             records = $3, size_bytes = $4, sha256 = $5, updated_at = $6 \
             WHERE id = $1 AND status IN ('PENDING', 'PROCESSING')",
        )
        .bind(id)
        .bind(&contents.kind)
        .bind(contents.records)
        .bind(contents.size_bytes)
        .bind(&contents.sha256)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Marks a dataset FAILED with the reason the uploader will read.
    pub async fn mark_dataset_failed(&self, id: &str, error: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE datasets SET status = 'FAILED', error = $2, updated_at = $3 \
             WHERE id = $1 AND status IN ('PENDING', 'PROCESSING')",
        )
        .bind(id)
        .bind(error)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Ids of datasets pending or processing with no progress since `cutoff_ms`.
    pub async fn datasets_stalled_since(&self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM datasets WHERE status IN ('PENDING', 'PROCESSING') \
             AND updated_at < $1 ORDER BY id",
        )
        .bind(cutoff_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| text(row, "id")).collect()
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
