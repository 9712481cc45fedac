//! Harmony: the worker that owns a replica's compute and serves models over HTTP (port 50053).
//!
//! ```text
//!  HTTP (axum)                       per model
//!  /v1/chat/completions ─┐   ┌──────────────────────────┐
//!  /v1/completions ──────┼──►│ ServedModel              │   engine thread
//!  /v1/models            │   │  tokenizer, template ────┼─► Engine (actor) ─► Scheduler ─► ModelExecutor
//!  /models/spawn|dealloc ┘   └──────────────────────────┘     continuous batching, paged KV, prefix cache
//!  /health /metrics          Registration actor ──► control plane /internal/harmony/{register,deregister}
//! ```
//!
//! A request is validated into a `ValidGenerateRequest` (rendered, tokenized, parameters
//! checked, context length enforced), submitted to the model's [`adaptive_engine::Engine`], and
//! its token events are detokenized, filtered for stop strings and relayed as one response or as
//! SSE chunks. Dropping the response (client disconnect) cancels the sequence and frees its KV
//! blocks. Errors use the project's single vocabulary ([`adaptive_api_types::ErrorCode`]) in
//! OpenAI's error shape.
//!
//! # Draining
//!
//! Harmony drains when its shutdown future completes (SIGTERM in `adaptive harmony`): `/health`
//! turns 503, new generations get 503 `unavailable`, the control plane is told `Draining` (so it
//! routes nothing new here), in-flight requests get `drain_grace` to finish, then the replica
//! deregisters and stops. A replica on capacity with a known end (`CAPACITY_RESERVATION_END`)
//! does the same on its own `drain_lead` before that end, then stays up and unready until it is
//! stopped, since exiting would only get the pod restarted on capacity that is about to go.
//!
//! # Running harmony in-process
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use adaptive_api_types::harmony::SpawnModel;
//! use adaptive_harmony::{Harmony, HarmonyConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = HarmonyConfig::for_test(); // or HarmonyConfig::from_env(&env_map)?
//! let harmony = Harmony::bind(config).await?; // binds now; port 0 picks a free port
//! println!("harmony at {}", harmony.base_url()); // harmony.local_addr() for the SocketAddr
//! harmony
//!     .spawn_model(SpawnModel {
//!         key: "smol".into(),
//!         path: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(), // or "fake://any" for the fake model
//!         max_seq_len: None,
//!         kv_cache_len: None,
//!     })
//!     .await?;
//! let handle = harmony.handle(); // clonable: spawn/dealloc models, read scheduler stats
//! let shutdown = CancellationToken::new();
//! // Serves until `shutdown` fires, then drains: stops taking work (503), finishes in-flight
//! // requests within `drain_grace`, deregisters from the control plane, stops the engines.
//! harmony.run_until(shutdown.cancelled_owned()).await?;
//! # drop(handle);
//! # Ok(())
//! # }
//! ```

pub mod bench;
mod candle_models;
pub mod config;
mod detokenize;
mod error;
pub mod fake_model;
mod generate;
mod http;
mod metrics;
pub mod model;
mod models;
mod registration;
mod tool_calls;
mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adaptive_api_types::harmony::{OnlineModel, SpawnModel};
use adaptive_engine::SchedulerStats;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use adaptive_engine_models::{DeviceChoice, QuantizedMatmul};
pub use config::{
    CapacityReservation, ConfigError, EngineSettings, HarmonyConfig, ModelRegistrySettings,
    ReplicaIdentity, Secret,
};
pub use error::HarmonyError;
pub use model::{DefaultModelLoader, LoadedModel, ModelError, ModelLoader};

/// How long the HTTP server may take to close its connections after the drain.
const SERVER_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the model registry: {0}")]
    ModelRegistry(#[from] adaptive_registry::RegistryError),
}

/// Entry point; see the crate docs.
pub struct Harmony;

impl Harmony {
    /// Binds the listener with the default model loader (fake://, registry and candle models).
    pub async fn bind(config: HarmonyConfig) -> Result<RunningHarmony, StartError> {
        let model_cache = match &config.model_registry {
            Some(settings) => {
                let store =
                    adaptive_registry::RegistryStore::from_url(&settings.url, &settings.store_env)?;
                tracing::info!(
                    registry = %settings.url,
                    cache_dir = %settings.cache_dir.display(),
                    cache_budget_bytes = settings.cache_budget_bytes,
                    "model registry configured"
                );
                Some(Arc::new(adaptive_registry::ModelCache::new(
                    store,
                    settings.cache_dir.clone(),
                    settings.cache_budget_bytes,
                )))
            }
            None => None,
        };
        if config.identity.gpu_count > 0 && config.device == DeviceChoice::Cpu {
            tracing::warn!(
                gpu_count = config.identity.gpu_count,
                cuda_built = DeviceChoice::CUDA_BUILT,
                "models run on the CPU although this replica has GPUs (HARMONY_DEVICE=cpu, or a build without the `cuda` feature)"
            );
        }
        tracing::info!(device = %config.device, cpu_matmul = ?config.cpu_matmul, "model device");
        let loader = DefaultModelLoader {
            model_cache,
            device: config.device,
            cpu_matmul: config.cpu_matmul,
        };
        Self::bind_with_loader(config, Arc::new(loader)).await
    }

    pub async fn bind_with_loader(
        config: HarmonyConfig,
        loader: Arc<dyn ModelLoader>,
    ) -> Result<RunningHarmony, StartError> {
        let listener = tokio::net::TcpListener::bind(config.bind_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind_addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind_addr,
            source,
        })?;
        let models = Arc::new(models::ModelRegistry::new(
            loader,
            config.engine.clone(),
            config.identity.group.clone(),
        ));
        let mut metrics = metrics::Metrics::new();
        if let Some(reservation) = &config.capacity_reservation {
            metrics.register_capacity_reservation_end(reservation.end);
        }
        let state = http::AppState {
            models,
            metrics: Arc::new(metrics),
            in_flight: TaskTracker::new(),
            draining: Arc::new(AtomicBool::new(false)),
            capacity_reservation: config.capacity_reservation.clone().map(Arc::new),
        };
        tracing::info!(%local_addr, "harmony listening");
        Ok(RunningHarmony {
            listener,
            local_addr,
            state,
            config,
        })
    }
}

/// A bound, not yet serving harmony; [`RunningHarmony::run_until`] serves.
pub struct RunningHarmony {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    state: http::AppState,
    config: HarmonyConfig,
}

impl RunningHarmony {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<local_addr>`, the root the OpenAI routes hang from (`/v1/...`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    pub fn handle(&self) -> HarmonyHandle {
        HarmonyHandle {
            state: self.state.clone(),
        }
    }

    /// Loads a model and starts serving it (same as `POST /models/spawn`).
    pub async fn spawn_model(&self, request: SpawnModel) -> Result<OnlineModel, HarmonyError> {
        self.handle().spawn_model(request).await
    }

    /// Serves until `shutdown` completes, then drains (see the crate docs).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let RunningHarmony {
            listener,
            state,
            config,
            ..
        } = self;
        let mut registration = config.control_plane_url.clone().map(|url| {
            registration::Registration::spawn(
                url,
                config.identity.clone(),
                config.registration_retry,
                Arc::clone(&state.models),
                config
                    .capacity_reservation
                    .as_ref()
                    .map(|reservation| reservation.end_rfc3339.clone()),
            )
        });
        for request in config.preload_models.clone() {
            let models = Arc::clone(&state.models);
            tokio::spawn(async move {
                let key = request.key.clone();
                if let Err(error) = models.spawn(request).await {
                    tracing::error!(model = %key, %error, "cannot preload model");
                }
            });
        }

        let stop_serving = CancellationToken::new();
        // Without TCP_NODELAY each streamed token after the first waits for a delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, http::router(state.clone()))
            .with_graceful_shutdown(stop_serving.clone().cancelled_owned());
        let mut server_task = tokio::spawn(async move { server.await });
        let server_failed = |outcome: Result<std::io::Result<()>, tokio::task::JoinError>| {
            outcome.unwrap_or_else(|error| Err(std::io::Error::other(error)))
        };
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            () = capacity_reservation_drain_due(config.capacity_reservation.clone()) => {
                drain(&state, registration.as_ref(), config.drain_grace).await;
                if let Some(registration) = registration.take() {
                    registration.deregister().await;
                }
                // Stay up and unready (`/health` answers 503) until stopped: exiting would only
                // get the pod restarted onto capacity that is about to end.
                tokio::select! {
                    () = &mut shutdown => {}
                    outcome = &mut server_task => return server_failed(outcome),
                }
            }
            outcome = &mut server_task => return server_failed(outcome),
        }

        drain(&state, registration.as_ref(), config.drain_grace).await;
        stop_serving.cancel();
        if tokio::time::timeout(SERVER_CLOSE_TIMEOUT, server_task)
            .await
            .is_err()
        {
            tracing::warn!("http connections did not close in time");
        }
        if let Some(registration) = registration {
            registration.deregister().await;
        }
        state.models.abort_all();
        tracing::info!("harmony stopped");
        Ok(())
    }
}

/// Stops taking new requests, reports `Draining` to the control plane and waits up to `grace` for
/// the in-flight ones (aborting what is left). Does nothing when already draining.
async fn drain(
    state: &http::AppState,
    registration: Option<&registration::Registration>,
    grace: Duration,
) {
    if state.draining.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::info!(
        ?grace,
        "draining: no new requests, finishing in-flight ones"
    );
    if let Some(registration) = registration {
        registration.drain().await;
    }
    state.in_flight.close();
    if tokio::time::timeout(grace, state.in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain grace period over; aborting the remaining generations");
        state.models.abort_all();
    }
}

/// Resolves when the drain ahead of the capacity reservation's end is due (at once when that
/// time has passed); never without a reservation. Wakes at least every minute to re-read the
/// wall clock, so a clock step after start does not make it late.
async fn capacity_reservation_drain_due(reservation: Option<CapacityReservation>) {
    const RECHECK: Duration = Duration::from_secs(60);
    let Some(reservation) = reservation else {
        return std::future::pending().await;
    };
    tracing::info!(
        end = %reservation.end_rfc3339,
        drain_lead = ?reservation.drain_lead,
        "capacity reservation ends at a known time; draining ahead of it"
    );
    loop {
        let wait = reservation.time_until_drain(std::time::SystemTime::now());
        if wait.is_zero() {
            break;
        }
        tokio::time::sleep(wait.min(RECHECK)).await;
    }
    tracing::warn!(end = %reservation.end_rfc3339, "capacity reservation ends soon; draining");
}

/// A clonable handle on a harmony instance (for the embedding process and tests).
#[derive(Clone)]
pub struct HarmonyHandle {
    state: http::AppState,
}

impl HarmonyHandle {
    pub async fn spawn_model(&self, request: SpawnModel) -> Result<OnlineModel, HarmonyError> {
        let model = self.state.models.spawn(request).await?;
        Ok(model.online_view())
    }

    pub fn dealloc_model(&self, key: &str) -> Result<(), HarmonyError> {
        self.state.models.dealloc(key)
    }

    /// The latest scheduler stats of a loaded model.
    pub fn model_stats(&self, key: &str) -> Option<SchedulerStats> {
        self.state
            .models
            .get(key)
            .ok()
            .map(|model| model.engine.stats())
    }

    /// Waits until the model's scheduler stats satisfy `predicate`.
    pub async fn wait_for_model_stats(
        &self,
        key: &str,
        predicate: impl Fn(&SchedulerStats) -> bool,
    ) -> Result<(), HarmonyError> {
        let model = self.state.models.get(key)?;
        model.engine.wait_for_stats(predicate).await;
        Ok(())
    }

    pub fn is_draining(&self) -> bool {
        self.state.is_draining()
    }
}
