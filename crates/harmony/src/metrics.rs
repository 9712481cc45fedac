//! Prometheus metrics, all named here (`harmony_*`, labelled by pool and model as the
//! reference dashboards expect).
//!
//! Latencies are observed by the generation streams as they happen; scheduler gauges and token
//! counters are read from each engine's published stats when `/metrics` is scraped, so the
//! engine thread never touches the registry.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use adaptive_engine::SchedulerStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub pool: String,
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub pool: String,
    pub model: String,
    /// `ok`, `client_error`, `overloaded`, `server_error`, `cancelled`.
    pub outcome: String,
}

type HistogramFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub time_to_first_token: HistogramFamily,
    pub inter_token_latency: HistogramFamily,
    pub requests: Family<RequestLabels, Counter>,
    queue_depth: Family<ModelLabels, Gauge>,
    running_sequences: Family<ModelLabels, Gauge>,
    kv_blocks_used: Family<ModelLabels, Gauge>,
    kv_blocks_free: Family<ModelLabels, Gauge>,
    prefix_cache_hit_rate: Family<ModelLabels, Gauge<f64, AtomicU64>>,
    tokens_processed: Family<ModelLabels, Counter>,
    tokens_generated: Family<ModelLabels, Counter>,
    preemptions: Family<ModelLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let time_to_first_token = HistogramFamily::new_with_constructor(latency_histogram);
        let inter_token_latency = HistogramFamily::new_with_constructor(latency_histogram);
        let requests = Family::<RequestLabels, Counter>::default();
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        let running_sequences = Family::<ModelLabels, Gauge>::default();
        let kv_blocks_used = Family::<ModelLabels, Gauge>::default();
        let kv_blocks_free = Family::<ModelLabels, Gauge>::default();
        let prefix_cache_hit_rate = Family::<ModelLabels, Gauge<f64, AtomicU64>>::default();
        let tokens_processed = Family::<ModelLabels, Counter>::default();
        let tokens_generated = Family::<ModelLabels, Counter>::default();
        let preemptions = Family::<ModelLabels, Counter>::default();
        registry.register(
            "harmony_ttft_seconds",
            "Time from request to first generated token",
            time_to_first_token.clone(),
        );
        registry.register(
            "harmony_inter_token_latency_seconds",
            "Time between consecutive generated tokens of one sequence",
            inter_token_latency.clone(),
        );
        registry.register(
            "harmony_generation_requests",
            "Generation requests by outcome",
            requests.clone(),
        );
        registry.register(
            "harmony_queue_depth",
            "Sequences waiting for admission",
            queue_depth.clone(),
        );
        registry.register(
            "harmony_running_sequences",
            "Sequences holding KV blocks",
            running_sequences.clone(),
        );
        registry.register(
            "harmony_kv_blocks_used",
            "KV cache blocks referenced by sequences",
            kv_blocks_used.clone(),
        );
        registry.register(
            "harmony_kv_blocks_free",
            "KV cache blocks available (free or evictable prefix cache)",
            kv_blocks_free.clone(),
        );
        registry.register(
            "harmony_prefix_cache_hit_rate",
            "Share of looked-up full prompt blocks found in the prefix cache",
            prefix_cache_hit_rate.clone(),
        );
        registry.register(
            "harmony_tokens_processed",
            "Tokens run through the model (prompt, recomputation, decode inputs)",
            tokens_processed.clone(),
        );
        registry.register(
            "harmony_tokens_generated",
            "Tokens sampled",
            tokens_generated.clone(),
        );
        registry.register(
            "harmony_preemptions",
            "Sequences preempted for recomputation",
            preemptions.clone(),
        );
        Self {
            registry,
            time_to_first_token,
            inter_token_latency,
            requests,
            queue_depth,
            running_sequences,
            kv_blocks_used,
            kv_blocks_free,
            prefix_cache_hit_rate,
            tokens_processed,
            tokens_generated,
            preemptions,
        }
    }

    /// Sets the gauges of one model and advances its counters from `previous` to `current`.
    pub fn record_scheduler_stats(
        &self,
        labels: &ModelLabels,
        previous: &SchedulerStats,
        current: &SchedulerStats,
    ) {
        let as_gauge = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        self.queue_depth
            .get_or_create(labels)
            .set(as_gauge(current.waiting_sequences));
        self.running_sequences
            .get_or_create(labels)
            .set(as_gauge(current.running_sequences));
        self.kv_blocks_used
            .get_or_create(labels)
            .set(as_gauge(current.kv_blocks_in_use));
        self.kv_blocks_free.get_or_create(labels).set(as_gauge(
            current
                .kv_blocks_total
                .saturating_sub(current.kv_blocks_in_use),
        ));
        let hit_rate = if current.prefix_cache_queried_blocks == 0 {
            0.0
        } else {
            current.prefix_cache_hit_blocks as f64 / current.prefix_cache_queried_blocks as f64
        };
        self.prefix_cache_hit_rate
            .get_or_create(labels)
            .set(hit_rate);
        self.tokens_processed.get_or_create(labels).inc_by(
            current
                .tokens_processed
                .saturating_sub(previous.tokens_processed),
        );
        self.tokens_generated.get_or_create(labels).inc_by(
            current
                .generated_tokens
                .saturating_sub(previous.generated_tokens),
        );
        self.preemptions
            .get_or_create(labels)
            .inc_by(current.preemptions.saturating_sub(previous.preemptions));
    }

    pub fn count_request(&self, labels: &ModelLabels, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                pool: labels.pool.clone(),
                model: labels.model.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Exposes the end of the capacity reservation this replica runs on (unset otherwise, so
    /// that a missing series means "no known end" rather than 1970).
    pub fn register_capacity_reservation_end(&mut self, end: std::time::SystemTime) {
        let gauge = Gauge::<i64>::default();
        let unix_seconds = end
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
            });
        gauge.set(unix_seconds);
        self.registry.register(
            "harmony_capacity_reservation_end_timestamp_seconds",
            "Unix time at which the capacity reservation (EC2 Capacity Block) of this replica ends",
            gauge,
        );
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}
