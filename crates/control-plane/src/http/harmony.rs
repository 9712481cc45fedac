//! The harmony registration contract (`adaptive_api_types::harmony`), control plane side.
//!
//! A registration (or heartbeat) upserts the replica in the registry for the TTL, records its
//! compute pool, and answers with the models the replica should serve: those deployed (desired
//! online) to any project whose placement includes the replica's pool.

use adaptive_api_types::harmony::{
    DeregisterReplica, DesiredModel, RegisterReplica, RegisterReplicaResponse,
};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{AppJson, HeartbeatPolicy};
use crate::error::ApiError;
use crate::registry::SharedRegistry;
use crate::store::MetadataStore;

pub async fn register(
    State(store): State<MetadataStore>,
    State(registry): State<SharedRegistry>,
    State(heartbeat): State<HeartbeatPolicy>,
    AppJson(registration): AppJson<RegisterReplica>,
) -> Result<Json<RegisterReplicaResponse>, ApiError> {
    if registration.group.is_empty() || registration.partition_key.is_empty() {
        return Err(ApiError::InvalidRequest(
            "group and partition_key must not be empty".to_owned(),
        ));
    }
    let pool = store
        .ensure_compute_pool(&registration.group, &registration.group)
        .await?;
    let record = registry.heartbeat(registration, heartbeat.ttl).await?;
    let desired_models = store
        .desired_models_for_pool(&pool.key)
        .await?
        .into_iter()
        .map(|model| DesiredModel {
            key: model.key,
            path: model.path,
            max_seq_len: u32::try_from(model.compute_config.max_seq_len).ok(),
            kv_cache_len: u32::try_from(model.compute_config.kv_cache_len).ok(),
        })
        .collect();
    Ok(Json(RegisterReplicaResponse {
        replica_id: record.replica_id,
        heartbeat_interval_ms: millis(heartbeat.interval),
        ttl_ms: millis(heartbeat.ttl),
        desired_models,
    }))
}

pub async fn deregister(
    State(registry): State<SharedRegistry>,
    AppJson(request): AppJson<DeregisterReplica>,
) -> Result<Json<Value>, ApiError> {
    let removed = registry
        .deregister(&request.partition_key, request.ordinal)
        .await?;
    Ok(Json(json!({ "removed": removed })))
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
