//! Prometheus metrics of the control plane, served on the internal port at `GET /metrics`.
//! Every metric name is declared in [`names`].

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The metric names (the reference product's `concorde_*` names, so its dashboards work).
pub mod names {
    pub const HTTP_REQUEST_DURATION: &str = "concorde_http_server_request_duration_seconds";
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    http_route: String,
    http_response_status_code: u16,
}

pub struct ServerMetrics {
    registry: Registry,
    request_duration: Family<RequestLabels, Histogram>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ServerMetrics")
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    pub fn new() -> Self {
        Self::with_extra_metrics(|_| {})
    }

    /// Also registers metrics owned by another component (the gateway's).
    pub fn with_extra_metrics(register_extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::default();
        register_extra(&mut registry);
        let request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            names::HTTP_REQUEST_DURATION,
            "Duration of HTTP requests on the public port",
            request_duration.clone(),
        );
        Self {
            registry,
            request_duration,
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("cannot encode metrics");
        }
        text
    }
}

/// Middleware: time every public request, labelled by route template and status.
pub async fn record_request(
    State(metrics): State<Arc<ServerMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = tokio::time::Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels {
        http_route: route,
        http_response_status_code: response.status().as_u16(),
    };
    metrics
        .request_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

pub async fn serve_metrics(State(metrics): State<Arc<ServerMetrics>>) -> Response {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
