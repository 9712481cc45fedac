//! The records the store returns. Field names follow the domain (reference §3), not the wire:
//! GraphQL and REST map these to their own `*View` types.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: String,
    pub key: String,
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeConfig {
    pub tp: i64,
    pub kv_cache_len: i64,
    pub max_seq_len: i64,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            tp: 1,
            kv_cache_len: 8192,
            max_seq_len: 8192,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub id: String,
    pub key: String,
    pub name: String,
    /// Where harmony loads it from: `model_registry://<key>`, a local directory or `.gguf`.
    pub path: String,
    pub family: Option<String>,
    pub size_bytes: Option<i64>,
    /// `TextGeneration`, `Embedding`, `ImageUnderstanding`, `Reasoning`, `Regression`.
    pub capabilities: Vec<String>,
    pub compute_config: ComputeConfig,
    pub published: bool,
    pub stable: bool,
    pub created_at: i64,
}

/// Where a model service runs: compute pool keys (empty = every pool) and a TTFT bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub compute_pools: Vec<String>,
    pub max_ttft_ms: Option<i64>,
}

impl Placement {
    pub fn includes_pool(&self, pool: &str) -> bool {
        self.compute_pools.is_empty() || self.compute_pools.iter().any(|key| key == pool)
    }
}

/// A model attached to a project.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelService {
    pub id: String,
    pub project_id: String,
    pub model_id: String,
    pub key: String,
    pub name: String,
    pub is_default: bool,
    /// Deployed: the model should be online for this project.
    pub desired_online: bool,
    pub placement: Placement,
    pub system_prompt_template: Option<String>,
    pub created_at: i64,
}

/// What the gateway needs to route `"project"` or `"project/model"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModelService {
    pub project_id: String,
    pub project_key: String,
    pub model_service_id: String,
    pub model_service_key: String,
    pub model_id: String,
    pub model_key: String,
    pub model_path: String,
    pub placement: Placement,
    pub desired_online: bool,
    pub is_default: bool,
    pub system_prompt_template: Option<String>,
    pub compute_config: ComputeConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComputePool {
    pub id: String,
    pub key: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    /// `HUMAN` (logs in through OIDC) or `SYSTEM` (a service account: API keys only).
    pub user_type: String,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub id: String,
    pub key: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub id: String,
    pub key: String,
    pub name: String,
    pub permissions: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeamMembership {
    pub team: Team,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectShare {
    pub team: Team,
    pub role: Role,
    pub is_owner: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub id: String,
    pub key: String,
    pub name: String,
    /// `SCALAR` or `BOOL`.
    pub kind: String,
    /// `HIGHER_IS_BETTER` or `LOWER_IS_BETTER`.
    pub scoring_type: String,
    pub description: String,
    pub unit: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// An interaction: one completion with its prompt, usage and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: String,
    pub project_id: String,
    pub model_service_id: Option<String>,
    pub model_id: Option<String>,
    pub prompt_hash: String,
    pub chat_messages: Vec<ChatMessage>,
    pub completion: Option<String>,
    /// `LIVE`, `OFFLINE`, `AUTOMATION`, `DATASET`, `EVALUATION`.
    pub source: String,
    pub session_id: Option<String>,
    pub created_by: Option<String>,
    pub labels: Vec<Label>,
    /// `{parameters, timings, system}` as given by the writer.
    pub metadata: serde_json::Value,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub id: String,
    pub completion_id: String,
    pub metric_id: String,
    pub value: f64,
    pub reason: Option<String>,
    pub details: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
}

// === row decoding ===

pub(crate) fn text(row: &AnyRow, column: &str) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(column)?)
}

pub(crate) fn opt_text(row: &AnyRow, column: &str) -> Result<Option<String>, StoreError> {
    Ok(row.try_get::<Option<String>, _>(column)?)
}

pub(crate) fn int(row: &AnyRow, column: &str) -> Result<i64, StoreError> {
    Ok(row.try_get::<i64, _>(column)?)
}

pub(crate) fn opt_int(row: &AnyRow, column: &str) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

pub(crate) fn boolean(row: &AnyRow, column: &str) -> Result<bool, StoreError> {
    Ok(int(row, column)? != 0)
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
) -> Result<T, StoreError> {
    Ok(serde_json::from_str(&text(row, column)?)?)
}

impl Project {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            key: text(row, "key")?,
            name: text(row, "name")?,
            description: text(row, "description")?,
            archived: boolean(row, "archived")?,
            created_at: int(row, "created_at")?,
        })
    }
}

impl Model {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            key: text(row, "key")?,
            name: text(row, "name")?,
            path: text(row, "path")?,
            family: opt_text(row, "family")?,
            size_bytes: opt_int(row, "size_bytes")?,
            capabilities: json(row, "capabilities")?,
            compute_config: ComputeConfig {
                tp: int(row, "tp")?,
                kv_cache_len: int(row, "kv_cache_len")?,
                max_seq_len: int(row, "max_seq_len")?,
            },
            published: boolean(row, "published")?,
            stable: boolean(row, "stable")?,
            created_at: int(row, "created_at")?,
        })
    }
}

impl ModelService {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            project_id: text(row, "project_id")?,
            model_id: text(row, "model_id")?,
            key: text(row, "key")?,
            name: text(row, "name")?,
            is_default: boolean(row, "is_default")?,
            desired_online: boolean(row, "desired_online")?,
            placement: Placement {
                compute_pools: json(row, "placement_pools")?,
                max_ttft_ms: opt_int(row, "max_ttft_ms")?,
            },
            system_prompt_template: opt_text(row, "system_prompt_template")?,
            created_at: int(row, "created_at")?,
        })
    }
}

impl ComputePool {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            key: text(row, "key")?,
            name: text(row, "name")?,
            created_at: int(row, "created_at")?,
        })
    }
}

impl User {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            email: text(row, "email")?,
            name: text(row, "name")?,
            user_type: text(row, "user_type")?,
            created_at: int(row, "created_at")?,
            deleted_at: opt_int(row, "deleted_at")?,
        })
    }
}

impl Team {
    pub(crate) fn from_prefixed(row: &AnyRow, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, &format!("{prefix}id"))?,
            key: text(row, &format!("{prefix}key"))?,
            name: text(row, &format!("{prefix}name"))?,
            created_at: int(row, &format!("{prefix}created_at"))?,
        })
    }
}

impl Role {
    pub(crate) fn from_prefixed(row: &AnyRow, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, &format!("{prefix}id"))?,
            key: text(row, &format!("{prefix}key"))?,
            name: text(row, &format!("{prefix}name"))?,
            permissions: json(row, &format!("{prefix}permissions"))?,
            created_at: int(row, &format!("{prefix}created_at"))?,
        })
    }
}

impl Metric {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            key: text(row, "key")?,
            name: text(row, "name")?,
            kind: text(row, "kind")?,
            scoring_type: text(row, "scoring_type")?,
            description: text(row, "description")?,
            unit: opt_text(row, "unit")?,
            created_at: int(row, "created_at")?,
        })
    }
}

impl Completion {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            project_id: text(row, "project_id")?,
            model_service_id: opt_text(row, "model_service_id")?,
            model_id: opt_text(row, "model_id")?,
            prompt_hash: text(row, "prompt_hash")?,
            chat_messages: json(row, "chat_messages")?,
            completion: opt_text(row, "completion")?,
            source: text(row, "source")?,
            session_id: opt_text(row, "session_id")?,
            created_by: opt_text(row, "created_by")?,
            labels: json(row, "labels")?,
            metadata: json(row, "metadata")?,
            prompt_tokens: int(row, "prompt_tokens")?,
            completion_tokens: int(row, "completion_tokens")?,
            created_at: int(row, "created_at")?,
        })
    }
}

impl Score {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: text(row, "id")?,
            completion_id: text(row, "completion_id")?,
            metric_id: text(row, "metric_id")?,
            value: row.try_get::<f64, _>("value")?,
            reason: opt_text(row, "reason")?,
            details: opt_text(row, "details")?,
            created_by: opt_text(row, "created_by")?,
            created_at: int(row, "created_at")?,
        })
    }
}
