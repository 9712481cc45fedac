//! Interactions (completions) and their scores: batch inserts for the gateway, and the
//! list / filter / paginate / group / get queries of the management API.
//!
//! Pagination is by offset, carried in an opaque cursor (`o:<offset>`): simple, stable under
//! appends when ordered by `created_at, id`, and enough for the SDK's Relay-style pages.

use super::completion_filter::{CompletionCondition, CompletionFilter, Dialect, WhereClause};
use super::feedback::ScoreValue;
use super::{
    new_id, now_ms, ChatMessage, Completion, Label, MetadataStore, Metric, Score, StoreError,
};
use sha2::{Digest, Sha256};

/// One interaction as the gateway records it. `id` is the completion id the client saw; it is
/// the idempotency key of [`MetadataStore::insert_interactions`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewInteraction {
    pub id: String,
    pub project_id: String,
    pub model_service_id: Option<String>,
    pub model_id: Option<String>,
    pub chat_messages: Vec<ChatMessage>,
    pub completion: Option<String>,
    /// `LIVE` for gateway traffic.
    pub source: String,
    pub session_id: Option<String>,
    pub created_by: Option<String>,
    pub labels: Vec<Label>,
    /// `{parameters, timings, system}`.
    pub metadata: serde_json::Value,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub created_at: i64,
}

/// A score to record: `metric` is an id or key, linked to the completion's project.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScore {
    pub completion_id: String,
    pub metric: String,
    pub value: ScoreValue,
    pub reason: Option<String>,
    pub details: Option<String>,
    pub created_by: Option<String>,
    /// When the score was given, if the client says; else now.
    pub created_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionGroupBy {
    Model,
    Prompt,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionPage {
    pub nodes: Vec<Completion>,
    pub total_count: i64,
    pub position: PagePosition,
}

/// Where a page sits among all matches (Relay's `PageInfo`). A cursor is a position between
/// items: `after: c` reads from position `c` on, `before: c` reads the items before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePosition {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

impl PagePosition {
    fn of(offset: i64, len: usize, total: i64) -> PagePosition {
        let end = offset + len as i64;
        PagePosition {
            has_next_page: end < total,
            has_previous_page: offset > 0,
            start_cursor: (len > 0).then(|| encode_cursor(offset)),
            end_cursor: (len > 0).then(|| encode_cursor(end)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionGroup {
    /// The model key (or `""` without a model) or the prompt hash.
    pub key: String,
    pub count: i64,
}

/// Direct-score statistics of a set of completions for one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreStats {
    pub metric: Metric,
    pub scores: i64,
    pub average: f64,
    pub max: f64,
    pub min: f64,
    pub stddev: f64,
    pub sum: f64,
}

pub fn prompt_hash(messages: &[ChatMessage]) -> String {
    let mut hasher = Sha256::new();
    for message in messages {
        hasher.update(message.role.as_bytes());
        hasher.update([0]);
        hasher.update(message.content.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

pub fn encode_cursor(offset: i64) -> String {
    format!("o:{offset}")
}

pub fn decode_cursor(cursor: &str) -> Result<i64, StoreError> {
    cursor
        .strip_prefix("o:")
        .and_then(|offset| offset.parse::<i64>().ok())
        .filter(|offset| *offset >= 0)
        .ok_or_else(|| StoreError::Invalid(format!("invalid page cursor '{cursor}'")))
}

/// Insert one completion unless its id is stored already; returns the rows inserted (0 or 1).
pub(crate) async fn insert_completion_row(
    connection: &mut sqlx::AnyConnection,
    interaction: &NewInteraction,
) -> Result<u64, StoreError> {
    let result = sqlx::query(
        "INSERT INTO completions (id, project_id, model_service_id, model_id, prompt_hash, \
         chat_messages, completion, source, session_id, created_by, labels, metadata, \
         prompt_tokens, completion_tokens, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&interaction.id)
    .bind(&interaction.project_id)
    .bind(&interaction.model_service_id)
    .bind(&interaction.model_id)
    .bind(prompt_hash(&interaction.chat_messages))
    .bind(serde_json::to_string(&interaction.chat_messages)?)
    .bind(&interaction.completion)
    .bind(&interaction.source)
    .bind(&interaction.session_id)
    .bind(&interaction.created_by)
    .bind(serde_json::to_string(&interaction.labels)?)
    .bind(serde_json::to_string(&interaction.metadata)?)
    .bind(interaction.prompt_tokens)
    .bind(interaction.completion_tokens)
    .bind(interaction.created_at)
    .execute(&mut *connection)
    .await?;
    Ok(result.rows_affected())
}

pub(crate) async fn insert_score_row(
    connection: &mut sqlx::AnyConnection,
    score: &Score,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO scores (id, completion_id, metric_id, value, reason, details, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&score.id)
    .bind(&score.completion_id)
    .bind(&score.metric_id)
    .bind(score.value)
    .bind(&score.reason)
    .bind(&score.details)
    .bind(&score.created_by)
    .bind(score.created_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

const COMPLETION_COLUMNS: &str =
    "c.id, c.project_id, c.model_service_id, c.model_id, c.prompt_hash, \
     c.chat_messages, c.completion, c.source, c.session_id, c.created_by, c.labels, c.metadata, \
     c.prompt_tokens, c.completion_tokens, c.created_at";

/// Page request: `first` items after the cursor (or from `offset`), or `last` items before
/// the `before` cursor (or the last ones of all).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub first: Option<i64>,
    pub after: Option<String>,
    pub offset: Option<i64>,
    pub last: Option<i64>,
    pub before: Option<String>,
}

const MAX_PAGE: i64 = 1000;

impl PageRequest {
    /// `(limit, offset)` among `total` matches.
    fn resolve(&self, total: i64) -> Result<(i64, i64), StoreError> {
        let check = |name: &str, size: i64| {
            if (0..=MAX_PAGE).contains(&size) {
                Ok(size)
            } else {
                Err(StoreError::Invalid(format!(
                    "page.{name} must be between 0 and {MAX_PAGE}"
                )))
            }
        };
        let backward = self.last.is_some() || self.before.is_some();
        if backward {
            if self.first.is_some() || self.after.is_some() || self.offset.is_some() {
                return Err(StoreError::Invalid(
                    "page: use first/after/offset or last/before, not both".to_owned(),
                ));
            }
            let last = check("last", self.last.unwrap_or(20))?;
            let end = match &self.before {
                Some(cursor) => decode_cursor(cursor)?.min(total),
                None => total,
            };
            let offset = (end - last).max(0);
            return Ok((end - offset, offset));
        }
        let limit = check("first", self.first.unwrap_or(20))?;
        let offset = match (&self.after, self.offset) {
            (Some(cursor), _) => decode_cursor(cursor)?,
            (None, Some(offset)) if offset >= 0 => offset,
            (None, Some(_)) => {
                return Err(StoreError::Invalid(
                    "page.offset must not be negative".to_owned(),
                ))
            }
            (None, None) => 0,
        };
        Ok((limit, offset))
    }
}

impl MetadataStore {
    fn where_clause(&self, filter: &CompletionFilter) -> WhereClause {
        WhereClause::compile(filter, Dialect::from_backend_name(self.backend_name()))
    }

    /// Insert a batch of interactions in one transaction. A completion id that is already
    /// stored is skipped, so a retried batch is recorded exactly once. Returns the number of
    /// new rows.
    pub async fn insert_interactions(&self, batch: &[NewInteraction]) -> Result<u64, StoreError> {
        let mut transaction = self.pool().begin().await?;
        let mut inserted = 0;
        for interaction in batch {
            inserted += insert_completion_row(&mut transaction, interaction).await?;
        }
        transaction.commit().await?;
        Ok(inserted)
    }

    /// Record scores, all or none. Each metric must be linked to its completion's project;
    /// BOOL metrics accept true, false, 0 or 1, SCALAR metrics finite numbers.
    pub async fn insert_scores(&self, scores: &[NewScore]) -> Result<Vec<Score>, StoreError> {
        let mut prepared = Vec::with_capacity(scores.len());
        for score in scores {
            let project_id = self.completion_project_id(&score.completion_id).await?;
            prepared.push(self.prepare_score(score, &project_id).await?);
        }
        let mut transaction = self.pool().begin().await?;
        for score in &prepared {
            insert_score_row(&mut transaction, score).await?;
        }
        transaction.commit().await?;
        Ok(prepared)
    }

    /// The project of a stored completion; NotFound if there is none.
    pub async fn completion_project_id(&self, completion_id: &str) -> Result<String, StoreError> {
        let row = sqlx::query("SELECT project_id FROM completions WHERE id = $1")
            .bind(completion_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("completion", completion_id))?;
        super::rows::text(&row, "project_id")
    }

    /// Check a score against its metric as seen from `project_id`, and give it an id.
    pub(crate) async fn prepare_score(
        &self,
        score: &NewScore,
        project_id: &str,
    ) -> Result<Score, StoreError> {
        let metric = self.get_project_metric(&score.metric, project_id).await?;
        let value = score.value.for_metric(&metric)?;
        Ok(Score {
            id: new_id(),
            completion_id: score.completion_id.clone(),
            metric_id: metric.id,
            value,
            reason: score.reason.clone(),
            details: score.details.clone(),
            created_by: score.created_by.clone(),
            created_at: score.created_at.unwrap_or_else(now_ms),
        })
    }

    /// A page of completions, newest first unless `ascending`.
    pub async fn list_completions(
        &self,
        filter: &CompletionFilter,
        page: &PageRequest,
        ascending: bool,
    ) -> Result<CompletionPage, StoreError> {
        let conditions = self.where_clause(filter);
        let where_sql = conditions.sql();
        let count_sql = format!("SELECT COUNT(*) AS n FROM completions c {where_sql}");
        let count_row = conditions
            .bind(sqlx::query(&count_sql))
            .fetch_one(self.pool())
            .await?;
        let total_count = super::rows::int(&count_row, "n")?;
        let (limit, offset) = page.resolve(total_count)?;
        let direction = if ascending { "ASC" } else { "DESC" };
        let list_sql = format!(
            "SELECT {COMPLETION_COLUMNS} FROM completions c {where_sql} \
             ORDER BY c.created_at {direction}, c.id {direction} LIMIT {limit} OFFSET {offset}"
        );
        let rows = conditions
            .bind(sqlx::query(&list_sql))
            .fetch_all(self.pool())
            .await?;
        let nodes: Vec<Completion> = rows
            .iter()
            .map(Completion::from_row)
            .collect::<Result<_, _>>()?;
        Ok(CompletionPage {
            position: PagePosition::of(offset, nodes.len(), total_count),
            nodes,
            total_count,
        })
    }

    /// Groups of completions by model key or prompt hash, ordered by group key.
    pub async fn list_completion_groups(
        &self,
        filter: &CompletionFilter,
        group_by: CompletionGroupBy,
        page: &PageRequest,
    ) -> Result<(Vec<CompletionGroup>, i64, PagePosition), StoreError> {
        let conditions = self.where_clause(filter);
        let where_sql = conditions.sql();
        let group_expression = match group_by {
            CompletionGroupBy::Model => "COALESCE(m.key, '')",
            CompletionGroupBy::Prompt => "c.prompt_hash",
        };
        let from_sql =
            format!("FROM completions c LEFT JOIN models m ON m.id = c.model_id {where_sql}");
        let count_sql = format!(
            "SELECT COUNT(*) AS n FROM (SELECT {group_expression} AS group_key {from_sql} GROUP BY {group_expression}) g"
        );
        let count_row = conditions
            .bind(sqlx::query(&count_sql))
            .fetch_one(self.pool())
            .await?;
        let total_count = super::rows::int(&count_row, "n")?;
        let (limit, offset) = page.resolve(total_count)?;
        let list_sql = format!(
            "SELECT {group_expression} AS group_key, COUNT(*) AS n {from_sql} \
             GROUP BY {group_expression} ORDER BY group_key LIMIT {limit} OFFSET {offset}"
        );
        let rows = conditions
            .bind(sqlx::query(&list_sql))
            .fetch_all(self.pool())
            .await?;
        let groups: Vec<CompletionGroup> = rows
            .iter()
            .map(|row| {
                Ok(CompletionGroup {
                    key: super::rows::text(row, "group_key")?,
                    count: super::rows::int(row, "n")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let position = PagePosition::of(offset, groups.len(), total_count);
        Ok((groups, total_count, position))
    }

    /// Narrow a filter to one group of [`Self::list_completion_groups`].
    pub async fn filter_for_group(
        &self,
        filter: &CompletionFilter,
        group_by: CompletionGroupBy,
        group_key: &str,
    ) -> Result<CompletionFilter, StoreError> {
        let group_condition = match group_by {
            CompletionGroupBy::Prompt => {
                CompletionCondition::PromptHash(vec![group_key.to_owned()])
            }
            CompletionGroupBy::Model => {
                let model_id = match self.find_model(group_key).await? {
                    Some(model) => model.id,
                    None => String::new(),
                };
                CompletionCondition::Model(vec![model_id])
            }
        };
        Ok(filter.and(group_condition))
    }

    /// Direct-score statistics per metric over the completions a filter selects.
    pub async fn score_stats(
        &self,
        filter: &CompletionFilter,
    ) -> Result<Vec<ScoreStats>, StoreError> {
        let conditions = self.where_clause(filter);
        let where_sql = conditions.sql();
        let sql = format!(
            "SELECT s.metric_id, COUNT(*) AS n, SUM(s.value) AS total, SUM(s.value * s.value) AS squares, \
             MAX(s.value) AS high, MIN(s.value) AS low \
             FROM scores s JOIN completions c ON c.id = s.completion_id {where_sql} \
             GROUP BY s.metric_id ORDER BY s.metric_id"
        );
        let rows = conditions
            .bind(sqlx::query(&sql))
            .fetch_all(self.pool())
            .await?;
        let mut stats = Vec::with_capacity(rows.len());
        for row in &rows {
            use sqlx::Row;
            let metric_id = super::rows::text(row, "metric_id")?;
            let count = super::rows::int(row, "n")?;
            let sum: f64 = row.try_get("total")?;
            let squares: f64 = row.try_get("squares")?;
            let average = sum / count as f64;
            let variance = (squares / count as f64 - average * average).max(0.0);
            let metric = self
                .find_metric(&metric_id)
                .await?
                .ok_or_else(|| StoreError::not_found("metric", &metric_id))?;
            stats.push(ScoreStats {
                metric,
                scores: count,
                average,
                max: row.try_get("high")?,
                min: row.try_get("low")?,
                stddev: variance.sqrt(),
                sum,
            });
        }
        Ok(stats)
    }

    pub async fn get_completion(
        &self,
        project_id: &str,
        id: &str,
    ) -> Result<Completion, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COMPLETION_COLUMNS} FROM completions c WHERE c.project_id = $1 AND c.id = $2"
        ))
        .bind(project_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("completion", id))?;
        Completion::from_row(&row)
    }

    pub async fn scores_for_completion(
        &self,
        completion_id: &str,
    ) -> Result<Vec<Score>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, completion_id, metric_id, value, reason, details, created_by, created_at \
             FROM scores WHERE completion_id = $1 ORDER BY created_at, id",
        )
        .bind(completion_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Score::from_row).collect()
    }
}
