//! Secrets: values that must never reach a log, an error message or a `Debug` print.
//!
//! A secret comes from the config file, from `ADAPTIVE_<KEY>`, or from a file named by
//! `<key>_file` / `ADAPTIVE_<KEY>_FILE` (the way Kubernetes mounts secrets). Precedence, highest
//! first: environment file, environment value, config-file file, config-file value. A secret
//! read from a file is re-read every time it is used ([`SecretSource::read`]), so a rotated
//! database password is picked up by the next connection without a restart.

use std::path::PathBuf;

/// A string that prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("[redacted]")
    }
}

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(SecretString),
    /// Read on every use; surrounding whitespace (a trailing newline) is trimmed.
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => formatter.write_str("Inline([redacted])"),
            SecretSource::File(path) => write!(formatter, "File({})", path.display()),
        }
    }
}

/// Reading a secret file failed. Names the key and the file, never the contents.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the secret `{key}` from {path}: {source}")]
pub struct SecretReadError {
    pub key: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl SecretSource {
    pub fn read(&self, key: &'static str) -> Result<SecretString, SecretReadError> {
        match self {
            SecretSource::Inline(value) => Ok(value.clone()),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|contents| SecretString::new(contents.trim()))
                .map_err(|source| SecretReadError {
                    key,
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// Every secret the control plane knows. `Debug` shows which are set, never their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub db_url: Option<SecretSource>,
    pub db_password: Option<SecretSource>,
    pub redis_url: Option<SecretSource>,
    pub oidc_providers: Option<SecretSource>,
    pub internal_api_jwt_private_key: Option<SecretSource>,
    pub bootstrap_api_key: Option<SecretSource>,
    pub cookies_secret: Option<SecretSource>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |source: &Option<SecretSource>| match source {
            Some(SecretSource::Inline(_)) => "set",
            Some(SecretSource::File(_)) => "from file",
            None => "unset",
        };
        formatter
            .debug_struct("Secrets")
            .field("db_url", &set(&self.db_url))
            .field("db_password", &set(&self.db_password))
            .field("redis_url", &set(&self.redis_url))
            .field("oidc_providers", &set(&self.oidc_providers))
            .field(
                "internal_api_jwt_private_key",
                &set(&self.internal_api_jwt_private_key),
            )
            .field("bootstrap_api_key", &set(&self.bootstrap_api_key))
            .field("cookies_secret", &set(&self.cookies_secret))
            .finish()
    }
}

impl Secrets {
    /// The slot for a secret key path of [`super::keys::KEYS`].
    pub(crate) fn slot_mut(&mut self, path: &str) -> Option<&mut Option<SecretSource>> {
        match path {
            "db.url" => Some(&mut self.db_url),
            "db.password" => Some(&mut self.db_password),
            "redis.url" => Some(&mut self.redis_url),
            "auth.oidc.providers" => Some(&mut self.oidc_providers),
            "auth.internal_api_jwt.private_key_v4_base64" => {
                Some(&mut self.internal_api_jwt_private_key)
            }
            "auth.bootstrap_api_key" => Some(&mut self.bootstrap_api_key),
            "app.secret" => Some(&mut self.cookies_secret),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_values() {
        let secrets = Secrets {
            db_password: Some(SecretSource::Inline(SecretString::new("hunter2-password"))),
            cookies_secret: Some(SecretSource::Inline(SecretString::new(
                "cookie-secret-value",
            ))),
            ..Secrets::default()
        };
        let printed = format!("{secrets:?} {:?}", secrets.db_password);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("cookie-secret-value"), "{printed}");
        assert!(printed.contains("db_password: \"set\""), "{printed}");
    }

    #[test]
    fn file_secrets_are_re_read_on_every_use() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("password");
        std::fs::write(&path, "first\n").expect("write");
        let source = SecretSource::File(path.clone());
        assert_eq!(source.read("db.password").expect("reads").expose(), "first");
        std::fs::write(&path, "second\n").expect("write");
        assert_eq!(
            source.read("db.password").expect("reads").expose(),
            "second"
        );
    }
}
