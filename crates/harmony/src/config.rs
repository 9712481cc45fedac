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
//! | `ADAPTIVE_MODEL_REGISTRY` | registry root (`s3://bucket/prefix`, `file:///path` or a path) that `model_registry://<key>` models are fetched from; the chart sets it from the harmony secret's `modelRegistryUrl` | none: such models are refused |
//! | `AWS_*` | S3 credentials, region and `AWS_ENDPOINT_URL_S3` for the registry (as `adaptive_registry::location` reads them; IRSA and Pod Identity work) | AWS defaults, `us-east-1` |
//! | `HARMONY_SETTING_MODEL_CACHE_DIR` | local cache of registry models (the chart's cloud-cache volume) | `<TMPDIR or /tmp>/adaptive-model-cache` |
//! | `HARMONY_SETTING_MODEL_CACHE_BUDGET` | most bytes of model files kept in the cache; least recently used models are evicted beyond it. Bytes, or a number with `K`, `M`, `G`, `T` (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) | `200Gi` |
//! | `HARMONY_MAX_RUNNING_SEQUENCES` | sequences batched together | 64 |
//! | `HARMONY_MAX_BATCHED_TOKENS` | tokens per forward pass | 512 |
//! | `HARMONY_MAX_QUEUED_SEQUENCES` | waiting requests before `overloaded` | 256 |
//! | `HARMONY_DRAIN_GRACE_SECONDS` | time to finish in-flight work on shutdown | 30 |
//! | `HARMONY_DEVICE` | where models run: `cpu`, `cuda` (the first GPU) or `cuda:N`; a CUDA device needs a build with the `cuda` feature | `cuda:0` when `GPU_COUNT` > 0 and the build has CUDA, else `cpu` |
//! | `HARMONY_CPU_MATMUL` | how GGUF weight matrices run on CPU: `auto` (f32 for models up to ~500M parameters, the integer kernel for larger Q4 models), `int8` (Q4_0/Q4_1/Q8_0 matrices in the integer kernel with 8-bit activations, as llama.cpp computes: faster prefill and batched decode, a quarter of the memory), `quantized` (candle's kernels) or `f32` | `auto` |
//! | `CAPACITY_RESERVATION_END` | end of the EC2 Capacity Block the replica runs on (RFC 3339; the chart sets it for pools with `capacityReservation.endTime`): reported at registration (`capacity_ends_at`), shown in `/health` and `/metrics`, and the replica drains ahead of it | none |
//! | `HARMONY_SETTING_DRAIN_BEFORE_RESERVATION_END_SECS` | how long before `CAPACITY_RESERVATION_END` the replica drains (no new requests, in-flight ones finish within the drain grace, then it deregisters and stays up, unready, until stopped) | `2700` (45 min: EC2 starts terminating a block's instances 30 min before its end, Karpenter drains the nodes from 40 min) |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use adaptive_api_types::harmony::SpawnModel;
use adaptive_engine_models::{DeviceChoice, QuantizedMatmul};
use adaptive_registry::StoreEnv;

pub const DEFAULT_PORT: u16 = 50053;
/// `HARMONY_SETTING_MODEL_CACHE_BUDGET` when unset: 200 GiB.
pub const DEFAULT_MODEL_CACHE_BUDGET_BYTES: u64 = 200 << 30;

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

/// Where `model_registry://<key>` models come from, and where this replica caches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRegistrySettings {
    /// The registry root (`ADAPTIVE_MODEL_REGISTRY`).
    pub url: String,
    /// The `AWS_*` variables the S3 client is built from; `Debug` prints their names only.
    pub store_env: StoreEnv,
    pub cache_dir: PathBuf,
    pub cache_budget_bytes: u64,
}

/// The EC2 Capacity Block this replica runs on (`CAPACITY_RESERVATION_END`): it ends at a known
/// time, and the replica drains `drain_lead` before that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityReservation {
    /// The end as the chart gave it (RFC 3339), reported to the control plane unchanged.
    pub end_rfc3339: String,
    pub end: SystemTime,
    pub drain_lead: Duration,
}

impl CapacityReservation {
    /// `HARMONY_SETTING_DRAIN_BEFORE_RESERVATION_END_SECS` when unset.
    pub const DEFAULT_DRAIN_LEAD: Duration = Duration::from_secs(45 * 60);

    pub fn parse(end_rfc3339: &str, drain_lead: Duration) -> Result<Self, ConfigError> {
        let end =
            chrono::DateTime::parse_from_rfc3339(end_rfc3339).map_err(|error| ConfigError {
                variable: "CAPACITY_RESERVATION_END",
                reason: format!("'{end_rfc3339}' is not an RFC 3339 time ({error})"),
            })?;
        Ok(Self {
            end_rfc3339: end_rfc3339.to_owned(),
            end: SystemTime::from(end),
            drain_lead,
        })
    }

    pub fn drain_starts_at(&self) -> SystemTime {
        self.end
            .checked_sub(self.drain_lead)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// How long after `now` the drain starts; zero once that time has come.
    pub fn time_until_drain(&self, now: SystemTime) -> Duration {
        self.drain_starts_at()
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarmonyConfig {
    pub bind_addr: SocketAddr,
    pub identity: ReplicaIdentity,
    /// Registration and heartbeats are off when None.
    pub control_plane_url: Option<String>,
    pub redis_url: Option<Secret>,
    pub preload_models: Vec<SpawnModel>,
    /// `model_registry://` models are refused when None.
    pub model_registry: Option<ModelRegistrySettings>,
    pub engine: EngineSettings,
    pub drain_grace: Duration,
    /// Drain ahead of the end of the capacity this replica runs on, when it has one.
    pub capacity_reservation: Option<CapacityReservation>,
    /// Between registration attempts until the control plane answers with its interval.
    pub registration_retry: Duration,
    /// Where models run (`HARMONY_DEVICE`).
    pub device: DeviceChoice,
    /// How GGUF matrices run on CPU (`HARMONY_CPU_MATMUL`).
    pub cpu_matmul: QuantizedMatmul,
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
            model_registry: None,
            engine: EngineSettings::default(),
            drain_grace: Duration::from_secs(5),
            capacity_reservation: None,
            registration_retry: Duration::from_millis(200),
            device: DeviceChoice::Cpu,
            cpu_matmul: QuantizedMatmul::Auto,
        }
    }

    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| non_empty(env, name);
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
        // Read before `identity` moves into the config below.
        let default_device = DeviceChoice::default_for(identity.gpu_count as usize);
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
            model_registry: model_registry_settings(env)?,
            engine,
            drain_grace: Duration::from_secs(drain_grace_seconds),
            capacity_reservation: capacity_reservation(env)?,
            registration_retry: Duration::from_secs(2),
            device: match get("HARMONY_DEVICE") {
                Some(value) => parse_device(value)?,
                None => default_device,
            },
            cpu_matmul: match get("HARMONY_CPU_MATMUL") {
                Some(value) => value.parse().map_err(|reason| ConfigError {
                    variable: "HARMONY_CPU_MATMUL",
                    reason,
                })?,
                None => QuantizedMatmul::Auto,
            },
        })
    }
}

fn capacity_reservation(
    env: &HashMap<String, String>,
) -> Result<Option<CapacityReservation>, ConfigError> {
    let Some(end) = non_empty(env, "CAPACITY_RESERVATION_END") else {
        return Ok(None);
    };
    let lead_seconds = parse_number(
        non_empty(env, "HARMONY_SETTING_DRAIN_BEFORE_RESERVATION_END_SECS"),
        "HARMONY_SETTING_DRAIN_BEFORE_RESERVATION_END_SECS",
        CapacityReservation::DEFAULT_DRAIN_LEAD.as_secs(),
    )?;
    CapacityReservation::parse(end, Duration::from_secs(lead_seconds)).map(Some)
}

/// The trimmed value of `name`; None when unset or blank.
fn non_empty<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

fn model_registry_settings(
    env: &HashMap<String, String>,
) -> Result<Option<ModelRegistrySettings>, ConfigError> {
    let get = |name: &str| non_empty(env, name);
    let Some(url) = get("ADAPTIVE_MODEL_REGISTRY") else {
        return Ok(None);
    };
    let cache_dir = match get("HARMONY_SETTING_MODEL_CACHE_DIR") {
        Some(directory) => PathBuf::from(directory),
        None => PathBuf::from(get("TMPDIR").unwrap_or("/tmp")).join("adaptive-model-cache"),
    };
    let cache_budget_bytes = match get("HARMONY_SETTING_MODEL_CACHE_BUDGET") {
        Some(value) => parse_byte_size(value).ok_or_else(|| ConfigError {
            variable: "HARMONY_SETTING_MODEL_CACHE_BUDGET",
            reason: format!(
                "'{value}' is not a size (bytes, or a number with K, M, G, T, Ki, Mi, Gi or Ti)"
            ),
        })?,
        None => DEFAULT_MODEL_CACHE_BUDGET_BYTES,
    };
    let store_env = StoreEnv::from_pairs(
        env.iter()
            .filter(|(name, _)| name.starts_with("AWS_"))
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    Ok(Some(ModelRegistrySettings {
        url: url.to_owned(),
        store_env,
        cache_dir,
        cache_budget_bytes,
    }))
}

/// `1073741824`, `500G`, `200Gi`, `1.5Ti`: bytes, decimal or binary suffixes (as Kubernetes
/// quantities are written). Zero is refused: a cache that holds nothing cannot load a model.
pub fn parse_byte_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|character: char| character.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let multiplier: f64 = match suffix.trim() {
        "" => 1.0,
        "K" | "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let number: f64 = number.trim().parse().ok()?;
    let bytes = number * multiplier;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
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

/// `HARMONY_DEVICE`, refused at startup (not at the first model load) when it names a CUDA
/// device this build cannot drive.
fn parse_device(value: &str) -> Result<DeviceChoice, ConfigError> {
    let error = |reason: String| ConfigError {
        variable: "HARMONY_DEVICE",
        reason,
    };
    let device: DeviceChoice = value.parse().map_err(error)?;
    if matches!(device, DeviceChoice::Cuda(_)) && !DeviceChoice::CUDA_BUILT {
        return Err(error(format!(
            "'{device}' needs a build with the `cuda` feature; this one runs models on the CPU only"
        )));
    }
    Ok(device)
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
    fn device_is_parsed_checked_and_follows_the_gpu_count() {
        let parse = |pairs: &[(&str, &str)]| HarmonyConfig::from_env(&env(pairs));
        assert_eq!(parse(&[]).expect("defaults").device, DeviceChoice::Cpu);
        for (value, want) in [
            ("CUDA:1", DeviceChoice::Cuda(1)),
            ("cuda", DeviceChoice::Cuda(0)),
        ] {
            let parsed = parse(&[("HARMONY_DEVICE", value), ("GPU_COUNT", "0")]);
            if DeviceChoice::CUDA_BUILT {
                assert_eq!(parsed.expect(value).device, want);
            } else {
                // Refused at startup rather than at the first model load.
                let error = parsed.expect_err(value);
                assert_eq!(error.variable, "HARMONY_DEVICE");
                assert!(error.reason.contains("`cuda` feature"), "{}", error.reason);
            }
        }
        assert_eq!(
            parse(&[("HARMONY_DEVICE", "cpu"), ("GPU_COUNT", "8")])
                .expect("cpu")
                .device,
            DeviceChoice::Cpu
        );
        // A GPU pool uses its first GPU, when this build can.
        let on_a_gpu_pool = parse(&[("GPU_COUNT", "1")]).expect("gpu pool").device;
        if DeviceChoice::CUDA_BUILT {
            assert_eq!(on_a_gpu_pool, DeviceChoice::Cuda(0));
        } else {
            assert_eq!(on_a_gpu_pool, DeviceChoice::Cpu);
        }
        for bad in ["gpu", "cuda:x", "cuda:-1"] {
            let error = parse(&[("HARMONY_DEVICE", bad)]).expect_err("invalid");
            assert_eq!(error.variable, "HARMONY_DEVICE", "{bad}");
        }
    }

    #[test]
    fn cpu_matmul_is_parsed_and_checked() {
        let parse = |value: &str| HarmonyConfig::from_env(&env(&[("HARMONY_CPU_MATMUL", value)]));
        assert_eq!(
            HarmonyConfig::from_env(&env(&[]))
                .expect("default")
                .cpu_matmul,
            QuantizedMatmul::Auto
        );
        assert_eq!(
            parse("int8").expect("int8").cpu_matmul,
            QuantizedMatmul::Int8
        );
        assert_eq!(
            parse(" F32 ").expect("f32").cpu_matmul,
            QuantizedMatmul::DequantizeF32
        );
        assert_eq!(
            parse("quantized").expect("q").cpu_matmul,
            QuantizedMatmul::Keep
        );
        let error = parse("int4").expect_err("unknown value");
        assert_eq!(error.variable, "HARMONY_CPU_MATMUL");
        assert!(error.reason.contains("int4"), "{}", error.reason);
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
    fn model_registry_comes_from_the_chart_variables() {
        let config = HarmonyConfig::from_env(&env(&[
            ("ADAPTIVE_MODEL_REGISTRY", "s3://models/model_registry"),
            (
                "HARMONY_SETTING_MODEL_CACHE_DIR",
                "/opt/adaptive/cloud_cache",
            ),
            ("HARMONY_SETTING_MODEL_CACHE_BUDGET", "500Gi"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("AWS_ENDPOINT_URL_S3", "http://seaweedfs:8333"),
        ]))
        .expect("valid");
        let registry = config.model_registry.as_ref().expect("registry configured");
        assert_eq!(registry.url, "s3://models/model_registry");
        assert_eq!(
            registry.cache_dir,
            std::path::Path::new("/opt/adaptive/cloud_cache")
        );
        assert_eq!(registry.cache_budget_bytes, 500 << 30);
        assert_eq!(
            registry.store_env.get("AWS_ENDPOINT_URL_S3"),
            Some("http://seaweedfs:8333")
        );
        assert!(!format!("{config:?}").contains("hunter2"));

        let defaults =
            HarmonyConfig::from_env(&env(&[("ADAPTIVE_MODEL_REGISTRY", "/data/registry")]))
                .expect("valid");
        let registry = defaults.model_registry.expect("registry configured");
        assert_eq!(
            registry.cache_dir,
            std::path::Path::new("/tmp/adaptive-model-cache")
        );
        assert_eq!(
            registry.cache_budget_bytes,
            DEFAULT_MODEL_CACHE_BUDGET_BYTES
        );
        assert!(HarmonyConfig::from_env(&env(&[]))
            .expect("valid")
            .model_registry
            .is_none());
    }

    #[test]
    fn byte_sizes_take_decimal_and_binary_suffixes() {
        assert_eq!(parse_byte_size("1048576"), Some(1 << 20));
        assert_eq!(parse_byte_size("500G"), Some(500_000_000_000));
        assert_eq!(parse_byte_size("200Gi"), Some(200 << 30));
        assert_eq!(parse_byte_size("1.5Ti"), Some(3 << 39));
        assert_eq!(parse_byte_size("64 Mi"), Some(64 << 20));
        for invalid in ["", "0", "-1G", "10GB", "lots", "1Xi"] {
            assert_eq!(parse_byte_size(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn capacity_reservation_end_sets_when_draining_starts() {
        let config = HarmonyConfig::from_env(&env(&[
            ("CAPACITY_RESERVATION_END", "2026-12-01T12:00:00Z"),
            ("HARMONY_SETTING_DRAIN_BEFORE_RESERVATION_END_SECS", "600"),
        ]))
        .expect("valid");
        let reservation = config.capacity_reservation.expect("reservation set");
        assert_eq!(reservation.end_rfc3339, "2026-12-01T12:00:00Z");
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_126_400);
        assert_eq!(reservation.end, end);
        assert_eq!(
            reservation.drain_starts_at(),
            end - Duration::from_secs(600)
        );
        let an_hour_before_end = end - Duration::from_secs(3600);
        assert_eq!(
            reservation.time_until_drain(an_hour_before_end),
            Duration::from_secs(3000)
        );
        assert_eq!(
            reservation.time_until_drain(end - Duration::from_secs(60)),
            Duration::ZERO,
            "past the drain point: drain at once"
        );

        let offset = HarmonyConfig::from_env(&env(&[(
            "CAPACITY_RESERVATION_END",
            "2026-12-01T14:00:00+02:00",
        )]))
        .expect("valid")
        .capacity_reservation
        .expect("reservation set");
        assert_eq!(offset.end, end, "offsets are honoured");
        assert_eq!(offset.drain_lead, CapacityReservation::DEFAULT_DRAIN_LEAD);
        assert!(HarmonyConfig::from_env(&env(&[]))
            .expect("valid")
            .capacity_reservation
            .is_none());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = HarmonyConfig::from_env(&env(&[("ORDINAL", "x")])).expect_err("invalid");
        assert_eq!(error.variable, "ORDINAL");
        let error = HarmonyConfig::from_env(&env(&[("HARMONY_PRELOAD_MODELS", "nokey")]))
            .expect_err("invalid");
        assert_eq!(error.variable, "HARMONY_PRELOAD_MODELS");
        let error = HarmonyConfig::from_env(&env(&[
            ("ADAPTIVE_MODEL_REGISTRY", "s3://models"),
            ("HARMONY_SETTING_MODEL_CACHE_BUDGET", "a lot"),
        ]))
        .expect_err("invalid");
        assert_eq!(error.variable, "HARMONY_SETTING_MODEL_CACHE_BUDGET");
        let error = HarmonyConfig::from_env(&env(&[("CAPACITY_RESERVATION_END", "next tuesday")]))
            .expect_err("invalid");
        assert_eq!(error.variable, "CAPACITY_RESERVATION_END");
    }
}
