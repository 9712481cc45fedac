//! One module per subcommand.

pub mod bench;
pub mod client;
pub mod control_plane;
pub mod harmony;
pub mod models_import;
pub mod serve;

/// Exit code for bad configuration or arguments (sysexits.h `EX_USAGE`).
pub const EX_USAGE: u8 = 64;

/// A configuration problem: reported without a backtrace and exits with [`EX_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn report_fatal(error: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {error:#}");
    if error.downcast_ref::<UsageError>().is_some() {
        return std::process::ExitCode::from(EX_USAGE);
    }
    std::process::ExitCode::FAILURE
}

/// Tracing for every role: `RUST_LOG` (or `ADAPTIVE_LOGGING_LEVEL`) filters, default `info`.
pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("ADAPTIVE_LOGGING_LEVEL"))
        .unwrap_or_else(|_| "info".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .try_init();
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (Kubernetes' stop signal).
pub async fn wait_for_shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
