//! The harmony replica registry: which replicas are alive, what they serve, how loaded they are.
//!
//! A replica registers (and heartbeats) with [`RegisterReplica`]; its record lives for the TTL
//! the control plane gave it and vanishes if no heartbeat renews it. Two backends implement
//! [`ReplicaRegistry`]: [`InProcessRegistry`] (one control plane, the embedded mode) and
//! [`RedisRegistry`] (several control plane replicas share it; Redis expires the keys). One
//! conformance suite (`tests/registry_conformance.rs`) runs against both.
//!
//! Replica ids are `<partition_key>-<ordinal>`: a restarted pod keeps its id, and a heartbeat
//! is an idempotent upsert.
//!
//! Draining replicas stay listed (the UI shows them) but [`ReplicaRecord::is_routable`] is
//! false, so [`routable_replicas_for_model`] never returns them.

mod in_process;
mod redis_backend;

use std::sync::Arc;
use std::time::Duration;

use adaptive_api_types::harmony::{RegisterReplica, ReplicaStatus};
use adaptive_api_types::ErrorCode;
use serde::{Deserialize, Serialize};

pub use in_process::InProcessRegistry;
pub use redis_backend::RedisRegistry;

/// A live replica as the registry holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub replica_id: String,
    pub registration: RegisterReplica,
    /// When it first registered (kept across heartbeats), ms since the epoch.
    pub registered_at_ms: i64,
    /// The latest heartbeat, ms since the epoch.
    pub last_seen_ms: i64,
}

impl ReplicaRecord {
    pub fn is_routable(&self) -> bool {
        self.registration.status == ReplicaStatus::Online
    }

    pub fn serves(&self, model_key: &str) -> bool {
        self.registration
            .online_models
            .iter()
            .any(|model| model.key == model_key)
    }
}

pub fn replica_id(partition_key: &str, ordinal: u32) -> String {
    format!("{partition_key}-{ordinal}")
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the replica registry is unavailable, retry later")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal replica registry error")]
    Internal(#[source] anyhow::Error),
}

impl RegistryError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RegistryError::Unavailable(_) => ErrorCode::Unavailable,
            RegistryError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The registry seam.
#[async_trait::async_trait]
pub trait ReplicaRegistry: Send + Sync + 'static {
    /// Register or renew a replica for `ttl`.
    async fn heartbeat(
        &self,
        registration: RegisterReplica,
        ttl: Duration,
    ) -> Result<ReplicaRecord, RegistryError>;

    /// Remove a replica. Returns whether it was registered.
    async fn deregister(&self, partition_key: &str, ordinal: u32) -> Result<bool, RegistryError>;

    /// Every replica whose TTL has not run out, draining ones included, sorted by id.
    async fn list(&self) -> Result<Vec<ReplicaRecord>, RegistryError>;
}

/// Shared handle to whichever backend is configured.
pub type SharedRegistry = Arc<dyn ReplicaRegistry>;

/// Replicas that may receive a new request for `model_key`: online (not draining) and serving it.
pub async fn routable_replicas_for_model(
    registry: &dyn ReplicaRegistry,
    model_key: &str,
) -> Result<Vec<ReplicaRecord>, RegistryError> {
    let replicas = registry.list().await?;
    Ok(replicas
        .into_iter()
        .filter(|replica| replica.is_routable() && replica.serves(model_key))
        .collect())
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
