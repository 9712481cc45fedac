//! `GET /health` (the process is up) and `GET /ready` (it can serve: the store answers).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::store::MetadataStore;

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the metadata store answers, 503 `unavailable` while it does not.
pub async fn ready(State(store): State<MetadataStore>) -> Result<Json<Value>, ApiError> {
    store.ping().await?;
    Ok(Json(
        json!({"status": "ready", "store": store.backend_name()}),
    ))
}
