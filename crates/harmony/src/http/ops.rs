//! `GET /health` and `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;

#[derive(Debug, serde::Serialize)]
pub struct HealthView {
    /// `ok` or `draining` (then the status is 503, so load balancers stop sending work).
    status: &'static str,
    models: Vec<String>,
    /// `CAPACITY_RESERVATION_END` (RFC 3339) and when the drain ahead of it starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity_reservation_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_starts_at: Option<String>,
}

pub async fn health(State(state): State<AppState>) -> Response {
    let draining = state.is_draining();
    let view = HealthView {
        status: if draining { "draining" } else { "ok" },
        models: state.models.list().iter().map(|m| m.key.clone()).collect(),
        capacity_reservation_end: state
            .capacity_reservation
            .as_ref()
            .map(|reservation| reservation.end_rfc3339.clone()),
        drain_starts_at: state.capacity_reservation.as_ref().map(|reservation| {
            chrono::DateTime::<chrono::Utc>::from(reservation.drain_starts_at())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }),
    };
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(view)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    for model in state.models.list() {
        model.record_metrics(&state.metrics);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
