//! `GET /v1/models`, `POST /models/spawn`, `POST /models/dealloc`.

use adaptive_api_types::harmony::{DeallocModel, OnlineModel, SpawnModel};
use adaptive_api_types::openai::{ModelList, ModelView};
use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::json::AppJson;
use super::AppState;

pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .models
        .list()
        .iter()
        .map(|model| ModelView {
            id: model.key.clone(),
            object: "model".to_owned(),
            created: model.created,
            owned_by: "adaptive".to_owned(),
            max_model_len: u32::try_from(model.info.max_seq_len).ok(),
        })
        .collect();
    Json(ModelList {
        object: "list".to_owned(),
        data,
    })
}

pub async fn spawn_model(
    State(state): State<AppState>,
    AppJson(request): AppJson<SpawnModel>,
) -> Result<Json<OnlineModel>, ApiError> {
    let model = state.models.spawn(request).await?;
    Ok(Json(model.online_view()))
}

#[derive(Debug, serde::Serialize)]
pub struct DeallocatedView {
    key: String,
    status: &'static str,
}

pub async fn dealloc_model(
    State(state): State<AppState>,
    AppJson(request): AppJson<DeallocModel>,
) -> Result<Json<DeallocatedView>, ApiError> {
    state.models.dealloc(&request.key)?;
    Ok(Json(DeallocatedView {
        key: request.key,
        status: "deallocated",
    }))
}
