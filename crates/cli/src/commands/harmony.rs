//! `adaptive harmony`: one harmony worker (inference engine, port 50053), configured from the
//! environment the Helm chart sets (see `adaptive_harmony::config`), registering with the
//! control plane when `CONTROL_PLANE_URL` is set. SIGTERM or Ctrl-C drains: no new work,
//! in-flight requests finish within `HARMONY_DRAIN_GRACE_SECONDS`, then it deregisters.

use std::collections::HashMap;
use std::net::SocketAddr;

use adaptive_harmony::config::parse_model_list;
use adaptive_harmony::{Harmony, HarmonyConfig};

use super::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen address; overrides HARMONY_BIND_ADDR (default 0.0.0.0:50053).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// A model to load at start, as key=path (a .gguf file, an HF directory or fake://name);
    /// repeatable, added to HARMONY_PRELOAD_MODELS.
    #[arg(long = "model", value_name = "KEY=PATH")]
    pub models: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing();
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut config =
        HarmonyConfig::from_env(&env).map_err(|error| UsageError(error.to_string()))?;
    if let Some(bind) = args.bind {
        config.bind_addr = bind;
    }
    for spec in &args.models {
        let models =
            parse_model_list(spec).map_err(|error| UsageError(format!("--model: {error}")))?;
        config.preload_models.extend(models);
    }
    let harmony = Harmony::bind(config).await?;
    harmony.run_until(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
