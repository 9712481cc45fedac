//! The table of every configuration key: its TOML path, its type, whether it is a secret, and
//! its one-line documentation.
//!
//! This table is the single source of truth for three things: which keys a config file or an
//! `ADAPTIVE_*` variable may set (anything else is an error naming the key), how an environment
//! string is turned into a typed value, and the reference in docs/configuration.md (a test
//! checks the document against the table, and another checks the table against the structs).

/// The type a key's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    String,
    Bool,
    Integer,
    /// A list of strings; in the environment, a TOML or JSON array (`["a", "b"]`).
    StringList,
}

impl ValueKind {
    pub fn describe(self) -> &'static str {
        match self {
            ValueKind::String => "string",
            ValueKind::Bool => "bool",
            ValueKind::Integer => "integer",
            ValueKind::StringList => "list of strings",
        }
    }
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// Dotted TOML path, e.g. `db.run_migrations`. The environment name is
    /// `ADAPTIVE_` + the path upper-cased with `.` replaced by `__`.
    pub path: &'static str,
    pub kind: ValueKind,
    /// Secrets go to [`crate::config::Secrets`], may also be given as `<key>_file` (a path whose
    /// contents are the value), and are never logged.
    pub secret: bool,
    /// The default, as it is written in the reference (empty when there is none).
    pub default: &'static str,
    pub doc: &'static str,
}

const fn key(
    path: &'static str,
    kind: ValueKind,
    default: &'static str,
    doc: &'static str,
) -> KeySpec {
    KeySpec {
        path,
        kind,
        secret: false,
        default,
        doc,
    }
}

const fn secret(path: &'static str, doc: &'static str) -> KeySpec {
    KeySpec {
        path,
        kind: ValueKind::String,
        secret: true,
        default: "",
        doc,
    }
}

use ValueKind::String as Str;
use ValueKind::{Bool, Integer, StringList};

/// Every key the control plane accepts.
pub const KEYS: &[KeySpec] = &[
    key("server.bind", Str, "0.0.0.0:9000", "public address: API, GraphQL, /health, /ready"),
    key("server.bind_internal", Str, "0.0.0.0:9009", "internal address: harmony registration and /metrics"),
    key("server.root_url", Str, "", "the URL users reach the control plane at (links, OIDC callbacks)"),
    key("server.cluster_root_url", Str, "", "the URL other processes in the cluster reach the control plane at"),
    key("server.timeout_seconds", Integer, "60", "HTTP request timeout"),
    key("server.upload_part_timeout_seconds", Integer, "900", "timeout of one chunked-upload part (`POST /api/v1/upload/part`, up to 128 MiB), instead of server.timeout_seconds"),
    key("server.shutdown_grace_seconds", Integer, "30", "how long in-flight requests may finish after a shutdown signal"),
    secret("db.url", "database URL: `postgres://user@host:5432/db?sslmode=require` or `sqlite:///path/file.db`; when unset and db.host is unset, SQLite in app.data_dir"),
    key("db.username", Str, "", "PostgreSQL user, when db.url is not given"),
    secret("db.password", "PostgreSQL password; overrides a password in db.url; re-read from its file on every new connection (rotation)"),
    key("db.host", Str, "", "PostgreSQL `host` or `host:port`, when db.url is not given"),
    key("db.database", Str, "", "PostgreSQL database name; required with db.host"),
    key("db.run_migrations", Bool, "true", "apply schema migrations at start"),
    key("db.max_connections", Integer, "10", "connection pool size"),
    key("db.acquire_timeout_ms", Integer, "3000", "how long a request waits for a connection before failing with 503"),
    key("db.startup_retry_seconds", Integer, "60", "how long the start keeps retrying an unreachable database (migrations) before giving up"),
    secret("redis.url", "Redis URL (`redis://` or `rediss://`) for the harmony replica registry; when unset, an in-process registry"),
    key("redis.key_prefix", Str, "adaptive", "prefix of every Redis key the control plane writes"),
    key("auth.default_team", Str, "default", "team new users join"),
    key("auth.default_role", Str, "admin", "role new users get in the default team"),
    key("auth.admins", StringList, "[]", "emails that are made admins"),
    key("auth.session.secure", Bool, "true", "mark session cookies Secure"),
    key("auth.session.expiration_seconds", Integer, "518400", "session lifetime"),
    secret("auth.oidc.providers", "OIDC providers, a TOML array of tables (key, name, issuer_url, client_id, client_secret, scopes, pkce, allow_sign_up, allowed_domains, require_email_verified)"),
    secret("auth.internal_api_jwt.private_key_v4_base64", "key that signs internal API tokens"),
    secret("auth.bootstrap_api_key", "API key given to the bootstrap admin on first start instead of a random one"),
    key("app.data_dir", Str, "./.adaptive", "where the embedded install keeps its SQLite file and local directories"),
    secret("app.secret", "cookies secret: at least 64 characters, identical on every replica"),
    key("app.enable_gql_schema_introspection", Bool, "false", "allow GraphQL schema introspection"),
    key("harmony.url", Str, "", "legacy: a single harmony URL"),
    key("harmony.heartbeat_interval_ms", Integer, "5000", "how often replicas are asked to heartbeat"),
    key("harmony.replica_ttl_ms", Integer, "15000", "a replica without a heartbeat for this long is gone"),
    key("harmony.shared_directory.type", Str, "", "`s3` or `local`"),
    key("harmony.shared_directory.url", Str, "", "shared directory URL, e.g. `s3://bucket/shared`; default a directory in app.data_dir"),
    key("harmony.shared_directory.path", Str, "", "shared directory as a local path"),
    key("harmony.shared_directory.endpoint", Str, "", "S3 endpoint for the shared directory"),
    key("harmony.shared_directory.force_path_style", Bool, "false", "path-style S3 addressing"),
    key("datasets.claim_ttl_seconds", Integer, "60", "lease of a replica's claim on a dataset it processes (renewed every quarter of it); a replica that dies leaves the dataset to another after this long"),
    key("datasets.sweep_interval_seconds", Integer, "30", "how often every replica takes over the datasets nobody processes"),
    key("datasets.max_expired_claims", Integer, "5", "how many times a dataset's processing may die with its replica before the dataset is failed"),
    key("model_registry", Str, "", "model registry URL (`s3://bucket/model_registry`) or path; default a directory in app.data_dir"),
];

/// The suffix that turns a secret key into "read the value from this file".
pub const FILE_SUFFIX: &str = "_file";

pub fn find(path: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| spec.path == path)
}

/// The environment variable for a key path: `db.run_migrations` -> `ADAPTIVE_DB__RUN_MIGRATIONS`.
pub fn env_name(path: &str) -> String {
    format!("ADAPTIVE_{}", path.replace('.', "__").to_uppercase())
}

/// The key path for an environment variable, if it is in the configuration namespace:
/// `ADAPTIVE_` followed by a name with `__` (or the top-level `ADAPTIVE_MODEL_REGISTRY`).
/// Other `ADAPTIVE_*` variables (`ADAPTIVE_API_KEY`, `ADAPTIVE_CONFIG_FILE`, ...) are not
/// configuration keys and are ignored.
pub fn path_of_env(name: &str) -> Option<String> {
    let rest = name.strip_prefix("ADAPTIVE_")?;
    if rest == "MODEL_REGISTRY" || rest == "MODEL_REGISTRY_FILE" {
        return Some(rest.to_lowercase());
    }
    if !rest.contains("__") {
        return None;
    }
    Some(rest.to_lowercase().replace("__", "."))
}
