//! Gateway added-latency benchmark (issue 3, "Benchmark"): not a test.
//!
//! Three roles, each its own process so that the load generator, the gateway and the fake
//! replica never share a tokio runtime or thread pool:
//!
//! ```text
//! gateway_bench fake    [--listen ADDR]                     a FAKE harmony (fixed reply, streamed at once)
//! gateway_bench gateway --upstream URL [--listen ADDR]      the gateway, interaction logging on
//! gateway_bench relay   --upstream URL [--listen ADDR]      a byte-copying TCP relay: the floor
//!                                                           for any proxy's added latency
//! gateway_bench load    --target NAME=URL ... [options]     closed-loop load, prints a markdown table
//! gateway_bench         [options]                           all of the above: spawns fake and gateway
//!                                                           as child processes, then runs `load`
//! ```
//!
//! `gateway --workers N` sets the gateway's tokio worker threads (default: one per core).
//! `gateway --nodelay false` leaves Nagle's algorithm on for the client connections (axum's default).
//! `fake` and `gateway` print `listening on http://ADDR` on stdout once ready and stop on
//! SIGTERM or SIGINT; the gateway then drains its recorder and prints how many interactions it
//! stored. The interaction store is in memory (it keeps the completion ids, to count each
//! interaction once, and drops the records), so what is measured is the gateway's own work plus
//! the recorder's queue, not a database. `benches/gateway-vs-litellm.sh` adds the relay, nginx and the LiteLLM proxy as
//! further targets.
//!
//! Load options: `--clients 1,16,256`, `--modes unary,stream`, `--requests N` per point,
//! `--warmup N` per point, `--max-seconds S` per point (a point stops early past it), `--json
//! PATH` (one JSON object per point). Each point measures every target back to back, so the
//! direct and proxied numbers see the same background load; the first target is the baseline
//! that "added" latency is computed against.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adaptive_gateway::{
    Caller, Directory, GatewayConfig, GatewayError, GatewayMetrics, GatewayState,
    InteractionRecord, InteractionStore, ModelListing, Recorder, RecorderConfig, Replica,
    ResolvedModel, StoreError,
};
use adaptive_test_support::fake_harmony::{FakeHarmony, FakeHarmonyConfig};
use axum::serve::ListenerExt;
use futures::StreamExt;
use serde_json::{json, Value};

/// One key for every target: the gateway's directory and LiteLLM's master key.
const API_KEY: &str = "sk-bench-0123456789abcdef0123456789abcdef";
const MODEL: &str = "proj";

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (role, rest) = match args.first().map(String::as_str) {
        Some(role @ ("fake" | "gateway" | "relay" | "load")) => {
            (role.to_owned(), args[1..].to_vec())
        }
        _ => ("all".to_owned(), args),
    };
    let options = Options::parse(&rest)?;
    match role.as_str() {
        "fake" => runtime(None)?.block_on(serve_fake()),
        "gateway" => runtime(options.workers)?.block_on(serve_gateway(options)),
        "relay" => runtime(options.workers)?.block_on(serve_tcp_relay(options)),
        "load" => runtime(None)?.block_on(run_load(options)),
        _ => run_all(options),
    }
}

/// Tokio's multi-thread runtime, one worker per core unless `workers` says otherwise.
fn runtime(workers: Option<usize>) -> BenchResult<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    Ok(builder.enable_all().build()?)
}

// === Options ===

#[derive(Debug, Clone)]
struct Options {
    listen: String,
    upstream: Option<String>,
    nodelay: bool,
    workers: Option<usize>,
    targets: Vec<(String, String)>,
    clients: Vec<usize>,
    modes: Vec<Mode>,
    requests: usize,
    warmup: usize,
    max_seconds: f64,
    json: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unary,
    Stream,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Unary => "non-streaming",
            Mode::Stream => "streaming",
        }
    }
}

impl Options {
    fn parse(args: &[String]) -> BenchResult<Self> {
        let mut options = Options {
            listen: "127.0.0.1:0".into(),
            upstream: None,
            nodelay: true,
            workers: None,
            targets: Vec::new(),
            clients: vec![1, 16, 256],
            modes: vec![Mode::Unary, Mode::Stream],
            requests: 5000,
            warmup: 500,
            max_seconds: 20.0,
            json: None,
        };
        let mut iter = args.iter();
        while let Some(flag) = iter.next() {
            let mut value = || {
                iter.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--listen" => options.listen = value()?,
                "--upstream" => options.upstream = Some(value()?),
                "--nodelay" => options.nodelay = value()?.parse()?,
                "--workers" => options.workers = Some(value()?.parse()?),
                "--target" => {
                    let spec = value()?;
                    let (name, url) = spec
                        .split_once('=')
                        .ok_or_else(|| format!("--target wants NAME=URL, got {spec}"))?;
                    options
                        .targets
                        .push((name.to_owned(), url.trim_end_matches('/').to_owned()));
                }
                "--clients" => {
                    options.clients = value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?
                }
                "--modes" => {
                    options.modes = value()?
                        .split(',')
                        .map(|mode| match mode {
                            "unary" => Ok(Mode::Unary),
                            "stream" => Ok(Mode::Stream),
                            other => Err(format!("unknown mode {other} (unary, stream)")),
                        })
                        .collect::<Result<_, _>>()?
                }
                "--requests" => options.requests = value()?.parse()?,
                "--warmup" => options.warmup = value()?.parse()?,
                "--max-seconds" => options.max_seconds = value()?.parse()?,
                "--json" => options.json = Some(value()?),
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        Ok(options)
    }
}

// === Roles: fake and gateway ===

async fn serve_fake() -> BenchResult<()> {
    // FakeHarmony binds 127.0.0.1:0 itself.
    let fake = FakeHarmony::start(FakeHarmonyConfig::default()).await?;
    println!("listening on {}", fake.url());
    wait_for_stop_signal().await?;
    eprintln!("fake harmony: {} requests served", fake.requests());
    Ok(())
}

struct BenchDirectory {
    caller: Caller,
    resolved: ResolvedModel,
}

#[async_trait::async_trait]
impl Directory for BenchDirectory {
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, GatewayError> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if presented == Some(API_KEY) {
            return Ok(self.caller.clone());
        }
        Err(GatewayError::Unauthenticated(
            "missing or invalid API key".into(),
        ))
    }

    async fn resolve(&self, _caller: &Caller, model: &str) -> Result<ResolvedModel, GatewayError> {
        if model == MODEL || model == "proj/chat" {
            return Ok(self.resolved.clone());
        }
        Err(GatewayError::NotFound(format!("model '{model}' not found")))
    }

    async fn list_models(&self, _caller: &Caller) -> Result<Vec<ModelListing>, GatewayError> {
        Ok(vec![ModelListing {
            id: "proj/chat".into(),
            created_unix: 0,
            owned_by: "proj".into(),
        }])
    }
}

/// Stands in for the control plane's database: takes each batch, keeps the completion ids to
/// check that every interaction arrives once, and lets the records go, as a store that has
/// written them would. (Keeping every record in memory made the bench measure the heap
/// growing: page faults and `mprotect` calls that neither the gateway nor a database pays.)
#[derive(Default)]
struct MemoryStore {
    completion_ids: Mutex<HashSet<uuid::Uuid>>,
}

#[async_trait::async_trait]
impl InteractionStore for MemoryStore {
    async fn store_interactions(&self, batch: &[InteractionRecord]) -> Result<(), StoreError> {
        let mut completion_ids = self
            .completion_ids
            .lock()
            .map_err(|_| StoreError("store lock poisoned".into()))?;
        completion_ids.extend(batch.iter().map(|record| record.completion_id));
        Ok(())
    }
}

async fn serve_gateway(options: Options) -> BenchResult<()> {
    let upstream = options
        .upstream
        .ok_or("gateway needs --upstream URL (the fake harmony)")?;
    let directory = Arc::new(BenchDirectory {
        caller: Caller {
            user_id: Some("bench-user".into()),
            api_key_id: Some("bench-key-id".into()),
        },
        resolved: ResolvedModel {
            project_id: "p-1".into(),
            project_key: "proj".into(),
            model_service_id: "ms-chat".into(),
            model_service_key: "chat".into(),
            model_id: "m-chat".into(),
            model_key: "chat-model".into(),
            replicas: vec![Replica {
                id: "r0".into(),
                url: upstream,
            }],
        },
    });
    let store = Arc::new(MemoryStore::default());
    let (recorder, handle) = Recorder::spawn(store.clone(), RecorderConfig::default());
    let state = GatewayState::new(
        GatewayConfig::default(),
        directory,
        handle,
        GatewayMetrics::unregistered(),
    )?;
    let listener = tokio::net::TcpListener::bind(&options.listen).await?;
    let addr: SocketAddr = listener.local_addr()?;
    println!("listening on http://{addr}");
    // What the server mounting the gateway must do: a relayed stream is many small writes, and
    // without TCP_NODELAY each one after the first waits for the client's delayed ACK (~40 ms).
    let nodelay = options.nodelay;
    let listener = listener.tap_io(move |tcp| {
        if let Err(error) = tcp.set_nodelay(nodelay) {
            eprintln!("cannot set TCP_NODELAY: {error}");
        }
    });
    axum::serve(listener, adaptive_gateway::router(state))
        .with_graceful_shutdown(async {
            let _ = wait_for_stop_signal().await;
        })
        .await?;
    let written = recorder.shutdown(Duration::from_secs(10)).await;
    let stored = store
        .completion_ids
        .lock()
        .map(|completion_ids| completion_ids.len())
        .unwrap_or(0);
    eprintln!("gateway: {written} interactions written, {stored} distinct stored");
    Ok(())
}

/// The floor for any proxy: a layer-4 relay that copies bytes between each accepted
/// connection and its own connection to the upstream, parsing nothing. Whatever it adds over
/// calling the upstream directly is the price of one more loopback hop each way (system calls,
/// wake-ups, scheduling) on this machine, which no HTTP gateway can go below.
async fn serve_tcp_relay(options: Options) -> BenchResult<()> {
    let upstream = options
        .upstream
        .ok_or("relay needs --upstream URL (the fake harmony)")?;
    let upstream_addr = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind(&options.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let accept_loop = async {
        loop {
            let (mut client, _) = listener.accept().await?;
            let upstream_addr = upstream_addr.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream_addr).await else {
                    return;
                };
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        result = accept_loop => result?,
        _ = wait_for_stop_signal() => {}
    }
    Ok(())
}

async fn wait_for_stop_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

// === Role: all in one ===

struct ChildServer {
    child: Child,
    url: String,
}

impl ChildServer {
    fn spawn(args: &[&str]) -> BenchResult<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line from {args:?}: {line:?}"))?
            .to_owned();
        Ok(Self { child, url })
    }

    fn stop(mut self) -> BenchResult<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

fn run_all(options: Options) -> BenchResult<()> {
    let fake = ChildServer::spawn(&["fake"])?;
    let gateway = ChildServer::spawn(&["gateway", "--upstream", &fake.url])?;
    let relay = ChildServer::spawn(&["relay", "--upstream", &fake.url])?;
    let mut load_options = options;
    load_options.targets = vec![
        ("direct".into(), format!("{}/v1", fake.url)),
        ("tcp-relay".into(), format!("{}/v1", relay.url)),
        ("gateway".into(), format!("{}/v1", gateway.url)),
    ];
    let outcome = runtime(None)?.block_on(run_load(load_options));
    relay.stop()?;
    gateway.stop()?;
    fake.stop()?;
    outcome
}

// === Role: load ===

#[derive(Debug, Clone)]
struct PointResult {
    mode: Mode,
    clients: usize,
    target: String,
    requests: usize,
    errors: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl PointResult {
    fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

async fn run_load(options: Options) -> BenchResult<()> {
    if options.targets.is_empty() {
        return Err("load needs at least one --target NAME=URL".into());
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    for (name, url) in &options.targets {
        check_target(&client, name, url).await?;
    }
    eprintln!("load average before: {}", load_average());
    let mut results = Vec::new();
    for &mode in &options.modes {
        for &clients in &options.clients {
            for (name, url) in &options.targets {
                let result = measure_point(&client, &options, mode, clients, name, url).await;
                eprintln!(
                    "{:>13} {:>3} clients {:>8}: {:>6} req {:>3} err {:>8.0} req/s p50 {:>7.3} ms p99 {:>7.3} ms",
                    mode.as_str(),
                    clients,
                    name,
                    result.requests,
                    result.errors,
                    result.requests_per_second(),
                    result.p50_ms,
                    result.p99_ms
                );
                results.push(result);
            }
        }
    }
    eprintln!("load average after: {}", load_average());
    if let Some(path) = &options.json {
        let lines: Vec<String> = results
            .iter()
            .map(|result| {
                json!({
                    "mode": result.mode.as_str(), "clients": result.clients, "target": result.target,
                    "requests": result.requests, "errors": result.errors, "seconds": result.seconds,
                    "requests_per_second": result.requests_per_second(),
                    "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                })
                .to_string()
            })
            .collect();
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    print!("{}", markdown_table(&options, &results));
    Ok(())
}

fn request_body(mode: Mode) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
        "stream": mode == Mode::Stream,
    })
}

async fn check_target(client: &reqwest::Client, name: &str, url: &str) -> BenchResult<()> {
    for mode in [Mode::Unary, Mode::Stream] {
        let body = send_one(client, url, &request_body(mode), mode)
            .await
            .map_err(|error| format!("target {name} ({url}) fails a {mode:?} request: {error}"))?;
        let complete = match mode {
            Mode::Unary => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|value| {
                    value["choices"][0]["message"]["content"]
                        .as_str()
                        .map(str::len)
                })
                .is_some_and(|len| len > 0),
            Mode::Stream => body.ends_with(b"data: [DONE]\n\n"),
        };
        if !complete {
            return Err(format!(
                "target {name} answered an incomplete {mode:?} body: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
    }
    Ok(())
}

/// One request, read to the end of the body (the last SSE event when streaming).
async fn send_one(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    mode: Mode,
) -> Result<Vec<u8>, String> {
    let response = client
        .post(format!("{url}/chat/completions"))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    match mode {
        Mode::Unary => Ok(response
            .bytes()
            .await
            .map_err(|error| error.to_string())?
            .to_vec()),
        Mode::Stream => {
            let mut received = Vec::new();
            let mut chunks = response.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                received.extend_from_slice(&chunk.map_err(|error| error.to_string())?);
            }
            Ok(received)
        }
    }
}

async fn measure_point(
    client: &reqwest::Client,
    options: &Options,
    mode: Mode,
    clients: usize,
    name: &str,
    url: &str,
) -> PointResult {
    let body = Arc::new(request_body(mode));
    let warmup = options.warmup.max(clients * 2);
    run_clients(
        client,
        url,
        &body,
        mode,
        clients,
        warmup,
        options.max_seconds,
    )
    .await;
    let started = Instant::now();
    let (mut latencies, errors) = run_clients(
        client,
        url,
        &body,
        mode,
        clients,
        options.requests,
        options.max_seconds,
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    PointResult {
        mode,
        clients,
        target: name.to_owned(),
        requests: latencies.len(),
        errors,
        seconds,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
    }
}

/// `clients` closed-loop tasks share `total` requests; each records its latencies (ns).
async fn run_clients(
    client: &reqwest::Client,
    url: &str,
    body: &Arc<Value>,
    mode: Mode,
    clients: usize,
    total: usize,
    max_seconds: f64,
) -> (Vec<u64>, usize) {
    let issued = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(max_seconds);
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = client.clone();
        let url = url.to_owned();
        let body = body.clone();
        let issued = issued.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let sent = Instant::now();
                match send_one(&client, &url, &body, mode).await {
                    Ok(_) => latencies.push(sent.elapsed().as_nanos() as u64),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        if let Ok(task_latencies) = task.await {
            latencies.extend(task_latencies);
        }
    }
    (latencies, errors.load(Ordering::Relaxed))
}

fn percentile_ms(sorted_ns: &[u64], quantile: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted_ns.len() as f64 * quantile).ceil() as usize).clamp(1, sorted_ns.len());
    sorted_ns[rank - 1] as f64 / 1e6
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// One row per (mode, clients, target); "added" is against the first target of the same point.
fn markdown_table(options: &Options, results: &[PointResult]) -> String {
    let baseline_name = &options.targets[0].0;
    let mut table = String::from(
        "| mode | clients | target | requests | errors | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for result in results {
        let baseline = results.iter().find(|candidate| {
            candidate.mode == result.mode
                && candidate.clients == result.clients
                && &candidate.target == baseline_name
        });
        let (added_p50, added_p99) = match baseline {
            Some(baseline) if result.target != *baseline_name => (
                format!("{:.3}", result.p50_ms - baseline.p50_ms),
                format!("{:.3}", result.p99_ms - baseline.p99_ms),
            ),
            _ => ("—".to_owned(), "—".to_owned()),
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {} | {} |\n",
            result.mode.as_str(),
            result.clients,
            result.target,
            result.requests,
            result.errors,
            result.requests_per_second(),
            result.p50_ms,
            result.p99_ms,
            added_p50,
            added_p99
        ));
    }
    table
}
