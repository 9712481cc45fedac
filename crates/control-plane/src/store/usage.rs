//! Usage (tokens per call) and score aggregates over time.
//!
//! The gateway records one usage row per completed call, stored or not, in the same
//! transaction as the interactions of its batch, keyed by the completion id so that a retried
//! batch counts each call once. Reads aggregate in SQL into 15-minute slots per
//! (project, model service, model, user, API key) and leave calendar bucketing, timezones and
//! the usage filter expressions to the caller ([`crate::time_buckets`], the GraphQL layer):
//! the slot rows are few, and the SQL stays in the subset both backends share.

use super::interactions::{insert_completion_row, NewInteraction};
use super::rows::{int, opt_text, text};
use super::{MetadataStore, StoreError};
use crate::time_buckets::SLOT_MS;

/// One completed inference call, as counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUsage {
    /// The completion id: the idempotency key.
    pub id: String,
    pub project_id: String,
    pub model_service_id: Option<String>,
    pub model_id: Option<String>,
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub created_at: i64,
}

/// Which usage rows to aggregate: a time range (`to` exclusive) and, when given, a set of
/// projects (an empty set matches nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageScan {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub project_ids: Option<Vec<String>>,
}

/// Usage summed over one 15-minute slot and one combination of the dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSlot {
    pub slot: i64,
    pub project_id: String,
    pub model_service_id: Option<String>,
    pub model_id: Option<String>,
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub calls: i64,
}

/// Scores of one metric summed over one slot and one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSlot {
    pub slot: i64,
    pub model_id: Option<String>,
    pub count: i64,
    pub sum: f64,
}

impl MetadataStore {
    /// The gateway's batch: the stored interactions and the usage of every call, all or none.
    /// Idempotent: rows already present (a retried batch) are skipped. Returns how many
    /// interactions were new.
    pub async fn insert_gateway_batch(
        &self,
        interactions: &[NewInteraction],
        usage: &[NewUsage],
    ) -> Result<u64, StoreError> {
        let mut transaction = self.pool().begin().await?;
        let mut inserted = 0;
        for interaction in interactions {
            inserted += insert_completion_row(&mut transaction, interaction).await?;
        }
        for call in usage {
            insert_usage_row(&mut transaction, call).await?;
        }
        transaction.commit().await?;
        Ok(inserted)
    }

    /// Usage aggregated into slots, oldest first.
    pub async fn usage_slots(&self, scan: &UsageScan) -> Result<Vec<UsageSlot>, StoreError> {
        let mut sql = format!(
            "SELECT (created_at / {SLOT_MS}) * {SLOT_MS} AS slot, project_id, model_service_id, \
             model_id, user_id, api_key_id, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, COUNT(*) AS calls \
             FROM usage_events WHERE created_at >= $1 AND created_at < $2"
        );
        if let Some(projects) = &scan.project_ids {
            if projects.is_empty() {
                return Ok(Vec::new());
            }
            let placeholders: Vec<String> = (0..projects.len())
                .map(|index| format!("${}", index + 3))
                .collect();
            sql.push_str(&format!(" AND project_id IN ({})", placeholders.join(", ")));
        }
        sql.push_str(
            " GROUP BY slot, project_id, model_service_id, model_id, user_id, api_key_id \
             ORDER BY slot",
        );
        let mut query = sqlx::query(&sql)
            .bind(scan.from.unwrap_or(i64::MIN))
            .bind(scan.to.unwrap_or(i64::MAX));
        for project in scan.project_ids.iter().flatten() {
            query = query.bind(project.as_str());
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(UsageSlot {
                    slot: int(row, "slot")?,
                    project_id: text(row, "project_id")?,
                    model_service_id: opt_text(row, "model_service_id")?,
                    model_id: opt_text(row, "model_id")?,
                    user_id: opt_text(row, "user_id")?,
                    api_key_id: opt_text(row, "api_key_id")?,
                    prompt_tokens: int(row, "prompt_tokens")?,
                    completion_tokens: int(row, "completion_tokens")?,
                    calls: int(row, "calls")?,
                })
            })
            .collect()
    }

    /// Scores of `metric_id` on the completions of `project_id`, aggregated into slots per
    /// model, oldest first.
    pub async fn score_slots(
        &self,
        project_id: &str,
        metric_id: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<ScoreSlot>, StoreError> {
        let sql = format!(
            "SELECT (s.created_at / {SLOT_MS}) * {SLOT_MS} AS slot, c.model_id AS model_id, \
             COUNT(*) AS n, CAST(SUM(s.value) AS DOUBLE PRECISION) AS total \
             FROM scores s JOIN completions c ON c.id = s.completion_id \
             WHERE s.metric_id = $1 AND c.project_id = $2 \
             AND s.created_at >= $3 AND s.created_at < $4 \
             GROUP BY slot, c.model_id ORDER BY slot"
        );
        let rows = sqlx::query(&sql)
            .bind(metric_id)
            .bind(project_id)
            .bind(from.unwrap_or(i64::MIN))
            .bind(to.unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ScoreSlot {
                    slot: int(row, "slot")?,
                    model_id: opt_text(row, "model_id")?,
                    count: int(row, "n")?,
                    sum: sqlx::Row::try_get(row, "total").map_err(StoreError::from)?,
                })
            })
            .collect()
    }
}

async fn insert_usage_row(
    connection: &mut sqlx::AnyConnection,
    usage: &NewUsage,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO usage_events (id, project_id, model_service_id, model_id, user_id, \
         api_key_id, prompt_tokens, completion_tokens, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&usage.id)
    .bind(&usage.project_id)
    .bind(&usage.model_service_id)
    .bind(&usage.model_id)
    .bind(&usage.user_id)
    .bind(&usage.api_key_id)
    .bind(usage.prompt_tokens)
    .bind(usage.completion_tokens)
    .bind(usage.created_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
