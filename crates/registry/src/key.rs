//! Model keys: the name a model has in the registry, and the `model_registry://<key>` paths the
//! control plane stores for it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};

/// The scheme of registry paths stored by the control plane and handed to harmony.
pub const MODEL_REGISTRY_SCHEME: &str = "model_registry://";

const MAX_KEY_LEN: usize = 128;

/// A validated model key: 1 to 128 characters of `[A-Za-z0-9._-]`, not starting with `.` or
/// `-`. Keys are single path segments, so a key can never reach outside its own directory in
/// the registry or in a cache.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelKey(String);

impl ModelKey {
    pub fn parse(key: &str) -> Result<Self> {
        let invalid = |reason: &str| RegistryError::InvalidKey {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(invalid("must be 1 to 128 characters"));
        }
        if key.starts_with('.') || key.starts_with('-') {
            return Err(invalid("must not start with '.' or '-'"));
        }
        let allowed = |character: char| {
            character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-')
        };
        if !key.chars().all(allowed) {
            return Err(invalid(
                "only letters, digits, '.', '_' and '-' are allowed",
            ));
        }
        Ok(Self(key.to_owned()))
    }

    /// Accepts `model_registry://<key>` or a bare key.
    pub fn from_registry_path(path: &str) -> Result<Self> {
        Self::parse(path.strip_prefix(MODEL_REGISTRY_SCHEME).unwrap_or(path))
    }

    /// Derives a key from a file or directory name: lowercased, other characters become `-`.
    pub fn derive_from_name(name: &str) -> Result<Self> {
        let mapped: String = name
            .chars()
            .map(|character| match character {
                'A'..='Z' => character.to_ascii_lowercase(),
                'a'..='z' | '0'..='9' | '.' | '_' | '-' => character,
                _ => '-',
            })
            .collect();
        Self::parse(mapped.trim_start_matches(['.', '-']))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn registry_path(&self) -> String {
        format!("{MODEL_REGISTRY_SCHEME}{}", self.0)
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ModelKey {
    type Error = RegistryError;
    fn try_from(value: String) -> Result<Self> {
        Self::parse(&value)
    }
}

impl From<ModelKey> for String {
    fn from(key: ModelKey) -> Self {
        key.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_their_directory() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "-flag",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(ModelKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["smollm2-135m", "Qwen2.5-0.5B_instruct", "a"] {
            assert_eq!(ModelKey::parse(good).expect(good).as_str(), good);
        }
    }

    #[test]
    fn registry_paths_round_trip() {
        let key = ModelKey::from_registry_path("model_registry://smol").expect("parses");
        assert_eq!(key.registry_path(), "model_registry://smol");
        assert_eq!(ModelKey::from_registry_path("smol").expect("bare"), key);
    }

    #[test]
    fn derived_keys_are_valid() {
        let key = ModelKey::derive_from_name("SmolLM2-135M-Instruct.Q4_1").expect("derives");
        assert_eq!(key.as_str(), "smollm2-135m-instruct.q4_1");
        assert_eq!(
            ModelKey::derive_from_name("My Model").expect("d").as_str(),
            "my-model"
        );
    }
}
