//! Harmony's configuration, parsed once from an environment *map* (the variables the Helm chart
//! sets), so tests never touch the process environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HARMONY_BIND_ADDR` | listen address | `0.0.0.0:50053` |
//! | `GROUP`, `GROUP_CAPABILITIES` | compute pool name, capabilities (comma-separated) | `default`, `INFERENCE` |
//! | `PARTITION_KEY`, `ORDINAL` | pool slug, pod index | `default-partition`, `0` |
//! | `GPU_COUNT` | GPUs of this replica | `0` |
//! | `POD_IP`, `ADVERTISED_URL` | where the control plane reaches us | `http://<POD_IP or 127.0.0.1>:<port>` |
//! | `CONTROL_PLANE_URL` | internal control-plane URL; registration is off without it | none |
//! | `REDIS_URL` (or `ADAPTIVE_REDIS__URL`) | kept as a secret, never logged | none |
//! | `HARMONY_PRELOAD_MODELS` | `key=path[,key=path...]` loaded at start | none |
//! | `HARMONY_SETTING_MODEL_REGISTRY_ROOT` | where `model_registry://<key>` resolves | none |
//! | `HARMONY_MAX_RUNNING_SEQUENCES` | sequences batched together | 64 |
//! | `HARMONY_MAX_BATCHED_TOKENS` | tokens per forward pass | 512 |
//! | `HARMONY_MAX_QUEUED_SEQUENCES` | waiting requests before `overloaded` | 256 |
//! | `HARMONY_DRAIN_GRACE_SECONDS` | time to finish in-flight work on shutdown | 30 |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use adaptive_api_types::harmony::SpawnModel;

pub const DEFAULT_PORT: u16 = 50053;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

/// A value that must never be logged (it may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Limits applied to every model's scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    pub max_running_sequences: usize,
    pub max_batched_tokens: usize,
    pub max_queued_sequences: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_running_sequences: 64,
            max_batched_tokens: 512,
            max_queued_sequences: 256,
        }
    }
}

/// Who this replica is, for registration with the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaIdentity {
    pub group: String,
    pub capabilities: Vec<String>,
    pub partition_key: String,
    pub ordinal: u32,
    pub gpu_count: u32,
    pub advertised_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarmonyConfig {
    pub bind_addr: SocketAddr,
    pub identity: ReplicaIdentity,
    /// Registration and heartbeats are off when None.
    pub control_plane_url: Option<String>,
    pub redis_url: Option<Secret>,
    pub preload_models: Vec<SpawnModel>,
    pub model_registry_root: Option<std::path::PathBuf>,
    pub engine: EngineSettings,
    pub drain_grace: Duration,
    /// Between registration attempts until the control plane answers with its interval.
    pub registration_retry: Duration,
}

impl HarmonyConfig {
    /// Loopback on port 0, no registration, small limits: for tests and in-process use.
    pub fn for_test() -> Self {
        Self {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            identity: ReplicaIdentity {
                group: "test".to_owned(),
                capabilities: vec!["INFERENCE".to_owned()],
                partition_key: "test-partition".to_owned(),
                ordinal: 0,
                gpu_count: 0,
                advertised_url: "http://127.0.0.1:0".to_owned(),
            },
            control_plane_url: None,
            redis_url: None,
            preload_models: Vec::new(),
            model_registry_root: None,
            engine: EngineSettings::default(),
            drain_grace: Duration::from_secs(5),
            registration_retry: Duration::from_millis(200),
        }
    }

    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            env.get(name)
                .map(|value| value.trim())
                .filter(|v| !v.is_empty())
        };
        let bind_addr: SocketAddr = match get("HARMONY_BIND_ADDR") {
            Some(value) => value.parse().map_err(|error| ConfigError {
                variable: "HARMONY_BIND_ADDR",
                reason: format!("'{value}' is not host:port ({error})"),
            })?,
            None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        };
        let advertised_url = match (get("ADVERTISED_URL"), get("POD_IP")) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(pod_ip)) => format!("http://{pod_ip}:{}", bind_addr.port()),
            (None, None) => format!("http://127.0.0.1:{}", bind_addr.port()),
        };
        let identity = ReplicaIdentity {
            group: get("GROUP").unwrap_or("default").to_owned(),
            capabilities: get("GROUP_CAPABILITIES")
                .unwrap_or("INFERENCE")
                .split(',')
                .map(|capability| capability.trim().to_uppercase())
                .filter(|capability| !capability.is_empty())
                .collect(),
            partition_key: get("PARTITION_KEY")
                .unwrap_or("default-partition")
                .to_owned(),
            ordinal: parse_number(get("ORDINAL"), "ORDINAL", 0)?,
            gpu_count: parse_number(get("GPU_COUNT"), "GPU_COUNT", 0)?,
            advertised_url,
        };
        let preload_models = match get("HARMONY_PRELOAD_MODELS") {
            Some(list) => parse_model_list(list)?,
            None => Vec::new(),
        };
        let defaults = EngineSettings::default();
        let engine = EngineSettings {
            max_running_sequences: parse_positive(
                env,
                "HARMONY_MAX_RUNNING_SEQUENCES",
                defaults.max_running_sequences,
            )?,
            max_batched_tokens: parse_positive(
                env,
                "HARMONY_MAX_BATCHED_TOKENS",
                defaults.max_batched_tokens,
            )?,
            max_queued_sequences: parse_positive(
                env,
                "HARMONY_MAX_QUEUED_SEQUENCES",
                defaults.max_queued_sequences,
            )?,
        };
        let drain_grace_seconds: u64 = parse_number(
            get("HARMONY_DRAIN_GRACE_SECONDS"),
            "HARMONY_DRAIN_GRACE_SECONDS",
            30,
        )?;
        Ok(Self {
            bind_addr,
            identity,
            control_plane_url: get("CONTROL_PLANE_URL")
                .map(|url| url.trim_end_matches('/').to_owned()),
            redis_url: get("REDIS_URL")
                .or_else(|| get("ADAPTIVE_REDIS__URL"))
                .map(Secret::new),
            preload_models,
            model_registry_root: get("HARMONY_SETTING_MODEL_REGISTRY_ROOT")
                .map(std::path::PathBuf::from),
            engine,
            drain_grace: Duration::from_secs(drain_grace_seconds),
            registration_retry: Duration::from_secs(2),
        })
    }
}

fn parse_number<T: std::str::FromStr>(
    value: Option<&str>,
    variable: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match value {
        None => Ok(default),
        Some(value) => value.parse().map_err(|error| ConfigError {
            variable,
            reason: format!("'{value}' is not a valid number ({error})"),
        }),
    }
}

fn parse_positive(
    env: &HashMap<String, String>,
    variable: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    let value = parse_number(env.get(variable).map(|v| v.trim()), variable, default)?;
    if value == 0 {
        return Err(ConfigError {
            variable,
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(value)
}

/// Parses `key=path[,key=path...]` (the `HARMONY_PRELOAD_MODELS` format).
pub fn parse_model_list(list: &str) -> Result<Vec<SpawnModel>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((key, path)) if !key.trim().is_empty() && !path.trim().is_empty() => {
                Ok(SpawnModel {
                    key: key.trim().to_owned(),
                    path: path.trim().to_owned(),
                    max_seq_len: None,
                    kv_cache_len: None,
                })
            }
            _ => Err(ConfigError {
                variable: "HARMONY_PRELOAD_MODELS",
                reason: format!("'{entry}' is not key=path"),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn chart_environment_is_parsed() {
        let config = HarmonyConfig::from_env(&env(&[
            ("GROUP", "gpu-pool"),
            ("GROUP_CAPABILITIES", "JOB,INFERENCE"),
            ("PARTITION_KEY", "gpu-pool-slug"),
            ("ORDINAL", "2"),
            ("GPU_COUNT", "8"),
            ("POD_IP", "10.0.0.7"),
            ("CONTROL_PLANE_URL", "http://cp:9009/"),
            ("REDIS_URL", "redis://:hunter2@redis:6379"),
            (
                "HARMONY_PRELOAD_MODELS",
                "small=fake://a, big=/models/x.gguf",
            ),
        ]))
        .expect("valid");
        assert_eq!(config.bind_addr.port(), 50053);
        assert_eq!(config.identity.advertised_url, "http://10.0.0.7:50053");
        assert_eq!(config.identity.ordinal, 2);
        assert_eq!(config.identity.capabilities, vec!["JOB", "INFERENCE"]);
        assert_eq!(config.control_plane_url.as_deref(), Some("http://cp:9009"));
        assert_eq!(config.preload_models.len(), 2);
        assert_eq!(config.preload_models[1].path, "/models/x.gguf");
        assert!(
            !format!("{config:?}").contains("hunter2"),
            "secrets never printed"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = HarmonyConfig::from_env(&env(&[("ORDINAL", "x")])).expect_err("invalid");
        assert_eq!(error.variable, "ORDINAL");
        let error = HarmonyConfig::from_env(&env(&[("HARMONY_PRELOAD_MODELS", "nokey")]))
            .expect_err("invalid");
        assert_eq!(error.variable, "HARMONY_PRELOAD_MODELS");
    }
}
