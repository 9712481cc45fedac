//! The inference gateway: the product's hot path.
//!
//! ```text
//! client ──POST /api/v1/chat/completions──▶ gateway ──▶ Directory::authenticate, ::resolve
//!                                              │           (API key, project[/model] → model service,
//!                                              │            replicas where the model is online)
//!                                              ├──▶ Balancer::pick (fewest outstanding tokens,
//!                                              │      session and prefix affinity, never draining)
//!                                              ├──▶ relay to harmony, SSE event by event, retry on
//!                                              │      another replica before the first token
//!                                              └──▶ Recorder (bounded queue, batched inserts,
//!                                                     flushed on shutdown) ──▶ InteractionStore
//! ```
//!
//! The gateway is a library: it knows nothing of SQL or of how replicas register. The control
//! plane implements [`Directory`] and [`InteractionStore`] over its metadata store and replica
//! registry, and mounts [`router`] on its public port. Tests plug in small in-memory versions and
//! a fake harmony (see `adaptive-test-support`).

mod balancer;
mod directory;
mod error;
mod handlers;
mod ids;
mod metrics;
mod raw_json;
mod recorder;
mod relay;
mod request;
mod sse;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

pub use balancer::{Balancer, BalancerConfig, Lease, RouteHints};
pub use directory::{
    Caller, Directory, InteractionRecord, InteractionStore, JsonText, MessageText, ModelListing,
    Replica, ResolvedModel, StoreError, Usage,
};
pub use error::GatewayError;
pub use metrics::GatewayMetrics;
pub use recorder::{Recorder, RecorderConfig, RecorderHandle};

/// Timeouts and retry bounds for calls to harmony.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// TCP connect to a replica.
    pub connect_timeout: Duration,
    /// From sending the request to the first SSE event (or the whole body when not streaming);
    /// includes queueing inside harmony.
    pub first_token_timeout: Duration,
    /// Between two SSE events of one stream.
    pub idle_timeout: Duration,
    /// Replicas tried after the first one fails before producing a token.
    pub max_retries: usize,
    pub balancer: BalancerConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_retries: 2,
            balancer: BalancerConfig::default(),
        }
    }
}

/// Everything the handlers need; cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<GatewayInner>,
}

struct GatewayInner {
    config: GatewayConfig,
    directory: Arc<dyn Directory>,
    balancer: Balancer,
    recorder: RecorderHandle,
    upstream: upstream::UpstreamClient,
    metrics: GatewayMetrics,
}

impl GatewayState {
    pub fn new(
        config: GatewayConfig,
        directory: Arc<dyn Directory>,
        recorder: RecorderHandle,
        metrics: GatewayMetrics,
    ) -> Result<Self, GatewayError> {
        let upstream = upstream::UpstreamClient::new(config.connect_timeout);
        let balancer = Balancer::new(config.balancer.clone());
        Ok(Self {
            inner: Arc::new(GatewayInner {
                config,
                directory,
                balancer,
                recorder,
                upstream,
                metrics,
            }),
        })
    }

    pub fn balancer(&self) -> &Balancer {
        &self.inner.balancer
    }
}

/// The OpenAI-compatible routes, mounted under both `/api/v1` and `/v1`.
///
/// Each route is registered with its full path rather than through `Router::nest`: a nested
/// route rewrites every request's URI and adds an extension on the way in.
pub fn router(state: GatewayState) -> axum::Router {
    let mut router = axum::Router::new();
    for prefix in ["/api/v1", "/v1"] {
        router = router
            .route(
                &format!("{prefix}/chat/completions"),
                axum::routing::post(handlers::chat_completions),
            )
            .route(
                &format!("{prefix}/completions"),
                axum::routing::post(handlers::completions),
            )
            .route(
                &format!("{prefix}/models"),
                axum::routing::get(handlers::list_models),
            );
    }
    router.with_state(state)
}
