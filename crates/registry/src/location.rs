//! Where a registry (or the shared directory) lives: a URL turned into an object store and a
//! prefix inside it.
//!
//! Accepted forms:
//! - `s3://bucket/prefix` — Amazon S3 or any S3-compatible server. Settings come from the
//!   `AWS_*` variables of a [`StoreEnv`], exactly as `AmazonS3Builder::from_env` reads them
//!   (static keys, session token, region, `AWS_CONTAINER_CREDENTIALS_*` for ECS and EKS Pod
//!   Identity). `AWS_ENDPOINT_URL_S3` (preferred) or `AWS_ENDPOINT_URL` point at an
//!   S3-compatible server; with an endpoint we switch to path-style addressing, and an
//!   `http://` endpoint is allowed. Without a region we default to `us-east-1`.
//! - `file:///abs/path` or a plain path — a local directory (created if missing).
//!
//! The environment is an explicit map so tests never touch the process environment
//! ([`StoreEnv::from_process`] snapshots it once at startup). One exception lives inside
//! object_store: web identity (IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`) is read
//! from the process environment at build time. In a pod that is the same environment, so IRSA
//! works; tests simply do not exercise it.
//!
//! Secrets never reach logs: [`StoreEnv`]'s `Debug` prints variable names only, and
//! [`RegistryStore`]'s prints the URL, not the store (object_store's own `Debug` would include
//! the static credentials).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::error::{RegistryError, Result};

/// The environment variables the store is built from. Values may be secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreEnv {
    variables: BTreeMap<String, String>,
}

impl StoreEnv {
    /// A snapshot of the process environment (for binaries, once at startup).
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let variables = pairs
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
        Self { variables }
    }

    /// This environment with `key` set to `value` (a location's own endpoint, say).
    pub fn with(&self, key: &str, value: &str) -> Self {
        let mut variables = self.variables.clone();
        variables.insert(key.to_owned(), value.to_owned());
        Self { variables }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.variables
            .get(key)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }
}

impl fmt::Debug for StoreEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreEnv")
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An object store plus the prefix under which the registry (or shared directory) lives.
#[derive(Clone)]
pub struct RegistryStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
}

impl fmt::Debug for RegistryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RegistryStore {
    /// Parses `s3://bucket/prefix`, `file:///path` or a plain local path.
    pub fn from_url(url: &str, env: &StoreEnv) -> Result<Self> {
        let invalid = |reason: &str| RegistryError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("missing bucket name"));
            }
            let store = build_s3(bucket, env).map_err(|error| invalid(&error.to_string()))?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix.trim_matches('/')),
                url: url.to_owned(),
            });
        }
        let local_path = match url.strip_prefix("file://") {
            Some(path) => path,
            None if url.contains("://") => {
                return Err(invalid("unsupported scheme (use s3://, file:// or a path)"))
            }
            None => url,
        };
        if local_path.is_empty() {
            return Err(invalid("empty path"));
        }
        std::fs::create_dir_all(local_path)
            .map_err(RegistryError::io(format!("create {local_path}")))?;
        let store = LocalFileSystem::new_with_prefix(local_path)
            .map_err(|error| invalid(&error.to_string()))?
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            url: url.to_owned(),
        })
    }

    /// Wraps an existing store (tests, or an in-memory store for `adaptive serve`).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, url: impl Into<String>) -> Self {
        Self {
            store,
            prefix: ObjectPath::from(prefix.trim_matches('/')),
            url: url.into(),
        }
    }

    /// The same location through another store, e.g. a wrapper that counts or injects
    /// failures around this one.
    pub fn with_object_store(&self, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            prefix: self.prefix.clone(),
            url: self.url.clone(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The full object path of `relative` (slash-separated) under the prefix.
    pub fn path(&self, relative: &str) -> ObjectPath {
        let mut parts: Vec<&str> = self.prefix.as_ref().split('/').collect();
        parts.extend(relative.split('/'));
        ObjectPath::from_iter(parts.into_iter().filter(|part| !part.is_empty()))
    }
}

fn build_s3(bucket: &str, env: &StoreEnv) -> object_store::Result<object_store::aws::AmazonS3> {
    let mut builder = AmazonS3Builder::new();
    for (key, value) in &env.variables {
        if !key.starts_with("AWS_") || value.is_empty() {
            continue;
        }
        if let Ok(config_key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(config_key, value);
        }
    }
    let endpoint = env
        .get("AWS_ENDPOINT_URL_S3")
        .or_else(|| env.get("AWS_ENDPOINT_URL"));
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if env.get("AWS_REGION").is_none() && env.get("AWS_DEFAULT_REGION").is_none() {
        builder = builder.with_region("us-east-1");
    }
    builder.with_bucket_name(bucket).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_secret_values() {
        let env = StoreEnv::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9"),
        ]);
        let store = RegistryStore::from_url("s3://bucket/models", &env).expect("builds");
        let printed = format!("{env:?} {store:?}");
        assert!(!printed.contains("very-secret-value"), "{printed}");
        assert!(!printed.contains("AKIDEXAMPLE"), "{printed}");
        assert!(printed.contains("s3://bucket/models"));
    }

    #[test]
    fn rejects_unknown_schemes_and_missing_buckets() {
        let env = StoreEnv::default();
        for url in ["gs://bucket/x", "s3:///prefix", ""] {
            let error = RegistryStore::from_url(url, &env).expect_err(url);
            assert!(
                matches!(error, RegistryError::InvalidUrl { .. }),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn paths_are_joined_under_the_prefix() {
        let env = StoreEnv::from_pairs([("AWS_ENDPOINT_URL", "http://127.0.0.1:9")]);
        let store = RegistryStore::from_url("s3://bucket/a/b/", &env).expect("builds");
        assert_eq!(
            store.path("key/manifest.json").as_ref(),
            "a/b/key/manifest.json"
        );
    }
}
