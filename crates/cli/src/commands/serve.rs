//! `adaptive serve`: the whole product in one process on one machine.
//!
//! The control plane (embedded SQLite, in-process replica registry, local model registry) and
//! one harmony replica on the CPU, which registers with the control plane over loopback exactly
//! as a replica in a cluster does. Models given with `--model` (or the SmolLM2 GGUF that
//! `scripts/fetch-model.sh` puts in `models/`) are registered and deployed to the `default`
//! project; harmony loads them because the control plane's registration answer lists them.
//! Harmony fetches `model_registry://` models from the control plane's registry (its
//! `model_registry` setting, by default `<data dir>/model_registry`, where `adaptive models
//! import` writes) into `<data dir>/model_cache`, unless `ADAPTIVE_MODEL_REGISTRY` says otherwise.
//!
//! Boot: tracing → config → control plane (bootstrap admin, default project, models) → harmony →
//! wait for SIGINT/SIGTERM → harmony drains → control plane drains and flushes interactions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use adaptive_control_plane::bootstrap::{self, DEFAULT_PROJECT_KEY};
use adaptive_control_plane::config::{Config, ConfigSources};
use adaptive_control_plane::ControlPlane;
use adaptive_harmony::{Harmony, HarmonyConfig, ModelRegistrySettings};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::UsageError;

/// Where `scripts/fetch-model.sh` puts the default model.
const DEFAULT_MODEL_PATH: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the embedded database, model registry and shared directory live.
    #[arg(long, default_value = ".adaptive")]
    pub data_dir: PathBuf,
    /// A model to register and deploy: a `.gguf` file or an HF-layout directory, optionally
    /// as `KEY=PATH`. Repeatable. Default: the SmolLM2 GGUF in models/ when present.
    #[arg(long = "model", value_name = "[KEY=]PATH")]
    pub models: Vec<String>,
    /// The public API address (OpenAI-compatible API, GraphQL, health).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub bind: SocketAddr,
    /// The internal address (metrics, harmony registration).
    #[arg(long, default_value = "127.0.0.1:9009")]
    pub bind_internal: SocketAddr,
    /// The in-process harmony replica's address.
    #[arg(long, default_value = "127.0.0.1:50053")]
    pub harmony_bind: SocketAddr,
    /// A TOML configuration file; `ADAPTIVE_*` environment variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing();
    let models = models_to_deploy(&args.models)?;
    let mut loaded = Config::load(&ConfigSources::from_process(args.config.clone()))
        .map_err(|error| UsageError(error.to_string()))?;
    apply_serve_arguments(&mut loaded.config, &args);
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;

    if loaded.secrets.cookies_secret.is_none() {
        loaded.secrets.cookies_secret = Some(
            bootstrap::ensure_cookies_secret_file(&args.data_dir)
                .context("cannot create the cookies secret in the data directory")?,
        );
    }
    let model_registry_location = loaded.config.model_registry_location();
    let control_plane = ControlPlane::build(loaded.config, loaded.secrets).await?;
    let admin = control_plane.bootstrap_admin().await?;
    bootstrap::ensure_default_project(
        control_plane.store(),
        &control_plane.config().auth.default_team,
    )
    .await?;
    for (key, path) in &models {
        bootstrap::register_and_deploy_local_model(
            control_plane.store(),
            DEFAULT_PROJECT_KEY,
            key,
            path,
        )
        .await
        .with_context(|| format!("cannot deploy model '{key}' from {path}"))?;
    }
    let running = control_plane.start().await?;

    let harmony_config = harmony_config(&args, running.internal_addr, model_registry_location)?;
    let harmony = Harmony::bind(harmony_config)
        .await
        .context("cannot start the harmony replica")?;
    let harmony_shutdown = CancellationToken::new();
    let harmony_task = tokio::spawn(harmony.run_until(harmony_shutdown.clone().cancelled_owned()));

    print_welcome(
        running.public_addr,
        admin
            .as_ref()
            .filter(|admin| !admin.key_from_configuration)
            .map(|admin| admin.api_key.expose()),
        &models,
    );
    super::wait_for_shutdown_signal().await;
    tracing::info!("shutting down: draining harmony, then the control plane");
    harmony_shutdown.cancel();
    match harmony_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "harmony stopped with an error"),
        Err(error) => tracing::warn!(%error, "harmony task failed"),
    }
    running.shutdown().await;
    Ok(())
}

/// Command-line addresses and data directory win over the file and the environment.
fn apply_serve_arguments(config: &mut Config, args: &Args) {
    config.app.data_dir = args.data_dir.clone();
    config.server.bind = args.bind;
    config.server.bind_internal = args.bind_internal;
}

fn harmony_config(
    args: &Args,
    control_plane_internal: SocketAddr,
    model_registry_location: String,
) -> anyhow::Result<HarmonyConfig> {
    let environment: HashMap<String, String> = std::env::vars().collect();
    let mut config =
        HarmonyConfig::from_env(&environment).map_err(|error| UsageError(error.to_string()))?;
    if config.model_registry.is_none() {
        config.model_registry = Some(ModelRegistrySettings {
            url: model_registry_location,
            store_env: adaptive_registry::StoreEnv::from_pairs(
                environment
                    .into_iter()
                    .filter(|(name, _)| name.starts_with("AWS_")),
            ),
            cache_dir: args.data_dir.join("model_cache"),
            cache_budget_bytes: adaptive_harmony::config::DEFAULT_MODEL_CACHE_BUDGET_BYTES,
        });
    }
    config.bind_addr = args.harmony_bind;
    config.control_plane_url = Some(format!("http://{control_plane_internal}"));
    config.identity.group = "local".to_owned();
    config.identity.partition_key = "local".to_owned();
    config.identity.ordinal = 0;
    config.identity.advertised_url = format!("http://{}", args.harmony_bind);
    Ok(config)
}

/// `[KEY=]PATH` arguments, or the default model when none is given and it is present.
fn models_to_deploy(arguments: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    if arguments.is_empty() {
        if Path::new(DEFAULT_MODEL_PATH).is_file() {
            let absolute = std::fs::canonicalize(DEFAULT_MODEL_PATH)?;
            return Ok(vec![("smollm2".to_owned(), absolute.display().to_string())]);
        }
        return Ok(Vec::new());
    }
    arguments
        .iter()
        .map(|argument| {
            let (key, path) = match argument.split_once('=') {
                Some((key, path)) if !key.is_empty() && !key.contains('/') => {
                    (key.to_owned(), path.to_owned())
                }
                _ => (model_key_from_path(argument), argument.clone()),
            };
            let absolute = std::fs::canonicalize(&path).map_err(|error| {
                UsageError(format!("--model {argument}: cannot read {path}: {error}"))
            })?;
            Ok((key, absolute.display().to_string()))
        })
        .collect()
}

/// `models/SmolLM2-135M-Instruct.Q4_1.gguf` → `smollm2-135m-instruct-q4-1`.
fn model_key_from_path(path: &str) -> String {
    let file_name = Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_owned());
    let stem = file_name.strip_suffix(".gguf").unwrap_or(&file_name);
    let key: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    key.trim_matches('-').to_owned()
}

fn print_welcome(public_addr: SocketAddr, api_key: Option<&str>, models: &[(String, String)]) {
    let base = format!("http://{public_addr}");
    println!();
    println!("adaptive is serving at {base}");
    match api_key {
        Some(key) => {
            println!("admin API key (shown once, store it now): {key}");
            println!("  export ADAPTIVE_API_KEY={key}");
        }
        None => println!(
            "using the API key printed at first start or set in auth.bootstrap_api_key (ADAPTIVE_API_KEY)"
        ),
    }
    if models.is_empty() {
        println!("no model deployed: run scripts/fetch-model.sh, or pass --model PATH (a .gguf file or an HF directory)");
    } else {
        for (key, path) in models {
            println!("model {DEFAULT_PROJECT_KEY}/{key} <- {path} (loading in harmony)");
        }
        println!();
        println!("  curl {base}/api/v1/chat/completions -H \"Authorization: Bearer $ADAPTIVE_API_KEY\" \\");
        println!("    -H 'content-type: application/json' \\");
        println!("    -d '{{\"model\": \"{DEFAULT_PROJECT_KEY}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'");
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_keys_are_derived_from_file_names() {
        assert_eq!(
            model_key_from_path("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "smollm2-135m-instruct-q4-1"
        );
        assert_eq!(model_key_from_path("/data/Qwen2.5-0.5B/"), "qwen2-5-0-5b");
    }

    #[test]
    fn an_unreadable_model_path_is_a_usage_error() {
        let error = models_to_deploy(&["x=/definitely/not/here.gguf".to_owned()])
            .expect_err("missing file");
        assert!(error.downcast_ref::<UsageError>().is_some());
    }
}
