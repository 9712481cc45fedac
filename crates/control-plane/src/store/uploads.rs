//! Chunked upload sessions and the parts received for them (`migrations/0004_uploads.sql`).
//! Only bookkeeping lives here; the part bytes are objects, see [`crate::uploads`].

use sqlx::any::AnyRow;

use super::rows::{int, opt_int, opt_text, text};
use super::{now_ms, MetadataStore, StoreError};

/// A chunked upload session.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSession {
    pub id: String,
    pub created_by: String,
    pub content_type: Option<String>,
    /// A JSON object, as the client sent it.
    pub metadata: Option<String>,
    pub total_parts_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
}

/// A part received for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPart {
    pub part_number: i64,
    pub size_bytes: i64,
}

const SESSION_COLUMNS: &str = "id, created_by, content_type, metadata, total_parts_count, \
                               created_at, updated_at, completed_at";

impl UploadSession {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            created_by: text(row, "created_by")?,
            content_type: opt_text(row, "content_type")?,
            metadata: opt_text(row, "metadata")?,
            total_parts_count: int(row, "total_parts_count")?,
            created_at: int(row, "created_at")?,
            updated_at: int(row, "updated_at")?,
            completed_at: opt_int(row, "completed_at")?,
        })
    }
}

impl MetadataStore {
    pub async fn insert_upload_session(&self, session: &UploadSession) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO upload_sessions ({SESSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&session.id)
        .bind(&session.created_by)
        .bind(&session.content_type)
        .bind(&session.metadata)
        .bind(session.total_parts_count)
        .bind(session.created_at)
        .bind(session.updated_at)
        .bind(session.completed_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn get_upload_session(&self, id: &str) -> Result<UploadSession, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM upload_sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref()
            .map(UploadSession::from_row)
            .transpose()?
            .ok_or_else(|| StoreError::not_found("upload session", id))
    }

    /// The parts received so far, by part number.
    pub async fn list_upload_parts(&self, session_id: &str) -> Result<Vec<UploadPart>, StoreError> {
        let rows = sqlx::query(
            "SELECT part_number, size_bytes FROM upload_parts \
             WHERE session_id = $1 ORDER BY part_number",
        )
        .bind(session_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UploadPart {
                    part_number: int(row, "part_number")?,
                    size_bytes: int(row, "size_bytes")?,
                })
            })
            .collect()
    }

    /// Records a part whose object has been written; a part received again replaces the first.
    /// Refused with `conflict` once the session is completed, and `not_found` once it is gone.
    pub async fn record_upload_part(
        &self,
        session_id: &str,
        part: UploadPart,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut transaction = self.pool().begin().await?;
        let touched = sqlx::query(
            "UPDATE upload_sessions SET updated_at = $2 WHERE id = $1 AND completed_at IS NULL",
        )
        .bind(session_id)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        if touched.rows_affected() == 0 {
            let exists = sqlx::query("SELECT id FROM upload_sessions WHERE id = $1")
                .bind(session_id)
                .fetch_optional(&mut *transaction)
                .await?
                .is_some();
            if !exists {
                return Err(StoreError::not_found("upload session", session_id));
            }
            return Err(StoreError::Conflict(format!(
                "upload session '{session_id}' is already completed"
            )));
        }
        sqlx::query(
            "INSERT INTO upload_parts (session_id, part_number, size_bytes, uploaded_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (session_id, part_number) \
             DO UPDATE SET size_bytes = excluded.size_bytes, uploaded_at = excluded.uploaded_at",
        )
        .bind(session_id)
        .bind(part.part_number)
        .bind(part.size_bytes)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Marks a session as taken by an import. False when it was completed already.
    pub async fn complete_upload_session(&self, session_id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE upload_sessions SET completed_at = $2, updated_at = $2 \
             WHERE id = $1 AND completed_at IS NULL",
        )
        .bind(session_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Deletes a session and its part rows (the objects are the caller's to remove first).
    pub async fn delete_upload_session(&self, session_id: &str) -> Result<(), StoreError> {
        let mut transaction = self.pool().begin().await?;
        sqlx::query("DELETE FROM upload_parts WHERE session_id = $1")
            .bind(session_id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query("DELETE FROM upload_sessions WHERE id = $1")
            .bind(session_id)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The dataset still pending or processing that reads `session_id`'s parts, if any: its
    /// processing may be resumed from them, so they must stay.
    pub async fn dataset_reading_upload_session(
        &self,
        session_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM datasets WHERE upload_session_id = $1 \
             AND status IN ('PENDING', 'PROCESSING') ORDER BY id LIMIT 1",
        )
        .bind(session_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(|row| text(row, "id")).transpose()
    }

    /// Ids of the sessions with no activity since `cutoff_ms` (completed ones included: their
    /// import has had that long to read the parts), except those a dataset still pending or
    /// processing reads: its processing may be resumed from them after any delay, and they go
    /// once it is READY or FAILED.
    pub async fn upload_sessions_idle_since(
        &self,
        cutoff_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM upload_sessions WHERE updated_at < $1 \
             AND id NOT IN (SELECT upload_session_id FROM datasets \
                            WHERE status IN ('PENDING', 'PROCESSING') \
                            AND upload_session_id IS NOT NULL) \
             ORDER BY id",
        )
        .bind(cutoff_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| text(row, "id")).collect()
    }
}
