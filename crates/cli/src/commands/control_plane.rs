//! `adaptive control-plane`: the stateless control plane (API, GraphQL, harmony registration).
//!
//! Boot script: tracing -> config (bad config exits with `EX_USAGE`) -> build (store, registry,
//! API) -> bootstrap (first start: admin API key printed once) -> serve -> wait for SIGINT or
//! SIGTERM -> drain within `server.shutdown_grace_seconds`.

use std::path::PathBuf;

use adaptive_control_plane::config::{Config, ConfigSources};
use adaptive_control_plane::store::StoreError;
use adaptive_control_plane::{BuildError, ControlPlane};

use super::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TOML configuration file (default: $ADAPTIVE_CONFIG_FILE). Every key can be
    /// overridden by ADAPTIVE_<SECTION>__<KEY>; see docs/configuration.md.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing();
    let loaded = Config::load(&ConfigSources::from_process(args.config))
        .map_err(|error| UsageError(error.to_string()))?;
    let control_plane = ControlPlane::build(loaded.config, loaded.secrets)
        .await
        .map_err(into_anyhow)?;
    if let Some(admin) = control_plane.bootstrap_admin().await? {
        println!("bootstrap admin created: {}", admin.email);
        if admin.key_from_configuration {
            println!("its API key is the one set in auth.bootstrap_api_key");
        } else {
            println!(
                "admin API key (shown once, store it now): {}",
                admin.api_key.expose()
            );
        }
    }
    let running = control_plane.start().await.map_err(into_anyhow)?;
    super::wait_for_shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Configuration mistakes found while building (a malformed db.url, an unreadable secret
/// file) are usage errors; an unreachable dependency is not.
fn into_anyhow(error: BuildError) -> anyhow::Error {
    match error {
        BuildError::Store(StoreError::Invalid(message)) => UsageError(message).into(),
        BuildError::Secret(error) => UsageError(error.to_string()).into(),
        other => other.into(),
    }
}
