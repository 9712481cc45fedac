//! HTTP surfaces: the public router (port 9000: health, readiness, GraphQL, OpenAPI, the
//! feedback routes of [`feedback`], the chunked uploads of [`uploads`], dataset downloads) and
//! the internal router (port 9009: harmony registration, Prometheus metrics).
//!
//! Handlers are thin: extract (with [`AppJson`], so malformed input gets our error body) ->
//! authorize (the [`crate::auth::Authenticated`] extractor) -> call the store or registry -> map
//! to a view. State is typed ([`AppState`]) with `FromRef` sub-states.

mod auth;
mod datasets;
mod feedback;
mod harmony;
mod health;
pub mod openapi;
pub mod telemetry;
pub mod uploads;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::graphql::ApiSchema;
use crate::registry::SharedRegistry;
use crate::store::MetadataStore;
use telemetry::ServerMetrics;

/// How replicas should heartbeat, from [`crate::config::HarmonyConfig`].
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatPolicy {
    pub interval: Duration,
    pub ttl: Duration,
}

/// Everything handlers need; cloned per request (all handles).
#[derive(Clone)]
pub struct AppState {
    pub store: MetadataStore,
    /// `server.timeout_seconds`: a public request taking longer fails with 408.
    pub request_timeout: Duration,
    /// `server.upload_part_timeout_seconds`: the same for one chunked-upload part, instead.
    pub upload_part_timeout: Duration,
    pub registry: SharedRegistry,
    pub metrics: Arc<ServerMetrics>,
    pub heartbeat: HeartbeatPolicy,
    pub schema: ApiSchema,
    pub auth: Arc<crate::auth::Authenticator>,
    pub oidc: Arc<crate::auth::oidc::OidcProviders>,
    pub auth_config: Arc<crate::config::AuthConfig>,
    pub uploads: crate::uploads::Uploads,
    pub datasets: crate::datasets::Datasets,
}

impl FromRef<AppState> for Arc<crate::auth::Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for MetadataStore {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

impl FromRef<AppState> for SharedRegistry {
    fn from_ref(state: &AppState) -> Self {
        state.registry.clone()
    }
}

impl FromRef<AppState> for Arc<ServerMetrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl FromRef<AppState> for HeartbeatPolicy {
    fn from_ref(state: &AppState) -> Self {
        state.heartbeat
    }
}

impl FromRef<AppState> for ApiSchema {
    fn from_ref(state: &AppState) -> Self {
        state.schema.clone()
    }
}

/// Port 9000.
pub fn public_router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/api/openapi.json", get(openapi::serve))
        .route("/api/graphql", post(crate::graphql::handler))
        .route("/api/v1/auth/login/{provider}", get(auth::login))
        .route(
            "/api/v1/auth/login/{provider}/callback",
            get(auth::callback),
        )
        .route("/api/v1/auth/logout", post(auth::logout))
        .merge(feedback::router())
        .merge(uploads::router())
        .merge(datasets::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            RequestTimeouts {
                default: state.request_timeout,
                upload_part: state.upload_part_timeout,
            },
            enforce_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            telemetry::record_request,
        ))
        .with_state(state)
}

/// How long a public request may take: parts of chunked uploads carry up to 128 MiB each and
/// get their own limit.
#[derive(Debug, Clone, Copy)]
struct RequestTimeouts {
    default: Duration,
    upload_part: Duration,
}

async fn enforce_timeout(
    axum::extract::State(timeouts): axum::extract::State<RequestTimeouts>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = if uploads::is_part_route(request.uri().path()) {
        timeouts.upload_part
    } else {
        timeouts.default
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit.as_secs()).into_response(),
    }
}

/// Port 9009.
pub fn internal_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(telemetry::serve_metrics))
        .route("/internal/harmony/register", post(harmony::register))
        .route("/internal/harmony/deregister", post(harmony::deregister))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::Store(crate::store::StoreError::NotFound {
        what: "route",
        id: request.uri().path().to_owned(),
    })
}

/// `Json` whose rejection is our error body (400 `invalid_request`) instead of axum's text.
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(AppJson(value)),
            Err(rejection) => Err(ApiError::InvalidRequest(rejection.body_text())),
        }
    }
}
