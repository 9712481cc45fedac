//! The manifest: `<registry>/<key>/manifest.json`, the one object that makes a model exist.
//!
//! Files live under `<registry>/<key>/files/<relative path>`. The importer writes the manifest
//! last, so a key without a manifest is an unfinished import: invisible to listings and
//! unresolvable by the cache. Readers trust nothing but the manifest: sizes and sha256 are what
//! the cache verifies every downloaded byte against.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::key::ModelKey;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FILES_DIR: &str = "files";
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFormat {
    /// One `.gguf` file.
    Gguf,
    /// An HF-layout directory: `config.json`, `*.safetensors`, tokenizer files.
    HfSafetensors,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Slash-separated path relative to the model root (and to `files/` in the registry).
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub manifest_version: u32,
    pub key: ModelKey,
    /// Display name (defaults to the key).
    pub name: String,
    pub format: ModelFormat,
    pub architecture: Option<String>,
    pub parameters: Option<u64>,
    pub context_length: Option<u64>,
    pub quantization: Option<String>,
    pub files: Vec<ManifestFile>,
    pub created_at: DateTime<Utc>,
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }

    /// Object path of the manifest relative to the registry root.
    pub fn manifest_object(key: &ModelKey) -> String {
        format!("{key}/{MANIFEST_FILE}")
    }

    /// Object path of one model file relative to the registry root.
    pub fn file_object(key: &ModelKey, relative_path: &str) -> String {
        format!("{key}/{FILES_DIR}/{relative_path}")
    }

    /// Parses and checks a manifest read for `key`: the key must match and every file path
    /// must stay inside the model directory (a cache writes files at these paths).
    pub fn from_json(key: &ModelKey, bytes: &[u8]) -> Result<Self> {
        let invalid = |reason: String| RegistryError::InvalidManifest {
            key: key.to_string(),
            reason,
        };
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|error| invalid(error.to_string()))?;
        if manifest.manifest_version != MANIFEST_VERSION {
            return Err(invalid(format!(
                "unsupported manifest_version {}",
                manifest.manifest_version
            )));
        }
        if &manifest.key != key {
            return Err(invalid(format!("manifest is for key '{}'", manifest.key)));
        }
        for file in &manifest.files {
            if !is_safe_relative_path(&file.path) {
                return Err(invalid(format!("unsafe file path '{}'", file.path)));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!("bad sha256 for '{}'", file.path)));
            }
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and options always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Relative, slash-separated, no `.`/`..`/empty segments, no backslashes.
pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with_path(path: &str) -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            key: ModelKey::parse("m").expect("key"),
            name: "m".into(),
            format: ModelFormat::Gguf,
            architecture: None,
            parameters: None,
            context_length: None,
            quantization: None,
            files: vec![ManifestFile {
                path: path.into(),
                size: 1,
                sha256: "0".repeat(64),
            }],
            created_at: DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn manifests_round_trip_and_refuse_escaping_paths() {
        let key = ModelKey::parse("m").expect("key");
        let good = manifest_with_path("sub/model.gguf");
        assert_eq!(
            Manifest::from_json(&key, &good.to_json()).expect("parses"),
            good
        );
        for bad in ["../etc/passwd", "/abs", "a//b", "a/./b", "a\\b"] {
            let json = manifest_with_path(bad).to_json();
            assert!(Manifest::from_json(&key, &json).is_err(), "{bad} accepted");
        }
        let other_key = ModelKey::parse("other").expect("key");
        assert!(Manifest::from_json(&other_key, &good.to_json()).is_err());
    }
}
