//! The gateway's Prometheus metrics; every name lives here.
//!
//! They are registered into the control plane's registry (served on the internal port's
//! `/metrics`). Counters get prometheus-client's `_total` suffix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
        }
    }
}
