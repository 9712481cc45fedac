//! Configuration: one TOML file plus `ADAPTIVE_<SECTION>__<KEY>` overrides, parsed once into
//! typed per-subsystem structs ([`Config`]) and a separate [`Secrets`].
//!
//! The environment is read from an explicit map ([`ConfigSources::env`]), never from the
//! process, so tests build any environment they like without mutating global state. Every key
//! is declared in [`keys::KEYS`]; a key that is not there, in the file or in the environment,
//! stops the start with a message naming it, as does a value of the wrong type.
//!
//! Loading goes: file -> TOML tree (every leaf checked against the key table) -> environment
//! overrides (typed by the table) -> secrets split off -> serde into [`Config`] with
//! `deny_unknown_fields` -> cross-field checks (`db.host` needs `db.database`, ...).

pub mod keys;
mod secrets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use secrets::{SecretReadError, SecretSource, SecretString, Secrets};

use keys::{KeySpec, ValueKind, FILE_SUFFIX};

/// The environment variable naming the config file.
pub const CONFIG_FILE_ENV: &str = "ADAPTIVE_CONFIG_FILE";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub db: DbConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub app: AppConfig,
    pub harmony: HarmonyConfig,
    pub datasets: DatasetsConfig,
    /// Model registry URL or path; default `<data_dir>/model_registry`.
    pub model_registry: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub bind_internal: SocketAddr,
    pub root_url: Option<String>,
    pub cluster_root_url: Option<String>,
    pub timeout_seconds: u64,
    /// Timeout of one chunked-upload part (`POST /api/v1/upload/part`), which carries up to
    /// 128 MiB and is exempt from `timeout_seconds`.
    pub upload_part_timeout_seconds: u64,
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbConfig {
    pub username: Option<String>,
    pub host: Option<String>,
    pub database: Option<String>,
    pub run_migrations: bool,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub startup_retry_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub key_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub default_team: String,
    pub default_role: String,
    pub admins: Vec<String>,
    pub session: SessionConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub secure: bool,
    pub expiration_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub data_dir: PathBuf,
    pub enable_gql_schema_introspection: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HarmonyConfig {
    pub url: Option<String>,
    pub heartbeat_interval_ms: u64,
    pub replica_ttl_ms: u64,
    pub shared_directory: SharedDirectoryConfig,
}

/// How the processing of uploaded datasets is shared between replicas and resumed
/// ([`crate::datasets`], "Failure and races").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetsConfig {
    /// The lease of a replica's claim on a dataset it processes, renewed every quarter of it.
    pub claim_ttl_seconds: u64,
    /// How often every replica looks for datasets nobody processes.
    pub sweep_interval_seconds: u64,
    /// How many times a dataset's processing may die with its replica before it is failed.
    pub max_expired_claims: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedDirectoryConfig {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub path: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
}

// === defaults (kept equal to keys::KEYS by a test) ===

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 9000)),
            bind_internal: SocketAddr::from(([0, 0, 0, 0], 9009)),
            root_url: None,
            cluster_root_url: None,
            timeout_seconds: 60,
            upload_part_timeout_seconds: 900,
            shutdown_grace_seconds: 30,
        }
    }
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            username: None,
            host: None,
            database: None,
            run_migrations: true,
            max_connections: 10,
            acquire_timeout_ms: 3000,
            startup_retry_seconds: 60,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            key_prefix: "adaptive".to_owned(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            default_team: "default".to_owned(),
            default_role: "admin".to_owned(),
            admins: Vec::new(),
            session: SessionConfig::default(),
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            secure: true,
            expiration_seconds: 518_400,
        }
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./.adaptive"),
            enable_gql_schema_introspection: false,
        }
    }
}

impl Default for HarmonyConfig {
    fn default() -> Self {
        Self {
            url: None,
            heartbeat_interval_ms: 5000,
            replica_ttl_ms: 15_000,
            shared_directory: SharedDirectoryConfig::default(),
        }
    }
}

impl Default for DatasetsConfig {
    fn default() -> Self {
        Self {
            claim_ttl_seconds: 60,
            sweep_interval_seconds: 30,
            max_expired_claims: 5,
        }
    }
}

// === loading ===

/// A configuration problem, always naming the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown configuration key `{key}` (in {origin})")]
    UnknownKey { key: String, origin: String },
    #[error("invalid value for `{key}` (in {origin}): expected {expected}")]
    InvalidValue {
        key: String,
        origin: String,
        expected: String,
    },
    #[error("missing configuration: {0}")]
    Missing(String),
}

/// Where configuration comes from: an optional file and an environment map.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    pub file: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
}

impl ConfigSources {
    /// The process environment, read once; the file is `--config` if given, else
    /// `ADAPTIVE_CONFIG_FILE`.
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let file = config_file.or_else(|| env.get(CONFIG_FILE_ENV).map(PathBuf::from));
        Self { file, env }
    }
}

/// Configuration plus the secrets that go with it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub secrets: Secrets,
}

impl Config {
    /// Parse the sources once. See the module docs for the order.
    pub fn load(sources: &ConfigSources) -> Result<LoadedConfig, ConfigError> {
        let mut tree = toml::Table::new();
        let mut secrets = Secrets::default();
        if let Some(path) = &sources.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let file_tree: toml::Table =
                toml::from_str(&text).map_err(|error| ConfigError::Syntax {
                    path: path.clone(),
                    message: error.message().to_owned(),
                })?;
            let origin = path.display().to_string();
            let mut leaves = Vec::new();
            flatten("", &toml::Value::Table(file_tree), &mut leaves);
            for (key_path, value) in leaves {
                apply_leaf(&key_path, value, &origin, &mut tree, &mut secrets)?;
            }
        }
        // Environment values first, then `_FILE` variants, so a file wins over a value.
        let mut env_entries: Vec<(&String, &String)> = sources.env.iter().collect();
        env_entries.sort_by_key(|(name, _)| name.ends_with("_FILE"));
        for (name, raw) in env_entries {
            let Some(key_path) = keys::path_of_env(name) else {
                continue;
            };
            let value = env_value(&key_path, raw, name)?;
            apply_leaf(&key_path, value, name, &mut tree, &mut secrets)?;
        }
        let config: Config =
            toml::Value::Table(tree)
                .try_into()
                .map_err(|error: toml::de::Error| ConfigError::InvalidValue {
                    key: "(config)".to_owned(),
                    origin: "config".to_owned(),
                    expected: error.message().to_owned(),
                })?;
        config.check(&secrets)?;
        Ok(LoadedConfig { config, secrets })
    }

    /// The embedded one-machine defaults with everything under `data_dir`: SQLite, the
    /// in-process registry, local model registry and shared directory.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            app: AppConfig {
                data_dir: data_dir.into(),
                ..AppConfig::default()
            },
            ..Config::default()
        }
    }

    /// The embedded defaults bound to 127.0.0.1 on ephemeral ports (tests, `serve`).
    pub fn for_test(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::embedded(data_dir);
        config.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.bind_internal = SocketAddr::from(([127, 0, 0, 1], 0));
        config.db.acquire_timeout_ms = 1000;
        config
    }

    /// The shared directory (datasets; later, training inputs and outputs), shared with harmony:
    /// `harmony.shared_directory.url` (`s3://bucket/prefix` or a path), else `.path`, else
    /// `<app.data_dir>/shared`.
    pub fn shared_directory_location(&self) -> String {
        let shared = &self.harmony.shared_directory;
        shared
            .url
            .clone()
            .or_else(|| shared.path.clone())
            .filter(|location| !location.trim().is_empty())
            .unwrap_or_else(|| self.app.data_dir.join("shared").display().to_string())
    }

    /// The object-store environment for the shared directory: `base` (the process's AWS
    /// settings) with the shared directory's own endpoint when one is configured.
    pub fn shared_directory_env(
        &self,
        base: &adaptive_registry::StoreEnv,
    ) -> adaptive_registry::StoreEnv {
        match &self.harmony.shared_directory.endpoint {
            Some(endpoint) if !endpoint.is_empty() => base.with("AWS_ENDPOINT_URL_S3", endpoint),
            _ => base.clone(),
        }
    }

    pub fn model_registry_location(&self) -> String {
        match &self.model_registry {
            Some(location) => location.clone(),
            None => self
                .app
                .data_dir
                .join("model_registry")
                .display()
                .to_string(),
        }
    }

    fn check(&self, secrets: &Secrets) -> Result<(), ConfigError> {
        if self.db.host.is_some() && secrets.db_url.is_some() {
            return Err(ConfigError::Missing(
                "set either db.url or db.host/db.database, not both".to_owned(),
            ));
        }
        if self.db.host.is_some() && self.db.database.is_none() {
            return Err(ConfigError::Missing(
                "db.database is required when db.host is set".to_owned(),
            ));
        }
        if self.db.host.is_some() && self.db.username.is_none() {
            return Err(ConfigError::Missing(
                "db.username is required when db.host is set".to_owned(),
            ));
        }
        let shared = &self.harmony.shared_directory;
        let s3_url = shared
            .url
            .as_deref()
            .is_some_and(|url| url.starts_with("s3://"));
        let consistent = match shared.kind.as_deref().filter(|kind| !kind.is_empty()) {
            None => true,
            Some("s3") => s3_url,
            Some("local") => !s3_url,
            Some(_) => false,
        };
        if !consistent {
            return Err(ConfigError::InvalidValue {
                key: "harmony.shared_directory.type".to_owned(),
                origin: "config".to_owned(),
                expected: "`s3` with an s3:// url, or `local` with a path".to_owned(),
            });
        }
        if self.db.max_connections == 0 {
            return Err(ConfigError::InvalidValue {
                key: "db.max_connections".to_owned(),
                origin: "config".to_owned(),
                expected: "a number greater than 0".to_owned(),
            });
        }
        for (key, seconds) in [
            (
                "datasets.claim_ttl_seconds",
                self.datasets.claim_ttl_seconds,
            ),
            (
                "datasets.sweep_interval_seconds",
                self.datasets.sweep_interval_seconds,
            ),
        ] {
            if seconds == 0 {
                return Err(ConfigError::InvalidValue {
                    key: key.to_owned(),
                    origin: "config".to_owned(),
                    expected: "a number of seconds greater than 0".to_owned(),
                });
            }
        }
        if self.harmony.heartbeat_interval_ms == 0
            || self.harmony.replica_ttl_ms <= self.harmony.heartbeat_interval_ms
        {
            return Err(ConfigError::InvalidValue {
                key: "harmony.replica_ttl_ms".to_owned(),
                origin: "config".to_owned(),
                expected: "a TTL longer than harmony.heartbeat_interval_ms (> 0)".to_owned(),
            });
        }
        Ok(())
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) => {
            for (name, child) in table {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                // The OIDC providers are a secret whose value is itself a TOML array.
                if path == "auth.oidc.providers" {
                    out.push((path, child.clone()));
                    continue;
                }
                flatten(&path, child, out);
            }
        }
        leaf => out.push((prefix.to_owned(), leaf.clone())),
    }
}

/// Resolve `path` (possibly `<secret>_file`) against the key table.
fn lookup(path: &str) -> Option<(&'static KeySpec, bool)> {
    if let Some(spec) = keys::find(path) {
        return Some((spec, false));
    }
    let base = path.strip_suffix(FILE_SUFFIX)?;
    let spec = keys::find(base)?;
    spec.secret.then_some((spec, true))
}

fn env_value(path: &str, raw: &str, origin: &str) -> Result<toml::Value, ConfigError> {
    let Some((spec, is_file)) = lookup(path) else {
        return Err(ConfigError::UnknownKey {
            key: path.to_owned(),
            origin: format!("environment variable {origin}"),
        });
    };
    let invalid = || ConfigError::InvalidValue {
        key: spec.path.to_owned(),
        origin: format!("environment variable {origin}"),
        expected: spec.kind.describe().to_owned(),
    };
    if is_file || spec.secret {
        return Ok(toml::Value::String(raw.to_owned()));
    }
    match spec.kind {
        ValueKind::String => Ok(toml::Value::String(raw.to_owned())),
        ValueKind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(invalid()),
        },
        ValueKind::Integer => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| invalid()),
        ValueKind::StringList => {
            let parsed: Vec<String> = serde_json::from_str(raw).map_err(|_| invalid())?;
            Ok(toml::Value::Array(
                parsed.into_iter().map(toml::Value::String).collect(),
            ))
        }
    }
}

fn apply_leaf(
    path: &str,
    value: toml::Value,
    origin: &str,
    tree: &mut toml::Table,
    secrets: &mut Secrets,
) -> Result<(), ConfigError> {
    let Some((spec, is_file)) = lookup(path) else {
        return Err(ConfigError::UnknownKey {
            key: path.to_owned(),
            origin: origin.to_owned(),
        });
    };
    let invalid = |expected: &str| ConfigError::InvalidValue {
        key: spec.path.to_owned(),
        origin: origin.to_owned(),
        expected: expected.to_owned(),
    };
    if spec.secret {
        let source = if is_file {
            let toml::Value::String(file) = value else {
                return Err(invalid("a file path"));
            };
            SecretSource::File(PathBuf::from(file))
        } else {
            match value {
                toml::Value::String(text) => SecretSource::Inline(SecretString::new(text)),
                // OIDC providers may be written as a TOML array of tables in the file.
                toml::Value::Array(array) if spec.path == "auth.oidc.providers" => {
                    let mut wrapper = toml::Table::new();
                    wrapper.insert("providers".to_owned(), toml::Value::Array(array));
                    SecretSource::Inline(SecretString::new(wrapper.to_string()))
                }
                _ => return Err(invalid("a string")),
            }
        };
        if let Some(slot) = secrets.slot_mut(spec.path) {
            *slot = Some(source);
        }
        return Ok(());
    }
    let type_matches = match (spec.kind, &value) {
        (ValueKind::String, toml::Value::String(_)) => true,
        (ValueKind::Bool, toml::Value::Boolean(_)) => true,
        (ValueKind::Integer, toml::Value::Integer(number)) => *number >= 0,
        (ValueKind::StringList, toml::Value::Array(items)) => {
            items.iter().all(|item| item.is_str())
        }
        _ => false,
    };
    if !type_matches {
        return Err(invalid(spec.kind.describe()));
    }
    if spec.path.starts_with("server.bind") {
        let toml::Value::String(address) = &value else {
            return Err(invalid("a socket address"));
        };
        if address.parse::<SocketAddr>().is_err() {
            return Err(invalid("a socket address such as 0.0.0.0:9000"));
        }
    }
    insert_path(tree, spec.path, value);
    Ok(())
}

fn insert_path(tree: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return;
    };
    let mut table = tree;
    for part in parts {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        table = next;
    }
    table.insert(last.to_owned(), value);
}

/// Every non-secret leaf path of a serialized [`Config`], for the consistency tests.
pub fn struct_key_paths(config: &Config) -> Vec<String> {
    let mut leaves = Vec::new();
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(config) {
        flatten("", &toml::Value::Table(table), &mut leaves);
    }
    leaves.into_iter().map(|(path, _)| path).collect()
}

/// The directory for the SQLite file of the embedded install.
pub fn sqlite_path(data_dir: &Path) -> PathBuf {
    data_dir.join("adaptive.db")
}

#[cfg(test)]
mod tests;
