//! `GET /api/v1/projects/{project}/datasets/{dataset}/download?format=original|recipe` (also
//! under `/v1`): a READY dataset's file as JSONL (`application/x-ndjson`), streamed from object
//! storage. `original` (the default) is the file as uploaded, `recipe` the internal sample
//! format ([`crate::datasets::recipe`]). The dataset's `downloadUrl` names this route. Needs
//! `dataset:read` on the project.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::AppState;
use crate::auth::{Authenticated, Permission};
use crate::datasets::recipe;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    let routes = Router::new().route(
        "/projects/{project}/datasets/{dataset}/download",
        get(download),
    );
    Router::new()
        .nest("/api/v1", routes.clone())
        .nest("/v1", routes)
}

#[derive(Debug, Deserialize)]
struct DownloadQuery {
    format: Option<String>,
}

async fn download(
    State(state): State<AppState>,
    caller: Authenticated,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<DownloadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((project, dataset)) =
        path.map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
    let Query(query) =
        query.map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
    caller.require(Permission::DatasetRead, &project)?;
    let as_recipe = match query.format.as_deref() {
        None | Some("original") => false,
        Some("recipe") => true,
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "format must be 'original' or 'recipe', got '{other}'"
            )))
        }
    };
    let (dataset, chunks) = state.datasets.open(&project, &dataset).await?;
    let body = if as_recipe {
        Body::from_stream(recipe::convert_stream(chunks))
    } else {
        Body::from_stream(chunks)
    };
    let file_name = format!("attachment; filename=\"{}.jsonl\"", dataset.key);
    Ok((
        [
            (CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (CONTENT_DISPOSITION, file_name),
        ],
        body,
    )
        .into_response())
}
