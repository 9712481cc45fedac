//! Benchmark (not a test): what authentication plus the permission check costs an inference
//! request: `Authenticator::authenticate` on an `Authorization: Bearer` header, then
//! `Principal::can(model:use, project)`, exactly what the gateway's directory does.
//!
//! Two runs in one process on the same SQLite store: cached (the production path, TTL 5 s) and
//! uncached (TTL zero: every call queries the store), the baseline the cache is measured
//! against.
//!
//! `cargo run --release -p adaptive-control-plane --example auth_bench [iterations]`

use std::time::{Duration, Instant};

use adaptive_control_plane::auth::{Authenticator, Permission};
use adaptive_control_plane::bootstrap;
use adaptive_control_plane::config::Secrets;
use adaptive_control_plane::store::{DatabaseTarget, MetadataStore, StoreOptions};
use axum::http::{HeaderMap, HeaderValue, Method};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(200_000);
    let directory = tempfile::tempdir()?;
    let store = MetadataStore::connect(
        DatabaseTarget::Sqlite {
            path: directory.path().join("bench.db"),
        },
        StoreOptions {
            run_migrations: true,
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            credential_refresh_interval: Duration::from_secs(60),
            startup_retry: Duration::ZERO,
        },
    )
    .await?;
    let admin = bootstrap::ensure_bootstrap_admin(&store, "default", &Secrets::default())
        .await?
        .ok_or_else(|| anyhow::anyhow!("fresh store"))?;
    let project = bootstrap::ensure_default_project(&store, "default")
        .await?
        .ok_or_else(|| anyhow::anyhow!("fresh store"))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", admin.api_key.expose()))?,
    );

    println!("| path | calls | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---|---|---|---|---|");
    let uncached = Authenticator::new(store.clone(), None, Duration::ZERO);
    let baseline = measure(&uncached, &headers, &project.id, iterations / 20).await?;
    report("uncached (store query per call)", &baseline);
    let cached = Authenticator::new(store.clone(), None, Duration::from_secs(3600));
    let fast = measure(&cached, &headers, &project.id, iterations).await?;
    report("cached (production path)", &fast);
    println!(
        "\np99 ratio uncached / cached: {:.0}x",
        percentile(&baseline, 0.99).as_secs_f64() / percentile(&fast, 0.99).as_secs_f64()
    );
    Ok(())
}

async fn measure(
    authenticator: &Authenticator,
    headers: &HeaderMap,
    project: &str,
    calls: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(calls);
    // Warm up: first load of the principal, allocator, branch predictors.
    for _ in 0..1000.min(calls) {
        authenticator.authenticate(&Method::POST, headers).await?;
    }
    for _ in 0..calls {
        let started = Instant::now();
        let caller = authenticator.authenticate(&Method::POST, headers).await?;
        let allowed = caller.principal.can(Permission::ModelUse, Some(project));
        samples.push(started.elapsed());
        anyhow::ensure!(allowed, "the admin may call the default project");
    }
    samples.sort();
    Ok(samples)
}

fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[index]
}

fn report(name: &str, samples: &[Duration]) {
    let micros = |quantile: f64| percentile(samples, quantile).as_secs_f64() * 1e6;
    println!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.1} |",
        samples.len(),
        micros(0.5),
        micros(0.99),
        micros(0.999),
        samples.last().map_or(0.0, |max| max.as_secs_f64() * 1e6)
    );
}
