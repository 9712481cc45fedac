//! Test harnesses: per-test databases on both backends, a control plane on port 0, a TCP proxy
//! that can be stopped and restarted, and `wait_for`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use adaptive_control_plane::config::{Config, Secrets};
use adaptive_control_plane::registry::{InProcessRegistry, SharedRegistry};
use adaptive_control_plane::store::{DatabaseTarget, MetadataStore, StoreOptions};
use adaptive_control_plane::uploads::UploadLimits;
use adaptive_control_plane::{ControlPlane, RunningControlPlane};
use adaptive_registry::StoreEnv;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

pub fn postgres_server_url() -> String {
    std::env::var("ADAPTIVE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("ADAPTIVE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test and is removed when dropped.
pub struct TestDatabase {
    pub target: DatabaseTarget,
    _directory: Option<tempfile::TempDir>,
    postgres_name: Option<String>,
}

pub async fn admin_execute(sql: &str) {
    let mut connection =
        sqlx::PgConnection::connect(&format!("{}/postgres", postgres_server_url()))
            .await
            .expect("connect to the test PostgreSQL server");
    sqlx::query(sql)
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    let _ = connection.close().await;
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let directory = tempfile::tempdir().expect("tempdir");
                let target = DatabaseTarget::Sqlite {
                    path: directory.path().join("test.db"),
                };
                Self {
                    target,
                    _directory: Some(directory),
                    postgres_name: None,
                }
            }
            Backend::Postgres => {
                let name = unique_name("cp_test");
                admin_execute(&format!("CREATE DATABASE {name}")).await;
                let target =
                    DatabaseTarget::from_url(&format!("{}/{name}", postgres_server_url()), None)
                        .expect("postgres url");
                Self {
                    target,
                    _directory: None,
                    postgres_name: Some(name),
                }
            }
        }
    }

    pub fn postgres_name(&self) -> Option<&str> {
        self.postgres_name.as_deref()
    }

    pub async fn store(&self) -> MetadataStore {
        MetadataStore::connect(self.target.clone(), store_options())
            .await
            .expect("connect and migrate")
    }
}

pub fn store_options() -> StoreOptions {
    StoreOptions {
        run_migrations: true,
        max_connections: 4,
        acquire_timeout: Duration::from_millis(1500),
        credential_refresh_interval: Duration::from_millis(100),
        startup_retry: Duration::from_secs(20),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        // Drop from a fresh runtime on another thread: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(admin_execute(&format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )));
        })
        .join();
    }
}

/// A control plane serving on 127.0.0.1:0 over the given store, with an in-process registry.
pub struct TestServer {
    pub running: Option<RunningControlPlane>,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub api_key: String,
    sdl: String,
    _directory: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(store: MetadataStore) -> Self {
        Self::start_with_upload_limits(store, UploadLimits::default()).await
    }

    /// With other chunked-upload limits (small parts, a short idle TTL).
    pub async fn start_with_upload_limits(store: MetadataStore, limits: UploadLimits) -> Self {
        Self::start_with_model_registry(store, limits, None).await
    }

    /// With the model registry (home of uploads) and the shared directory (datasets) at `url`
    /// reached with `env` (an S3 server of `adaptive_registry::test_util`); `None`:
    /// `<data_dir>/model_registry` and `<data_dir>/shared`.
    pub async fn start_with_model_registry(
        store: MetadataStore,
        limits: UploadLimits,
        model_registry: Option<(String, StoreEnv)>,
    ) -> Self {
        let directory = tempfile::tempdir().expect("tempdir");
        let control_plane =
            test_control_plane(directory.path(), store, model_registry).with_upload_limits(limits);
        let admin = control_plane
            .bootstrap_admin()
            .await
            .expect("bootstrap")
            .expect("first start creates the admin");
        let sdl = control_plane.graphql_sdl();
        let running = control_plane.start().await.expect("serve");
        Self {
            public: running.public_addr,
            internal: running.internal_addr,
            running: Some(running),
            api_key: admin.api_key.expose().to_owned(),
            sdl,
            _directory: directory,
        }
    }

    /// The server's `app.data_dir` (its default model registry is `model_registry` in it).
    pub fn data_dir(&self) -> &std::path::Path {
        self._directory.path()
    }

    pub fn graphql_sdl(&self) -> String {
        self.sdl.clone()
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal)
    }

    /// POST a GraphQL document with the admin key; returns the JSON body.
    pub async fn graphql(&self, query: &str, variables: serde_json::Value) -> serde_json::Value {
        self.graphql_as(&self.api_key, query, variables).await
    }

    /// POST a GraphQL document with API key `key`; returns the JSON body.
    pub async fn graphql_as(
        &self,
        key: &str,
        query: &str,
        variables: serde_json::Value,
    ) -> serde_json::Value {
        reqwest::Client::new()
            .post(self.public_url("/api/graphql"))
            .bearer_auth(key)
            .json(&serde_json::json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json body")
    }

    /// Creates a service account holding `role` in `team` and returns its API key.
    pub async fn service_account_key(&self, name: &str, team: &str, role: &str) -> String {
        let created = self
            .graphql(
                "mutation($input: UserCreate!) { createUser(input: $input) { generatedApiKey } }",
                serde_json::json!({"input": {"name": name, "teams": [{"team": team, "role": role}], "userType": "SYSTEM", "generateApiKey": true}}),
            )
            .await;
        created["data"]["createUser"]["generatedApiKey"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"))
            .to_owned()
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// Poll `check` until it returns true; panic with `what` after `deadline`.
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(started.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy to a fixed upstream that can be stopped (listener closed, every connection cut)
/// and restarted on the same port: a database outage on demand.
pub struct TcpProxy {
    pub address: SocketAddr,
    upstream: SocketAddr,
    stop: Option<CancellationToken>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let mut proxy = Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream,
            stop: None,
        };
        proxy.resume().await;
        proxy
    }

    pub fn stop(&mut self) {
        if let Some(token) = self.stop.take() {
            token.cancel();
        }
    }

    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.address)
            .await
            .expect("bind proxy");
        self.address = listener.local_addr().expect("proxy address");
        let token = CancellationToken::new();
        let upstream = self.upstream;
        let accept_token = token.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let connection_token = accept_token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = connection_token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        self.stop = Some(token);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A control plane over `store` with `app.data_dir` at `data_dir`, its model registry (home of
/// uploads) and shared directory (datasets) at `model_registry` reached with its env (an S3
/// server of `adaptive_registry::test_util`); `None`: `<data_dir>/model_registry` and
/// `<data_dir>/shared`. Not started, its admin not bootstrapped.
pub fn test_control_plane(
    data_dir: &std::path::Path,
    store: MetadataStore,
    model_registry: Option<(String, StoreEnv)>,
) -> ControlPlane {
    let mut config = Config::for_test(data_dir);
    config.harmony.heartbeat_interval_ms = 1000;
    config.harmony.replica_ttl_ms = 60_000;
    let store_env = match model_registry {
        Some((url, env)) => {
            // The shared directory (datasets) on the same server, beside the registry.
            config.harmony.shared_directory.url = Some(url.clone());
            config.model_registry = Some(url);
            env
        }
        None => StoreEnv::default(),
    };
    let registry: SharedRegistry = std::sync::Arc::new(InProcessRegistry::new());
    ControlPlane::from_parts_with_store_env(config, Secrets::default(), store, registry, &store_env)
        .expect("control plane")
}
