//! Compute pools: named sets of identical harmony replicas. A pool is recorded the first time a
//! replica of it registers (or when configured); its live replicas are in [`crate::registry`].

use super::{looks_like_id, new_id, now_ms, validate_key, ComputePool, MetadataStore, StoreError};

impl MetadataStore {
    /// A pool by key, created if it does not exist.
    pub async fn ensure_compute_pool(
        &self,
        key: &str,
        name: &str,
    ) -> Result<ComputePool, StoreError> {
        validate_key("compute pool", key)?;
        sqlx::query(
            "INSERT INTO compute_pools (id, key, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(new_id())
        .bind(key)
        .bind(name)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.find_compute_pool(key)
            .await?
            .ok_or_else(|| StoreError::not_found("compute pool", key))
    }

    pub async fn find_compute_pool(
        &self,
        id_or_key: &str,
    ) -> Result<Option<ComputePool>, StoreError> {
        let column = if looks_like_id(id_or_key) {
            "id"
        } else {
            "key"
        };
        let row = sqlx::query(&format!(
            "SELECT id, key, name, created_at FROM compute_pools WHERE {column} = $1"
        ))
        .bind(id_or_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(ComputePool::from_row).transpose()
    }

    pub async fn list_compute_pools(&self) -> Result<Vec<ComputePool>, StoreError> {
        let rows = sqlx::query("SELECT id, key, name, created_at FROM compute_pools ORDER BY key")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(ComputePool::from_row).collect()
    }
}
