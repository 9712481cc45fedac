//! The metadata store: projects, models, model services, compute pools, users and API keys,
//! metrics and scores, interactions (completions).
//!
//! # Two backends, one seam
//!
//! [`MetadataStore`] runs the same SQL on PostgreSQL (production) and SQLite (the embedded
//! default) through sqlx's `Any` driver: the URL picks the backend. The schema
//! (`migrations/`) and every query are written in the subset both share: ids are UUID strings,
//! timestamps are milliseconds since the epoch, booleans are 0/1 integers, structured values
//! are JSON text, parameters are `$N`, upserts are `ON CONFLICT`. This keeps one implementation
//! and one conformance suite (`tests/integration/store_conformance/`) that runs against both
//! servers, instead of two hand-kept copies that drift. What differs per backend is connection
//! handling only ([`connect`]): PostgreSQL gets credentials that are re-read on rotation, SQLite
//! gets a file in the data directory.
//!
//! # Failure
//!
//! Every method returns [`StoreError`]. A database that cannot be reached (refused connection,
//! pool timeout, TLS or authentication failure) is [`StoreError::Unavailable`] -> 503 with a
//! clear message; the pool reconnects by itself once the database is back, so the service
//! recovers without a restart.
//!
//! # What the gateway uses
//!
//! - [`MetadataStore::resolve_model_service`]: `"project"` or `"project/model"` -> a
//!   [`ResolvedModelService`] (project, model service, model, path, placement, flags).
//! - [`MetadataStore::insert_interactions`]: a batch of completions, idempotent by completion id
//!   (a retried batch inserts each completion exactly once); returns how many were new.
//! - [`MetadataStore::insert_scores`]: scores for completions.
//! - Routable replicas come from [`crate::registry`], not from this store.
//!
//! The feedback API imports interactions with their scores, and records comparisons and
//! session outcomes ([`feedback`]).
//!
//! Chunked uploads keep their sessions and received parts here ([`uploads`]) so that they
//! survive restarts and every replica sees them; the bytes are objects.

mod completion_filter;
mod compute;
mod connect;
mod datasets;
mod deployments;
mod feedback;
mod interactions;
mod metrics;
mod models;
mod projects;
mod rows;
mod uploads;
mod usage;
mod users;

use adaptive_api_types::ErrorCode;
use sqlx::AnyPool;

pub use completion_filter::{
    CompletionCondition, CompletionFilter, NumericComparison, TextField, TextPredicate,
};
pub use connect::{DatabaseTarget, StoreOptions};
pub use datasets::{
    ClaimedDataset, Dataset, DatasetClaim, DatasetContents, DatasetMetricCount, DATASET_FAILED,
    DATASET_PENDING, DATASET_PROCESSING, DATASET_READY,
};
pub use deployments::{DeployRequest, ModelServiceUpdate};
pub use feedback::{
    ComparedCompletion, Comparison, NewComparison, NewOutcome, Outcome, ScoreValue,
};
pub use interactions::{
    decode_cursor, encode_cursor, prompt_hash, CompletionGroup, CompletionGroupBy, CompletionPage,
    NewInteraction, NewScore, PagePosition, PageRequest, ScoreStats,
};
pub use metrics::NewMetric;
pub use models::{ComputeConfigUpdate, NewModel};
pub use projects::NewProject;
pub use rows::*;
pub use uploads::{UploadPart, UploadSession};
pub use usage::{NewUsage, ScoreSlot, UsageScan, UsageSlot};
pub use users::{
    ApiKeyGrant, IssuedApiKey, NewUser, ProjectGrant, USER_TYPE_HUMAN, USER_TYPE_SYSTEM,
};

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} '{id}' not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} '{key}' already exists")]
    AlreadyExists { what: &'static str, key: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The database cannot be reached. The message says so without internals.
    #[error("the metadata database is unavailable, retry later")]
    Unavailable(#[source] sqlx::Error),
    /// A bug or an unexpected database answer; the details go to the logs only.
    #[error("internal store error")]
    Internal(#[source] anyhow::Error),
}

impl StoreError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::Invalid(_) => ErrorCode::InvalidRequest,
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            what,
            id: id.into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_connectivity_error(&error) {
            return StoreError::Unavailable(error);
        }
        StoreError::Internal(anyhow::Error::new(error))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        StoreError::Internal(anyhow::Error::new(error))
    }
}

/// Whether an error means "the database is not reachable right now" rather than "this query is
/// wrong": the first is retryable and reported as 503.
pub(crate) fn is_connectivity_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database_error) => {
            // PostgreSQL: class 08 connection exceptions, 28 invalid authorization,
            // 57P01-03 admin shutdown / crash shutdown / cannot connect now.
            let code = database_error.code().unwrap_or_default();
            code.starts_with("08") || code.starts_with("28") || code.starts_with("57P")
        }
        sqlx::Error::Protocol(message) => message.contains("connection"),
        _ => false,
    }
}

/// The metadata store. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct MetadataStore {
    pool: AnyPool,
    target: DatabaseTarget,
    credentials: Option<connect::CredentialRefresher>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MetadataStore")
            .field("backend", &self.target.backend_name())
            .finish()
    }
}

impl MetadataStore {
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        self.target.backend_name()
    }

    /// Readiness: one round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let result = sqlx::query("SELECT 1").execute(&self.pool).await;
        if let Err(error) = &result {
            if is_connectivity_error(error) {
                self.refresh_credentials();
            }
        }
        result.map(|_| ()).map_err(StoreError::from)
    }

    /// Re-read file-backed credentials now (the background refresher also does so
    /// periodically); the next new connection uses them.
    pub fn refresh_credentials(&self) {
        if let Some(refresher) = &self.credentials {
            refresher.refresh(&self.pool);
        }
    }

    /// The password the next new connection will use, for the rotation test.
    #[doc(hidden)]
    pub fn current_connect_password(&self) -> Option<String> {
        self.pool
            .connect_options()
            .database_url
            .password()
            .map(str::to_owned)
    }

    /// The pool, for tests that assert on stored bytes.
    #[doc(hidden)]
    pub fn raw_pool_for_tests(&self) -> AnyPool {
        self.pool.clone()
    }

    /// Close the pool (shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// A key as users write it: lowercase letters, digits, `-`, `_`, `.`; 1 to 128 characters.
pub(crate) fn validate_key(what: &str, key: &str) -> Result<(), StoreError> {
    let valid = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        return Ok(());
    }
    Err(StoreError::Invalid(format!(
        "invalid {what} key '{key}': use 1 to 128 letters, digits, '-', '_' or '.'"
    )))
}

/// Turn a display name into a key: `"My Project"` -> `"my-project"`.
pub(crate) fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for character in name.trim().chars() {
        if character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.') {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').chars().take(128).collect()
}

/// Whether a string is a UUID (an id) rather than a key.
pub(crate) fn looks_like_id(id_or_key: &str) -> bool {
    uuid::Uuid::parse_str(id_or_key).is_ok()
}

/// Map a unique-constraint violation to AlreadyExists.
pub(crate) fn unique_violation(error: sqlx::Error, what: &'static str, key: &str) -> StoreError {
    if let sqlx::Error::Database(database_error) = &error {
        if database_error.is_unique_violation() {
            return StoreError::AlreadyExists {
                what,
                key: key.to_owned(),
            };
        }
    }
    StoreError::from(error)
}
