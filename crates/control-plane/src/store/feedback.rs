//! Feedback on interactions beyond the gateway's writes: interactions imported with their
//! scores, preferences between two completions (comparisons) and outcomes of whole sessions.
//!
//! Every write checks first (project, metric linked to the project, values fitting the metric's
//! kind, completions of the project) and then writes all its rows in one transaction, so a
//! request that is refused leaves nothing behind and one that is acknowledged is stored.

use sqlx::any::AnyRow;

use super::interactions::{insert_completion_row, insert_score_row};
use super::rows::{int, opt_text, text};
use super::{new_id, now_ms, MetadataStore, Metric, NewInteraction, NewScore, Score, StoreError};

/// A score as a client sends it. BOOL metrics take `true`, `false`, `0` or `1`; SCALAR metrics
/// take finite numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreValue {
    Number(f64),
    Bool(bool),
}

impl From<f64> for ScoreValue {
    fn from(number: f64) -> Self {
        ScoreValue::Number(number)
    }
}

impl From<bool> for ScoreValue {
    fn from(flag: bool) -> Self {
        ScoreValue::Bool(flag)
    }
}

impl ScoreValue {
    /// A JSON number or boolean; anything else is Invalid.
    pub fn from_json(value: &serde_json::Value) -> Result<ScoreValue, StoreError> {
        match value {
            serde_json::Value::Bool(flag) => Ok(ScoreValue::Bool(*flag)),
            serde_json::Value::Number(number) => {
                number.as_f64().map(ScoreValue::Number).ok_or_else(|| {
                    StoreError::Invalid(format!("score value {number} is not a number"))
                })
            }
            other => Err(StoreError::Invalid(format!(
                "a score value must be a number or a boolean, got {other}"
            ))),
        }
    }

    /// The number stored for this value scored against `metric`.
    pub fn for_metric(self, metric: &Metric) -> Result<f64, StoreError> {
        let is_bool_metric = metric.kind == "BOOL";
        match self {
            ScoreValue::Bool(flag) if is_bool_metric => Ok(f64::from(u8::from(flag))),
            ScoreValue::Bool(_) => Err(StoreError::Invalid(format!(
                "metric '{}' is SCALAR: a score must be a number, got a boolean",
                metric.key
            ))),
            ScoreValue::Number(number) if !number.is_finite() => Err(StoreError::Invalid(
                "a score must be a finite number".to_owned(),
            )),
            ScoreValue::Number(number) if is_bool_metric && number != 0.0 && number != 1.0 => {
                Err(StoreError::Invalid(format!(
                    "metric '{}' is BOOL: a score must be true, false, 0 or 1, got {number}",
                    metric.key
                )))
            }
            ScoreValue::Number(number) => Ok(number),
        }
    }
}

/// One side of a comparison: a stored completion of the project, or a new one to record with
/// the comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum ComparedCompletion {
    Stored(String),
    New(Box<NewInteraction>),
}

impl ComparedCompletion {
    fn id(&self) -> &str {
        match self {
            ComparedCompletion::Stored(id) => id,
            ComparedCompletion::New(interaction) => &interaction.id,
        }
    }
}

/// Input of [`MetadataStore::record_comparison`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewComparison {
    pub project_id: String,
    /// Id or key, linked to the project.
    pub metric: String,
    pub preferred: ComparedCompletion,
    pub other: ComparedCompletion,
    /// `None`: `preferred` won; `"good"` / `"bad"`: both were equally good or bad.
    pub tied: Option<String>,
    pub created_by: Option<String>,
}

/// A recorded preference between two completions.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub id: String,
    pub project_id: String,
    pub metric_id: String,
    pub preferred_completion_id: String,
    pub other_completion_id: String,
    pub tied: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
}

impl Comparison {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            project_id: text(row, "project_id")?,
            metric_id: text(row, "metric_id")?,
            preferred_completion_id: text(row, "preferred_completion_id")?,
            other_completion_id: text(row, "other_completion_id")?,
            tied: opt_text(row, "tied")?,
            created_by: opt_text(row, "created_by")?,
            created_at: int(row, "created_at")?,
        })
    }
}

/// Input of [`MetadataStore::record_outcome`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutcome {
    /// Id or key.
    pub project: String,
    /// Id or key, linked to the project.
    pub metric: String,
    pub session_id: String,
    pub value: ScoreValue,
    pub user_id: Option<String>,
    pub created_by: Option<String>,
}

/// A recorded outcome of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: String,
    pub project_id: String,
    pub metric_id: String,
    pub session_id: String,
    pub value: f64,
    pub user_id: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
}

const COMPARISON_COLUMNS: &str = "id, project_id, metric_id, preferred_completion_id, \
     other_completion_id, tied, created_by, created_at";

impl MetadataStore {
    /// Import one interaction with its scores (whose `completion_id` must be the
    /// interaction's id): every score is checked before anything is written, then the
    /// completion and its scores are written together.
    pub async fn record_interaction(
        &self,
        interaction: &NewInteraction,
        scores: &[NewScore],
    ) -> Result<Vec<Score>, StoreError> {
        let mut prepared = Vec::with_capacity(scores.len());
        for score in scores {
            debug_assert_eq!(score.completion_id, interaction.id);
            prepared.push(self.prepare_score(score, &interaction.project_id).await?);
        }
        let mut transaction = self.pool().begin().await?;
        if insert_completion_row(&mut transaction, interaction).await? == 0 {
            return Err(StoreError::AlreadyExists {
                what: "completion",
                key: interaction.id.clone(),
            });
        }
        for score in &prepared {
            insert_score_row(&mut transaction, score).await?;
        }
        transaction.commit().await?;
        Ok(prepared)
    }

    /// Record a preference between two different completions of the project, writing the new
    /// completions it brings along in the same transaction.
    pub async fn record_comparison(
        &self,
        comparison: NewComparison,
    ) -> Result<Comparison, StoreError> {
        let metric = self
            .get_project_metric(&comparison.metric, &comparison.project_id)
            .await?;
        if let Some(tied) = &comparison.tied {
            if !matches!(tied.as_str(), "good" | "bad") {
                return Err(StoreError::Invalid(format!(
                    "tied must be 'good' or 'bad', got '{tied}'"
                )));
            }
        }
        if comparison.preferred.id() == comparison.other.id() {
            return Err(StoreError::Invalid(
                "a comparison needs two different completions".to_owned(),
            ));
        }
        for side in [&comparison.preferred, &comparison.other] {
            match side {
                ComparedCompletion::Stored(id) => {
                    self.get_completion(&comparison.project_id, id).await?;
                }
                ComparedCompletion::New(interaction)
                    if interaction.project_id != comparison.project_id =>
                {
                    return Err(StoreError::Invalid(
                        "a compared completion belongs to another project".to_owned(),
                    ));
                }
                ComparedCompletion::New(_) => {}
            }
        }
        let recorded = Comparison {
            id: new_id(),
            project_id: comparison.project_id.clone(),
            metric_id: metric.id,
            preferred_completion_id: comparison.preferred.id().to_owned(),
            other_completion_id: comparison.other.id().to_owned(),
            tied: comparison.tied.clone(),
            created_by: comparison.created_by.clone(),
            created_at: now_ms(),
        };
        let mut transaction = self.pool().begin().await?;
        for side in [&comparison.preferred, &comparison.other] {
            if let ComparedCompletion::New(interaction) = side {
                insert_completion_row(&mut transaction, interaction).await?;
            }
        }
        sqlx::query(&format!(
            "INSERT INTO comparisons ({COMPARISON_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&recorded.id)
        .bind(&recorded.project_id)
        .bind(&recorded.metric_id)
        .bind(&recorded.preferred_completion_id)
        .bind(&recorded.other_completion_id)
        .bind(&recorded.tied)
        .bind(&recorded.created_by)
        .bind(recorded.created_at)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(recorded)
    }

    /// The comparisons a completion takes part in, on either side, oldest first.
    pub async fn comparisons_for_completion(
        &self,
        completion_id: &str,
    ) -> Result<Vec<Comparison>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COMPARISON_COLUMNS} FROM comparisons \
             WHERE preferred_completion_id = $1 OR other_completion_id = $1 ORDER BY created_at, id"
        ))
        .bind(completion_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Comparison::from_row).collect()
    }

    pub async fn metric_has_comparisons(&self, metric_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM comparisons WHERE metric_id = $1")
            .bind(metric_id)
            .fetch_one(self.pool())
            .await?;
        Ok(int(&row, "n")? > 0)
    }

    /// Record the outcome of a session against a metric of the project.
    pub async fn record_outcome(&self, outcome: NewOutcome) -> Result<Outcome, StoreError> {
        let project = self.get_project(&outcome.project).await?;
        let metric = self
            .get_project_metric(&outcome.metric, &project.id)
            .await?;
        let recorded = Outcome {
            id: new_id(),
            project_id: project.id,
            value: outcome.value.for_metric(&metric)?,
            metric_id: metric.id,
            session_id: outcome.session_id,
            user_id: outcome.user_id,
            created_by: outcome.created_by,
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO outcomes (id, project_id, metric_id, session_id, value, user_id, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&recorded.id)
        .bind(&recorded.project_id)
        .bind(&recorded.metric_id)
        .bind(&recorded.session_id)
        .bind(recorded.value)
        .bind(&recorded.user_id)
        .bind(&recorded.created_by)
        .bind(recorded.created_at)
        .execute(self.pool())
        .await?;
        Ok(recorded)
    }

    /// The outcomes recorded for a session of a project, oldest first.
    pub async fn outcomes_for_session(
        &self,
        project_id: &str,
        session_id: &str,
    ) -> Result<Vec<Outcome>, StoreError> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT id, project_id, metric_id, session_id, value, user_id, created_by, created_at \
             FROM outcomes WHERE project_id = $1 AND session_id = $2 ORDER BY created_at, id",
        )
        .bind(project_id)
        .bind(session_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Outcome {
                    id: text(row, "id")?,
                    project_id: text(row, "project_id")?,
                    metric_id: text(row, "metric_id")?,
                    session_id: text(row, "session_id")?,
                    value: row.try_get::<f64, _>("value")?,
                    user_id: opt_text(row, "user_id")?,
                    created_by: opt_text(row, "created_by")?,
                    created_at: int(row, "created_at")?,
                })
            })
            .collect()
    }
}
