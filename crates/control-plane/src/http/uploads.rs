//! The chunked upload routes of reference §2.3, with the request and response shapes of
//! `adaptive-sdk` 0.14 (`rest_types.InitChunkedUploadRequest` and friends), under `/api/v1` and
//! `/v1`:
//!
//! - `POST /upload/init` `{content_type, metadata, total_parts_count}` -> `{session_id}`
//! - `POST /upload/part?session_id&part_number` with the raw part as the body
//! - `POST /upload/status` (`session_id` in the JSON body or the query) ->
//!   `{completed_parts, total_parts_count, ...}`
//! - `DELETE /upload/abort` (`session_id` likewise) -> 204; 409 while a dataset still pending
//!   or processing reads the parts
//!
//! Every route needs `dataset:create` somewhere (the SDK uploads datasets this way); the step
//! that turns the parts into a dataset or a model checks its own permission. The rules and the
//! storage are [`crate::uploads`].

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::auth::{Authenticated, Permission};
use crate::error::ApiError;
use crate::uploads::{NewUpload, Uploads};

/// The permission every upload route needs (see [`crate::auth::policy::REST_RULES`]).
pub const UPLOAD_PERMISSION: Permission = Permission::DatasetCreate;

pub fn router() -> Router<AppState> {
    let routes = Router::new()
        .route("/upload/init", post(init))
        // The body streams to storage: axum's body limit does not apply, ours do.
        .route("/upload/part", post(put_part))
        .route("/upload/status", post(status))
        .route("/upload/abort", delete(abort));
    Router::new()
        .nest("/api/v1", routes.clone())
        .nest("/v1", routes)
}

#[derive(Debug, Deserialize)]
struct InitChunkedUploadRequest {
    content_type: Option<String>,
    metadata: Option<serde_json::Value>,
    total_parts_count: i64,
}

#[derive(Debug, Serialize)]
struct InitChunkedUploadResponse {
    session_id: String,
}

#[derive(Debug, Deserialize)]
struct UploadPartQuery {
    session_id: String,
    part_number: i64,
}

#[derive(Debug, Serialize)]
struct UploadPartResponse {
    session_id: String,
    part_number: i64,
    size_bytes: i64,
}

/// `GetUploadSessionStatusRequest` and `AbortChunkedUploadRequest`, in the body or the query.
#[derive(Debug, Default, Deserialize)]
struct SessionSelector {
    session_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct GetUploadSessionStatusResponse {
    completed_parts: Vec<i64>,
    total_parts_count: i64,
    uploaded_bytes: i64,
    content_type: Option<String>,
    metadata: Option<serde_json::Value>,
    completed: bool,
    created_at: i64,
    updated_at: i64,
}

fn uploads(state: &AppState) -> &Uploads {
    &state.uploads
}

async fn init(
    State(state): State<AppState>,
    caller: Authenticated,
    super::AppJson(request): super::AppJson<InitChunkedUploadRequest>,
) -> Result<Json<InitChunkedUploadResponse>, ApiError> {
    require_upload_permission(&caller)?;
    let new_upload = NewUpload {
        content_type: request.content_type,
        metadata: request.metadata,
        total_parts_count: request.total_parts_count,
    };
    let session = uploads(&state)
        .init(&caller.principal.user.id, new_upload)
        .await?;
    Ok(Json(InitChunkedUploadResponse {
        session_id: session.id,
    }))
}

async fn put_part(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<UploadPartQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UploadPartResponse>, ApiError> {
    require_upload_permission(&caller)?;
    let Query(query) =
        query.map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
    let announced_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let part = uploads(&state)
        .put_part(
            &caller.principal.user.id,
            &query.session_id,
            query.part_number,
            announced_length,
            body.into_data_stream(),
        )
        .await?;
    Ok(Json(UploadPartResponse {
        session_id: query.session_id,
        part_number: part.part_number,
        size_bytes: part.size_bytes,
    }))
}

/// Whether `path` is the part route, which has its own timeout.
pub fn is_part_route(path: &str) -> bool {
    path == "/api/v1/upload/part" || path == "/v1/upload/part"
}

async fn status(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<SessionSelector>, QueryRejection>,
    body: Bytes,
) -> Result<Json<GetUploadSessionStatusResponse>, ApiError> {
    require_upload_permission(&caller)?;
    let session_id = session_id(query, &body)?;
    let progress = uploads(&state)
        .progress(&caller.principal.user.id, &session_id)
        .await?;
    let uploaded_bytes = progress.uploaded_bytes();
    let session = progress.session;
    let metadata = session
        .metadata
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|error| ApiError::Store(error.into()))?;
    Ok(Json(GetUploadSessionStatusResponse {
        completed_parts: progress.parts.iter().map(|part| part.part_number).collect(),
        total_parts_count: session.total_parts_count,
        uploaded_bytes,
        content_type: session.content_type,
        metadata,
        completed: session.completed_at.is_some(),
        created_at: session.created_at,
        updated_at: session.updated_at,
    }))
}

async fn abort(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<SessionSelector>, QueryRejection>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    require_upload_permission(&caller)?;
    let session_id = session_id(query, &body)?;
    uploads(&state)
        .abort(&caller.principal.user.id, &session_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn require_upload_permission(caller: &Authenticated) -> Result<(), ApiError> {
    if caller.principal.can_anywhere(UPLOAD_PERMISSION) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "uploads need the permission {UPLOAD_PERMISSION}"
    )))
}

/// `session_id` from a JSON body (the SDK's abort) or the query string.
fn session_id(
    query: Result<Query<SessionSelector>, QueryRejection>,
    body: &[u8],
) -> Result<String, ApiError> {
    let Query(from_query) =
        query.map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        SessionSelector::default()
    } else {
        serde_json::from_slice::<SessionSelector>(body).map_err(|error| {
            ApiError::InvalidRequest(format!(
                "the body is not a JSON object with session_id: {error}"
            ))
        })?
    };
    from_body
        .session_id
        .or(from_query.session_id)
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "session_id is required, in the JSON body or the query string".to_owned(),
            )
        })
}
