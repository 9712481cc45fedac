//! Connecting: which database the configuration names, the pool, migrations, and credential
//! rotation.
//!
//! Rotation: the pool's connect options hold the password that the *next new connection* uses.
//! When the password comes from a file, a small task re-reads it every
//! [`StoreOptions::credential_refresh_interval`] and after every connectivity failure, and swaps
//! the options when it changed ([`sqlx::Pool::set_connect_options`]). Existing connections are
//! untouched (PostgreSQL keeps them valid across `ALTER ROLE ... PASSWORD`); the next connection
//! attempt uses the new password, without a restart.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;

use super::{MetadataStore, StoreError};
use crate::config::{Config, SecretSource, Secrets};

/// Which database to use, resolved from [`Config`] and [`Secrets`].
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A PostgreSQL URL without its password, plus where the password comes from.
    Postgres {
        url_without_password: String,
        password: Option<SecretSource>,
    },
    Sqlite {
        path: PathBuf,
    },
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTarget::Postgres {
                url_without_password,
                ..
            } => write!(formatter, "Postgres({url_without_password})"),
            DatabaseTarget::Sqlite { path } => write!(formatter, "Sqlite({})", path.display()),
        }
    }
}

impl DatabaseTarget {
    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseTarget::Postgres { .. } => "postgres",
            DatabaseTarget::Sqlite { .. } => "sqlite",
        }
    }

    /// `db.url`, else `db.host`/`db.username`/`db.database`, else SQLite in the data directory.
    pub fn from_config(config: &Config, secrets: &Secrets) -> Result<Self, StoreError> {
        if let Some(url_source) = &secrets.db_url {
            let url = url_source
                .read("db.url")
                .map_err(|error| StoreError::Invalid(error.to_string()))?;
            return Self::from_url(url.expose(), secrets.db_password.clone());
        }
        if let Some(host) = &config.db.host {
            let username = config.db.username.as_deref().unwrap_or("postgres");
            let database = config.db.database.as_deref().unwrap_or("adaptive");
            return Self::from_url(
                &format!("postgres://{username}@{host}/{database}"),
                secrets.db_password.clone(),
            );
        }
        Ok(DatabaseTarget::Sqlite {
            path: crate::config::sqlite_path(&config.app.data_dir),
        })
    }

    /// A `postgres://`, `postgresql://` or `sqlite://` URL. A password in the URL is used unless
    /// `password` is given.
    pub fn from_url(url: &str, password: Option<SecretSource>) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            return Ok(DatabaseTarget::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Invalid(
                "db.url must start with postgres://, postgresql:// or sqlite://".to_owned(),
            ));
        }
        let mut options = AnyConnectOptions::from_str(url)
            .map_err(|_| StoreError::Invalid("db.url is not a valid URL".to_owned()))?;
        let url_password = options.database_url.password().map(percent_decode);
        let _ = options.database_url.set_password(None);
        let password = password.or_else(|| {
            url_password.map(|plain| SecretSource::Inline(crate::config::SecretString::new(plain)))
        });
        Ok(DatabaseTarget::Postgres {
            url_without_password: options.database_url.to_string(),
            password,
        })
    }
}

fn percent_decode(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&encoded[index + 1..index + 3], 16) {
                decoded.push(byte);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Pool and start-up options, from [`crate::config::DbConfig`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub run_migrations: bool,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub credential_refresh_interval: Duration,
    /// How long [`MetadataStore::connect`] retries an unreachable database before failing.
    pub startup_retry: Duration,
}

impl StoreOptions {
    pub fn from_config(config: &Config) -> Self {
        Self {
            run_migrations: config.db.run_migrations,
            max_connections: config.db.max_connections,
            acquire_timeout: Duration::from_millis(config.db.acquire_timeout_ms),
            startup_retry: Duration::from_secs(config.db.startup_retry_seconds),
            credential_refresh_interval: Duration::from_secs(1),
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Re-reads a file-backed password and swaps the pool's connect options when it changed.
#[derive(Clone)]
pub(crate) struct CredentialRefresher {
    url_without_password: String,
    source: SecretSource,
    last_password: Arc<Mutex<Option<String>>>,
}

impl CredentialRefresher {
    fn options_with(&self, password: &str) -> Option<AnyConnectOptions> {
        let mut options = AnyConnectOptions::from_str(&self.url_without_password).ok()?;
        options.database_url.set_password(Some(password)).ok()?;
        Some(options)
    }

    pub(crate) fn refresh(&self, pool: &AnyPool) {
        let password = match self.source.read("db.password") {
            Ok(password) => password,
            Err(error) => {
                tracing::warn!(%error, "cannot re-read the database password");
                return;
            }
        };
        let Ok(mut last) = self.last_password.lock() else {
            return;
        };
        if last.as_deref() == Some(password.expose()) {
            return;
        }
        if let Some(options) = self.options_with(password.expose()) {
            pool.set_connect_options(options);
            *last = Some(password.expose().to_owned());
            tracing::info!("database credentials changed; new connections use them");
        }
    }
}

impl MetadataStore {
    /// Connect to the configured database, run migrations if asked, and start the credential
    /// refresher. The pool is lazy: an unreachable database does not fail the start, it makes
    /// requests (and `/ready`) fail with 503 until it is back.
    pub async fn connect(
        target: DatabaseTarget,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let pool_options = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(true);
        let (pool, credentials) = match &target {
            DatabaseTarget::Sqlite { path } => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|error| {
                        StoreError::Invalid(format!(
                            "cannot create the data directory {}: {error}",
                            parent.display()
                        ))
                    })?;
                }
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let connect_options = AnyConnectOptions::from_str(&url)
                    .map_err(|error| StoreError::Invalid(format!("sqlite path: {error}")))?;
                // SQLite serializes writers; one connection avoids "database is locked".
                let pool = pool_options
                    .max_connections(1)
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *connection)
                                .await?;
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *connection)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_lazy_with(connect_options);
                (pool, None)
            }
            DatabaseTarget::Postgres {
                url_without_password,
                password,
            } => {
                let mut connect_options = AnyConnectOptions::from_str(url_without_password)
                    .map_err(|_| StoreError::Invalid("db.url is not a valid URL".to_owned()))?;
                let mut last_password = None;
                if let Some(source) = password {
                    let current = source
                        .read("db.password")
                        .map_err(|error| StoreError::Invalid(error.to_string()))?;
                    let _ = connect_options
                        .database_url
                        .set_password(Some(current.expose()));
                    last_password = Some(current.expose().to_owned());
                }
                let pool = pool_options.connect_lazy_with(connect_options);
                let credentials = password.clone().map(|source| CredentialRefresher {
                    url_without_password: url_without_password.clone(),
                    source,
                    last_password: Arc::new(Mutex::new(last_password)),
                });
                (pool, credentials)
            }
        };
        let store = MetadataStore {
            pool,
            target,
            credentials,
        };
        if let Some(refresher) = &store.credentials {
            if matches!(refresher.source, SecretSource::File(_)) {
                spawn_refresher(
                    refresher.clone(),
                    store.pool.clone(),
                    options.credential_refresh_interval,
                );
            }
        }
        if options.run_migrations {
            store.migrate_when_reachable(options.startup_retry).await?;
        }
        Ok(store)
    }

    /// Migrate, retrying while the database is unreachable (it may start after us: a pod
    /// scheduled before its database, a restart of both), with exponential backoff up to
    /// `patience` (authentication failures count too: a rotated password may be on its way).
    /// Other failures, such as a broken migration, fail at once.
    async fn migrate_when_reachable(&self, patience: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.migrate().await {
                Err(StoreError::Unavailable(reason))
                    if tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::warn!(attempt, %reason, retry_in_ms = delay.as_millis() as u64, "the database is not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Whether this process's database connection is encrypted (`sslmode`): `None` for SQLite.
    pub async fn tls_in_use(&self) -> Result<Option<bool>, StoreError> {
        if matches!(self.target, DatabaseTarget::Sqlite { .. }) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT CASE WHEN ssl THEN 1 ELSE 0 END AS tls FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(super::rows::int(&row, "tls")? == 1))
    }

    /// Apply pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(inner) => StoreError::from(inner),
            other => StoreError::Internal(anyhow::Error::new(other)),
        })
    }
}

fn spawn_refresher(refresher: CredentialRefresher, pool: AnyPool, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            if pool.is_closed() {
                return;
            }
            refresher.refresh(&pool);
        }
    });
}
