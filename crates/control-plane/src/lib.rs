//! The control plane: configuration, metadata store, domain, GraphQL and REST management API,
//! and the harmony replica registry.
//!
//! # Embedding it (`adaptive control-plane`, `adaptive serve`, tests)
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use adaptive_control_plane::{bootstrap, config::Config, ControlPlane};
//!
//! // Embedded defaults under a data directory: SQLite, in-process registry.
//! let config = Config::embedded("./.adaptive");
//! let control_plane = ControlPlane::build(config, Default::default()).await?;
//!
//! // First start: admin + API key (print it once), default project, a local model.
//! if let Some(admin) = control_plane.bootstrap_admin().await? {
//!     println!("api key: {}", admin.api_key.expose());
//! }
//! bootstrap::ensure_default_project(control_plane.store(), &control_plane.config().auth.default_team).await?;
//! bootstrap::register_and_deploy_local_model(
//!     control_plane.store(), bootstrap::DEFAULT_PROJECT_KEY, "smollm2", "/models/smollm2.gguf",
//! ).await?;
//!
//! // Either mount the routers yourself...
//! let _public = control_plane.public_router();   // port 9000: /health /ready /api/graphql
//! let _internal = control_plane.internal_router(); // port 9009: /metrics, harmony registration
//! // ...or let the control plane bind `server.bind` / `server.bind_internal` and serve.
//! let running = control_plane.start().await?;
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # What the gateway uses
//!
//! - [`ControlPlane::store`] -> [`store::MetadataStore`]: `resolve_model_service`,
//!   `insert_interactions` (idempotent by completion id), `insert_scores`.
//! - [`ControlPlane::registry`] -> [`registry::SharedRegistry`], with
//!   [`registry::routable_replicas_for_model`].
//!
//! # Modules
//!
//! - [`config`]: TOML + `ADAPTIVE_*` environment -> [`config::Config`] and [`config::Secrets`].
//! - [`store`]: the metadata store (PostgreSQL or SQLite behind one implementation).
//! - [`registry`]: harmony replicas (in-process or Redis).
//! - [`http`], [`graphql`], [`auth`]: the API surfaces.
//! - [`bootstrap`]: first-start steps.
//! - [`uploads`]: chunked uploads (sessions in the store, parts in the model registry root).
//! - [`datasets`]: uploaded JSONL datasets (metadata in the store, files in the registry root).

pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod datasets;
pub mod error;
pub mod graphql;
pub mod http;
pub mod inference_adapters;
pub mod model_storage;
mod periodic;
pub mod registry;
pub mod store;
pub mod time_buckets;
mod ttl_cache;
pub mod uploads;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use config::{Config, Secrets};
use http::telemetry::ServerMetrics;
use http::{AppState, HeartbeatPolicy};
use registry::{InProcessRegistry, RedisRegistry, SharedRegistry};
use store::{DatabaseTarget, MetadataStore, StoreOptions};

/// Building the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("metadata store: {0}")]
    Store(#[from] store::StoreError),
    #[error("replica registry: {0}")]
    Registry(#[from] registry::RegistryError),
    #[error("cannot read the secret {0}")]
    Secret(#[from] config::SecretReadError),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("cannot bind {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The authenticator and the OIDC providers from `auth.*`, `app.secret` and
/// `auth.oidc.providers`.
fn auth_parts(
    config: &Config,
    secrets: &Secrets,
    store: &MetadataStore,
) -> Result<(Arc<auth::Authenticator>, Arc<auth::oidc::OidcProviders>), BuildError> {
    let providers = match &secrets.oidc_providers {
        Some(source) => auth::oidc::parse_providers(source.read("auth.oidc.providers")?.expose())
            .map_err(BuildError::Auth)?,
        None => Vec::new(),
    };
    let sessions = match &secrets.cookies_secret {
        Some(source) => Some(Arc::new(
            auth::session::SessionCodec::new(&source.read("app.secret")?, &config.auth.session)
                .map_err(BuildError::Auth)?,
        )),
        None if !providers.is_empty() => {
            return Err(BuildError::Auth(
                "auth.oidc.providers is set but the cookies secret (app.secret) is not: \
                 sessions need it"
                    .to_owned(),
            ))
        }
        None => None,
    };
    let root_url = config
        .server
        .root_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.bind));
    let authenticator = Arc::new(auth::Authenticator::new(
        store.clone(),
        sessions,
        auth::DEFAULT_AUTH_CACHE_TTL,
    ));
    Ok((
        authenticator,
        Arc::new(auth::oidc::OidcProviders::new(providers, &root_url)),
    ))
}

/// A built control plane: its stores and API, not yet serving.
pub struct ControlPlane {
    config: Config,
    secrets: Secrets,
    state: AppState,
    /// The inference API (`/api/v1/chat/completions`, ...), mounted on the public port.
    gateway: adaptive_gateway::GatewayState,
    /// Writes the gateway's interactions; flushed on shutdown after the servers drain.
    recorder: adaptive_gateway::Recorder,
}

impl ControlPlane {
    /// Connect the metadata store (migrating if `db.run_migrations`), the replica registry
    /// (Redis when `redis.url` is set, in-process otherwise), and build the API.
    pub async fn build(config: Config, secrets: Secrets) -> Result<Self, BuildError> {
        let target = DatabaseTarget::from_config(&config, &secrets)?;
        tracing::info!(
            backend = target.backend_name(),
            "connecting the metadata store"
        );
        let store = MetadataStore::connect(target, StoreOptions::from_config(&config)).await?;
        let registry: SharedRegistry = match &secrets.redis_url {
            Some(source) => {
                let url = source.read("redis.url")?;
                Arc::new(RedisRegistry::connect(url.expose(), &config.redis.key_prefix).await?)
            }
            None => Arc::new(InProcessRegistry::new()),
        };
        Self::from_parts(config, secrets, store, registry)
    }

    /// Assemble from an existing store and registry (tests, `serve`).
    pub fn from_parts(
        config: Config,
        secrets: Secrets,
        store: MetadataStore,
        registry: SharedRegistry,
    ) -> Result<Self, BuildError> {
        let store_env = adaptive_registry::StoreEnv::from_process();
        Self::from_parts_with_store_env(config, secrets, store, registry, &store_env)
    }

    /// [`Self::from_parts`] with the `AWS_*` variables the model registry is opened with given
    /// explicitly (tests against S3 servers, which never touch the process environment).
    pub fn from_parts_with_store_env(
        config: Config,
        secrets: Secrets,
        store: MetadataStore,
        registry: SharedRegistry,
        store_env: &adaptive_registry::StoreEnv,
    ) -> Result<Self, BuildError> {
        let (authenticator, oidc) = auth_parts(&config, &secrets, &store)?;
        let model_storage =
            model_storage::ModelStorage::open(&config.model_registry_location(), store_env);
        let uploads =
            uploads::Uploads::new(store.clone(), model_storage.clone(), Default::default());
        // Datasets live in the shared directory, where harmony's training jobs read them.
        let dataset_storage = model_storage::ModelStorage::open(
            &config.shared_directory_location(),
            &config.shared_directory_env(store_env),
        );
        let datasets = datasets::Datasets::new(store.clone(), dataset_storage, uploads.clone())
            .with_policy(datasets::DatasetPolicy::from(&config.datasets));
        let schema = graphql::build_schema(graphql::SchemaParts {
            store: store.clone(),
            registry: registry.clone(),
            model_storage: model_storage.clone(),
            datasets: datasets.clone(),
            authenticator: authenticator.clone(),
            oidc: oidc.clone(),
            auth_config: Arc::new(config.auth.clone()),
            enable_introspection: config.app.enable_gql_schema_introspection,
        });
        let mut gateway_metrics = None;
        let metrics = ServerMetrics::with_extra_metrics(|metrics_registry| {
            gateway_metrics = Some(adaptive_gateway::GatewayMetrics::register(metrics_registry));
        });
        let (recorder, recorder_handle) = adaptive_gateway::Recorder::spawn(
            Arc::new(inference_adapters::StoreInteractionSink::new(store.clone())),
            adaptive_gateway::RecorderConfig::default(),
        );
        let gateway = adaptive_gateway::GatewayState::new(
            gateway_config(&config),
            inference_adapters::directory(store.clone(), registry.clone(), authenticator.clone()),
            recorder_handle,
            gateway_metrics.unwrap_or_else(adaptive_gateway::GatewayMetrics::unregistered),
        )
        .expect("the gateway's HTTP client builds with static settings");
        let state = AppState {
            store,
            request_timeout: Duration::from_secs(config.server.timeout_seconds),
            upload_part_timeout: Duration::from_secs(config.server.upload_part_timeout_seconds),
            registry,
            metrics: Arc::new(metrics),
            heartbeat: HeartbeatPolicy {
                interval: Duration::from_millis(config.harmony.heartbeat_interval_ms),
                ttl: Duration::from_millis(config.harmony.replica_ttl_ms),
            },
            schema,
            auth: authenticator,
            oidc,
            auth_config: Arc::new(config.auth.clone()),
            uploads,
            datasets,
        };
        Ok(Self {
            config,
            secrets,
            state,
            gateway,
            recorder,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &MetadataStore {
        &self.state.store
    }

    pub fn registry(&self) -> SharedRegistry {
        self.state.registry.clone()
    }

    /// Port 9000: `/health`, `/ready`, `/api/graphql`, `/api/openapi.json`.
    pub fn public_router(&self) -> Router {
        http::public_router(self.state.clone())
            .merge(adaptive_gateway::router(self.gateway.clone()))
    }

    /// Port 9009: `/metrics`, `/internal/harmony/register`, `/internal/harmony/deregister`.
    pub fn internal_router(&self) -> Router {
        http::internal_router(self.state.clone())
    }

    /// Replace the chunked-upload limits (defaults: [`uploads::UploadLimits::default`]); tests
    /// use small ones.
    pub fn with_upload_limits(mut self, limits: uploads::UploadLimits) -> Self {
        self.state.uploads = self.state.uploads.with_limits(limits);
        self
    }

    /// See [`bootstrap::ensure_bootstrap_admin`].
    pub async fn bootstrap_admin(
        &self,
    ) -> Result<Option<bootstrap::BootstrapAdmin>, store::StoreError> {
        bootstrap::ensure_bootstrap_admin(
            &self.state.store,
            &self.config.auth.default_team,
            &self.secrets,
        )
        .await
    }

    /// The GraphQL schema in SDL (documentation, the permission-table coverage test).
    pub fn graphql_sdl(&self) -> String {
        self.state.schema.sdl()
    }

    /// The authenticator (API keys, sessions) this control plane uses.
    pub fn authenticator(&self) -> Arc<auth::Authenticator> {
        self.state.auth.clone()
    }

    /// Bind `server.bind` and `server.bind_internal` and serve both routers until
    /// [`RunningControlPlane::shutdown`].
    pub async fn start(self) -> Result<RunningControlPlane, BuildError> {
        let bind = |address: SocketAddr| async move {
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| BuildError::Bind { address, source })
        };
        let public_listener = bind(self.config.server.bind).await?;
        let internal_listener = bind(self.config.server.bind_internal).await?;
        let public_addr = local_addr(&public_listener, self.config.server.bind)?;
        let internal_addr = local_addr(&internal_listener, self.config.server.bind_internal)?;
        let shutdown = CancellationToken::new();
        let servers = vec![
            spawn_server(public_listener, self.public_router(), shutdown.clone()),
            spawn_server(internal_listener, self.internal_router(), shutdown.clone()),
            self.state.uploads.spawn_sweeper(shutdown.clone()),
            self.state.datasets.spawn_sweeper(shutdown.clone()),
        ];
        tracing::info!(%public_addr, %internal_addr, "control plane serving");
        Ok(RunningControlPlane {
            public_addr,
            internal_addr,
            shutdown,
            servers,
            grace: Duration::from_secs(self.config.server.shutdown_grace_seconds),
            store: self.state.store.clone(),
            recorder: self.recorder,
        })
    }
}

fn local_addr(
    listener: &tokio::net::TcpListener,
    address: SocketAddr,
) -> Result<SocketAddr, BuildError> {
    listener
        .local_addr()
        .map_err(|source| BuildError::Bind { address, source })
}

fn spawn_server(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Without TCP_NODELAY every streamed SSE event after the first waits for the client's
        // delayed ACK (Nagle), about 40 ms per token.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "server stopped with an error");
        }
    })
}

/// A serving control plane.
pub struct RunningControlPlane {
    pub public_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    shutdown: CancellationToken,
    servers: Vec<tokio::task::JoinHandle<()>>,
    grace: Duration,
    store: MetadataStore,
    recorder: adaptive_gateway::Recorder,
}

impl RunningControlPlane {
    /// Stop accepting connections, let in-flight requests finish within the grace period,
    /// then close the store.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(self.grace, futures::future::join_all(self.servers));
        if drained.await.is_err() {
            tracing::warn!(
                grace_seconds = self.grace.as_secs(),
                "in-flight requests did not finish within the grace period"
            );
        }
        // In-flight requests have queued their interactions by now; write them before the
        // store closes.
        let written = self.recorder.shutdown(self.grace).await;
        tracing::info!(written, "interactions flushed");
        self.store.close().await;
    }
}

/// Timeouts for calls from the gateway to harmony (`server.timeout_seconds` bounds the wait for
/// a first token and between tokens, as the reference's 60 s default does).
fn gateway_config(config: &Config) -> adaptive_gateway::GatewayConfig {
    let timeout = Duration::from_secs(config.server.timeout_seconds.max(1));
    adaptive_gateway::GatewayConfig {
        first_token_timeout: timeout,
        idle_timeout: timeout,
        ..adaptive_gateway::GatewayConfig::default()
    }
}
