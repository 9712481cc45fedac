//! What the gateway needs from the rest of the control plane, as two small traits.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::GatewayError;

/// Who is calling, as established by [`Directory::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
}

/// A harmony replica that serves the resolved model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Stable id (e.g. `<partition_key>/<ordinal>`); affinity is keyed on it.
    pub id: String,
    /// Base URL, e.g. `http://pool-0.pool-hdls:50053`.
    pub url: String,
}

/// The outcome of resolving `model: "project[/model]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub project_id: String,
    pub project_key: String,
    pub model_service_id: String,
    pub model_service_key: String,
    pub model_id: String,
    /// The name harmony serves the model under.
    pub model_key: String,
    /// Routable replicas (online, not draining, not expiring). Empty means the model is not
    /// online anywhere: the request fails with `model_not_online`.
    pub replicas: Vec<Replica>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelListing {
    /// `project/model`, what clients pass as `model`.
    pub id: String,
    pub created_unix: i64,
    pub owned_by: String,
}

#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Establishes the caller from the request headers (`Authorization: Bearer`, cookies).
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, GatewayError>;

    /// Resolves `project` or `project/model` for this caller, checking its permission to use it.
    async fn resolve(&self, caller: &Caller, model: &str) -> Result<ResolvedModel, GatewayError>;

    /// The models this caller may call.
    async fn list_models(&self, caller: &Caller) -> Result<Vec<ModelListing>, GatewayError>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A completed call, as recorded: its usage always, and the interaction (the completion of the
/// domain model) when the caller left `store` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionRecord {
    /// The completion id returned to the client; the idempotency key of the insert.
    pub completion_id: uuid::Uuid,
    /// False when the request said `store: false`: only the usage is kept, and `messages` and
    /// `completion` are left empty here so the content is never held or written.
    pub stored: bool,
    pub session_id: uuid::Uuid,
    pub project_id: String,
    pub model_service_id: String,
    pub model_id: String,
    pub caller: Caller,
    /// `chat` or `completion`.
    pub kind: String,
    /// Chat messages as sent, or `[{"role":"user","content":prompt}]` for completions.
    pub messages: serde_json::Value,
    pub completion: String,
    pub finish_reason: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// Sampling parameters as sent (temperature, max_tokens, ...).
    pub parameters: serde_json::Value,
    pub usage: Usage,
    pub ttft_ms: Option<f64>,
    pub total_ms: f64,
    pub replica_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
#[error("interaction store failure: {0}")]
pub struct StoreError(pub String);

#[async_trait]
pub trait InteractionStore: Send + Sync + 'static {
    /// Inserts a batch: the usage of every record, and the interaction of those `stored`. Must be
    /// idempotent on `completion_id`: the recorder retries a batch whose outcome it could not
    /// observe, and each call must be counted, and each interaction stored, exactly once.
    async fn store_interactions(&self, batch: &[InteractionRecord]) -> Result<(), StoreError>;
}
