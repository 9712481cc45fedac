//! Harmony's HTTP surface, grouped by resource: completions (OpenAI-shaped generation),
//! models (OpenAI's list plus the control plane's spawn/dealloc) and ops (health, metrics).
//! Handlers stay thin: extract, validate into a typed request, call the service, map to a view.

mod completions;
pub mod error;
mod json;
mod models;
mod ops;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use adaptive_api_types::ErrorCode;
use axum::routing::{get, post};
use axum::Router;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use crate::config::CapacityReservation;
use crate::error::HarmonyError;
use crate::metrics::Metrics;
use crate::models::ModelRegistry;
use error::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub models: Arc<ModelRegistry>,
    pub metrics: Arc<Metrics>,
    /// Tracks in-flight generations so that a drain can wait for them.
    pub in_flight: TaskTracker,
    pub draining: Arc<AtomicBool>,
    /// The end of the capacity this replica runs on, when known (shown by `/health`).
    pub capacity_reservation: Option<Arc<CapacityReservation>>,
}

impl AppState {
    /// Admits a generation request unless the replica is draining.
    pub fn admit(&self) -> Result<TaskTrackerToken, HarmonyError> {
        if self.is_draining() {
            return Err(HarmonyError::Draining);
        }
        Ok(self.in_flight.token())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models::list_models))
        .route("/models/spawn", post(models::spawn_model))
        .route("/models/dealloc", post(models::dealloc_model))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .with_state(state)
}
