//! The gateway's Prometheus metrics; every name lives here.
//!
//! They are registered into the control plane's registry (served on the internal port's
//! `/metrics`). Counters get prometheus-client's `_total` suffix.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::request::InferenceKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatusLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone)]
pub struct GatewayMetrics {
    pub requests: Family<RouteStatusLabels, Counter>,
    pub ttft_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub duration_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub tokens_processed: Family<ModelLabels, Counter>,
    pub tokens_generated: Family<ModelLabels, Counter>,
    pub upstream_retries: Counter,
    /// Per inference route, indexed like [`INFERENCE_ROUTES`].
    route_series: Arc<[RouteSeries; 2]>,
}

const INFERENCE_ROUTES: [InferenceKind; 2] = [InferenceKind::Chat, InferenceKind::Completion];

/// One inference route's series, taken out of their families on first use: a family lookup
/// hashes the labels and takes the family's lock, on every request otherwise.
#[derive(Default)]
struct RouteSeries {
    ok_requests: OnceLock<Counter>,
    ttft_seconds: OnceLock<Histogram>,
    duration_seconds: OnceLock<Histogram>,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "adaptive_inference_requests",
            "Inference requests by route and HTTP status",
            metrics.requests.clone(),
        );
        registry.register(
            "adaptive_inference_ttft_seconds",
            "Time to first token as seen by the gateway",
            metrics.ttft_seconds.clone(),
        );
        registry.register(
            "adaptive_inference_duration_seconds",
            "Whole inference request duration",
            metrics.duration_seconds.clone(),
        );
        registry.register(
            "adaptive_tokens_processed",
            "Prompt tokens processed, per model",
            metrics.tokens_processed.clone(),
        );
        registry.register(
            "adaptive_tokens_generated",
            "Completion tokens generated, per model",
            metrics.tokens_generated.clone(),
        );
        registry.register(
            "adaptive_inference_upstream_retries",
            "Requests retried on another replica before their first token",
            metrics.upstream_retries.clone(),
        );
        metrics
    }

    /// Metrics that nobody scrapes (tests, benchmarks).
    pub fn unregistered() -> Self {
        Self {
            requests: Family::default(),
            ttft_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            duration_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            tokens_processed: Family::default(),
            tokens_generated: Family::default(),
            upstream_retries: Counter::default(),
            route_series: Arc::default(),
        }
    }

    pub(crate) fn count_request(&self, kind: InferenceKind, status: u16) {
        let labels = RouteStatusLabels {
            route: kind.route(),
            status,
        };
        if status != 200 {
            self.requests.get_or_create(&labels).inc();
            return;
        }
        self.series(kind)
            .ok_requests
            .get_or_init(|| self.requests.get_or_create(&labels).clone())
            .inc();
    }

    pub(crate) fn observe_ttft(&self, kind: InferenceKind, seconds: f64) {
        self.series(kind)
            .ttft_seconds
            .get_or_init(|| {
                self.ttft_seconds
                    .get_or_create(&RouteLabels {
                        route: kind.route(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    pub(crate) fn observe_duration(&self, kind: InferenceKind, seconds: f64) {
        self.series(kind)
            .duration_seconds
            .get_or_init(|| {
                self.duration_seconds
                    .get_or_create(&RouteLabels {
                        route: kind.route(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    fn series(&self, kind: InferenceKind) -> &RouteSeries {
        let index = INFERENCE_ROUTES
            .iter()
            .position(|route| *route == kind)
            .unwrap_or(0);
        &self.route_series[index]
    }
}
