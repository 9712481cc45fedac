//! The contract between a harmony replica and the control plane's internal port (9009).
//!
//! A replica POSTs [`RegisterReplica`] to `{CONTROL_PLANE_URL}/internal/harmony/register` at start
//! and then every `heartbeat_interval_ms` (the reply says how often). The control plane treats a
//! replica whose last heartbeat is older than `ttl_ms` as gone. On SIGTERM a replica sends one
//! last registration with `status: Draining`, finishes its work, then POSTs [`DeregisterReplica`]
//! to `/internal/harmony/deregister`.
//!
//! The control plane asks a replica to load or unload a model through harmony's own HTTP API
//! (`POST /models/spawn`, `POST /models/dealloc`, see [`SpawnModel`]).

use serde::{Deserialize, Serialize};

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicaStatus {
    /// Accepting work.
    Online,
    /// Finishing in-flight work; must not receive new requests.
    Draining,
}

/// What a replica tells the control plane about itself (the chart's registration environment
/// plus what it is serving right now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterReplica {
    /// `GROUP`: the compute pool's name.
    pub group: String,
    /// `PARTITION_KEY`: the pool's slug; replicas of one pool share it.
    pub partition_key: String,
    /// `ORDINAL`: the pod index within the StatefulSet.
    pub ordinal: u32,
    /// `GPU_COUNT`; 0 for a CPU replica.
    pub gpu_count: u32,
    /// GPU product names, e.g. `["NVIDIA H100 80GB HBM3"]`; empty on CPU.
    #[serde(default)]
    pub gpu_types: Vec<String>,
    /// `ADVERTISED_URL`: where the control plane reaches this replica (port 50053).
    pub advertised_url: String,
    /// `GROUP_CAPABILITIES`, e.g. `["INFERENCE", "JOB"]`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub status: ReplicaStatus,
    /// Models loaded and ready to serve.
    #[serde(default)]
    pub online_models: Vec<OnlineModel>,
    /// Load, so that routing can prefer less busy replicas between its own observations.
    #[serde(default)]
    pub load: ReplicaLoad,
    /// When the capacity this replica runs on goes away (capacity block end), if known;
    /// RFC 3339. The control plane stops placing new sessions on it ahead of that time.
    #[serde(default)]
    pub capacity_ends_at: Option<String>,
}

/// A model a replica serves, named by the registry key the control plane knows it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineModel {
    /// The model's key in the control plane's registry (also the `model` field harmony expects).
    pub key: String,
    /// The path it was loaded from (`model_registry://key`, a local path).
    pub path: String,
    /// Context window in tokens.
    pub max_seq_len: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaLoad {
    pub running_sequences: u32,
    pub queued_sequences: u32,
    pub kv_blocks_used: u32,
    pub kv_blocks_total: u32,
}

/// The control plane's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReplicaResponse {
    /// The id the control plane gave the replica (stable across heartbeats).
    pub replica_id: String,
    pub heartbeat_interval_ms: u64,
    pub ttl_ms: u64,
    /// Models the control plane wants this replica to serve (desired state). A replica loads the
    /// ones it lacks and may unload the ones not listed.
    #[serde(default)]
    pub desired_models: Vec<DesiredModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredModel {
    pub key: String,
    pub path: String,
    #[serde(default)]
    pub max_seq_len: Option<u32>,
    #[serde(default)]
    pub kv_cache_len: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeregisterReplica {
    pub partition_key: String,
    pub ordinal: u32,
}

/// `POST /models/spawn` on harmony: load a model and serve it under `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnModel {
    pub key: String,
    /// A local directory (HF layout), a `.gguf` file, or `model_registry://<key>`.
    pub path: String,
    #[serde(default)]
    pub max_seq_len: Option<u32>,
    #[serde(default)]
    pub kv_cache_len: Option<u32>,
}

/// `POST /models/dealloc` on harmony.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeallocModel {
    pub key: String,
}
