//! Harmony over HTTP, in-process on port 0, with the fake model (`fake://`): the OpenAI
//! surface, validation errors, streaming, cancellation, metrics, registration and drain. Then the
//! real SmolLM2 from a local file (`real_model`), from the model registry on S3
//! (`registry_model`), and made to call tools (`tool_calls`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adaptive_api_types::harmony::{
    DeregisterReplica, DesiredModel, RegisterReplica, RegisterReplicaResponse, ReplicaStatus,
    SpawnModel,
};
use adaptive_harmony::{CapacityReservation, Harmony, HarmonyConfig, HarmonyHandle};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const MODEL: &str = "fake";

struct TestHarmony {
    base_url: String,
    handle: HarmonyHandle,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

impl TestHarmony {
    async fn start() -> Self {
        Self::start_with(HarmonyConfig::for_test(), Some(fake_model(None))).await
    }

    async fn start_with(config: HarmonyConfig, model: Option<SpawnModel>) -> Self {
        let harmony = Harmony::bind(config).await.expect("binds");
        if let Some(model) = model {
            harmony.spawn_model(model).await.expect("fake model loads");
        }
        let shutdown = CancellationToken::new();
        let base_url = harmony.base_url();
        let handle = harmony.handle();
        let server = tokio::spawn(harmony.run_until(shutdown.clone().cancelled_owned()));
        Self {
            base_url,
            handle,
            shutdown,
            server,
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .json(body)
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("request sent");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    }

    /// Waits until no sequence holds a KV block (all finished or cancelled).
    async fn wait_for_idle_engine(&self, model: &str) {
        tokio::time::timeout(
            Duration::from_secs(120),
            self.handle.wait_for_model_stats(model, |stats| {
                stats.kv_blocks_in_use == 0
                    && stats.running_sequences == 0
                    && stats.waiting_sequences == 0
            }),
        )
        .await
        .expect("engine went idle")
        .expect("model present");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("clean shutdown");
    }
}

fn fake_model(max_seq_len: Option<u32>) -> SpawnModel {
    SpawnModel {
        key: MODEL.to_owned(),
        path: "fake://test".to_owned(),
        max_seq_len,
        kv_cache_len: None,
    }
}

fn chat_body(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 24,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

/// Reads an SSE response into its `data:` payloads.
async fn sse_payloads(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.expect("stream body");
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn chat_completion_has_the_openai_shape_and_greedy_output_is_deterministic() {
    let harmony = TestHarmony::start().await;
    let (status, first) = harmony
        .post("/v1/chat/completions", &chat_body("hello there", json!({})))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(first["model"], MODEL);
    assert_eq!(first["choices"][0]["message"]["role"], "assistant");
    let content = first["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(!content.is_empty());
    assert!(["stop", "length"].contains(
        &first["choices"][0]["finish_reason"]
            .as_str()
            .expect("reason")
    ));
    let usage = &first["usage"];
    assert!(usage["prompt_tokens"].as_u64().expect("count") > 10);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap_or(0)
                + usage["completion_tokens"].as_u64().unwrap_or(0)
        )
    );

    let (_, second) = harmony
        .post("/v1/chat/completions", &chat_body("hello there", json!({})))
        .await;
    assert_eq!(second["choices"][0]["message"]["content"], content);
    // The second run found the prompt's full blocks in the prefix cache.
    assert!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .expect("count")
            > 0
    );
    harmony.stop().await;
}

#[tokio::test]
async fn streaming_chat_sends_role_content_finish_usage_and_done() {
    let harmony = TestHarmony::start().await;
    let (_, whole) = harmony
        .post("/v1/chat/completions", &chat_body("stream me", json!({})))
        .await;
    let response = harmony
        .client
        .post(format!("{}/v1/chat/completions", harmony.base_url))
        .json(&chat_body(
            "stream me",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    let payloads = sse_payloads(response).await;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|payload| serde_json::from_str(payload).expect("json chunk"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|chunk| chunk["object"] == "chat.completion.chunk"));
    let streamed: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        whole["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
    );
    let usage_chunk = chunks.last().expect("usage chunk");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"],
        whole["usage"]["completion_tokens"]
    );
    let finish_chunk = &chunks[chunks.len() - 2];
    assert_eq!(
        finish_chunk["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    harmony.stop().await;
}

#[tokio::test]
async fn completions_trim_at_a_stop_string_and_report_logprobs() {
    let harmony = TestHarmony::start().await;
    let body = json!({"model": MODEL, "prompt": "once upon a time", "max_tokens": 30, "temperature": 0, "ignore_eos": true});
    let (status, free) = harmony.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{free}");
    assert_eq!(free["object"], "text_completion");
    let text = free["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert_eq!(free["usage"]["completion_tokens"], 30);
    assert!(text.len() > 15, "{text}");
    let stop = &text[10..13];
    let expected = &text[..text.find(stop).expect("present")];

    let mut stopped_body = body.clone();
    stopped_body["stop"] = json!([stop]);
    stopped_body["logprobs"] = json!(2);
    let (_, stopped) = harmony.post("/v1/completions", &stopped_body).await;
    assert_eq!(stopped["choices"][0]["text"], expected);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let logprobs = &stopped["choices"][0]["logprobs"];
    assert!(logprobs["token_logprobs"]
        .as_array()
        .expect("array")
        .iter()
        .all(|l| l.as_f64().is_some_and(|l| l <= 0.0)));
    assert_eq!(
        logprobs["top_logprobs"][0].as_object().expect("map").len(),
        2
    );
    harmony.wait_for_idle_engine(MODEL).await;
    harmony.stop().await;
}

#[tokio::test]
async fn seeded_sampling_repeats_and_differs_across_seeds() {
    let harmony = TestHarmony::start().await;
    let sampled = |seed: i64| {
        chat_body(
            "sample",
            json!({"temperature": 2.0, "seed": seed, "ignore_eos": true}),
        )
    };
    let (_, a) = harmony.post("/v1/chat/completions", &sampled(7)).await;
    let (_, b) = harmony.post("/v1/chat/completions", &sampled(7)).await;
    let (_, c) = harmony.post("/v1/chat/completions", &sampled(8)).await;
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    assert_ne!(
        a["choices"][0]["message"]["content"],
        c["choices"][0]["message"]["content"]
    );
    harmony.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_4xx() {
    let harmony =
        TestHarmony::start_with(HarmonyConfig::for_test(), Some(fake_model(Some(64)))).await;
    let too_long = "x".repeat(200);
    let (status, body) = harmony
        .post("/v1/chat/completions", &chat_body(&too_long, json!({})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let malformed = harmony
        .client
        .post(format!("{}/v1/chat/completions", harmony.base_url))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(malformed.status().as_u16(), 400);
    let body: Value = malformed.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "invalid_request");

    for (extra, param) in [
        (json!({"temperature": 5}), "temperature"),
        (json!({"n": 2}), "n"),
        (json!({"top_p": 0}), "top_p"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
    ] {
        let (status, body) = harmony
            .post("/v1/chat/completions", &chat_body("hi", extra.clone()))
            .await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["param"], param, "{extra}");
    }
    let (status, body) = harmony
        .post(
            "/v1/chat/completions",
            &json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = harmony
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": "hi"}),
        )
        .await;
    assert_eq!(status, 400);
    harmony.stop().await;
}

#[tokio::test]
async fn models_can_be_listed_spawned_and_deallocated() {
    let harmony = TestHarmony::start().await;
    let (status, spawned) = harmony
        .post(
            "/models/spawn",
            &json!({"key": "second", "path": "fake://second", "max_seq_len": 512}),
        )
        .await;
    assert_eq!(status, 200, "{spawned}");
    assert_eq!(spawned["max_seq_len"], 512);
    let (_, list) = harmony.get_text("/v1/models").await;
    let list: Value = serde_json::from_str(&list).expect("json");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec![MODEL, "second"]);
    let (status, _) = harmony
        .post(
            "/models/spawn",
            &json!({"key": "second", "path": "fake://other"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = harmony
        .post("/models/dealloc", &json!({"key": "second"}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = harmony
        .post("/models/dealloc", &json!({"key": "second"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = harmony
        .post(
            "/models/spawn",
            &json!({"key": "real", "path": "/no/such/model.gguf"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    harmony.stop().await;
}

#[tokio::test]
async fn metrics_and_health_are_exposed() {
    let harmony = TestHarmony::start().await;
    let (status, _) = harmony
        .post("/v1/chat/completions", &chat_body("count me", json!({})))
        .await;
    assert_eq!(status, 200);
    let (status, health) = harmony.get_text("/health").await;
    assert_eq!(status, 200);
    assert!(health.contains("\"ok\""));
    let (status, metrics) = harmony.get_text("/metrics").await;
    assert_eq!(status, 200);
    for series in [
        "harmony_ttft_seconds_bucket{",
        "harmony_inter_token_latency_seconds_count{",
        "harmony_queue_depth{",
        "harmony_running_sequences{",
        "harmony_kv_blocks_used{",
        "harmony_kv_blocks_free{",
        "harmony_prefix_cache_hit_rate{",
        "harmony_tokens_processed_total{",
        "harmony_tokens_generated_total{",
        "harmony_generation_requests_total{",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    assert!(metrics.contains("model=\"fake\""));
    harmony.stop().await;
}

/// A small deterministic generator for the load test's choices.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// Sends `count` streaming chat requests of random lengths, a third of which disconnect after
/// a few chunks; returns how many ran to `[DONE]`. Every request must end cleanly (200 or 429).
async fn concurrent_streams_with_disconnects(
    harmony: &Arc<TestHarmony>,
    model: &str,
    count: u64,
    max_prompt_words: u64,
    max_tokens: u64,
) -> usize {
    let mut tasks = Vec::new();
    for index in 0..count {
        let harmony = Arc::clone(harmony);
        let model = model.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut random = Lcg(index + 1);
            let prompt = "word ".repeat(1 + random.below(max_prompt_words) as usize);
            let disconnect_after = (random.below(3) == 0).then(|| random.below(6) as usize);
            let body = chat_body(
                &prompt,
                json!({"model": model, "stream": true, "max_tokens": 1 + random.below(max_tokens), "ignore_eos": true}),
            );
            let response = harmony
                .client
                .post(format!("{}/v1/chat/completions", harmony.base_url))
                .json(&body)
                .send()
                .await
                .expect("sent");
            let status = response.status().as_u16();
            if status != 200 {
                // Admission control may refuse under load; that must be a clean 429.
                assert_eq!(status, 429);
                return false;
            }
            let mut stream = response.bytes_stream();
            let mut received = 0;
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                received += 1;
                if Some(received) == disconnect_after {
                    return false; // dropping the stream disconnects
                }
            }
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
            true
        }));
    }
    let mut completed = 0;
    for task in tasks {
        if task.await.expect("no panic") {
            completed += 1;
        }
    }
    completed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_with_random_disconnects_leave_no_kv_blocks_in_use() {
    let mut config = HarmonyConfig::for_test();
    config.engine.max_running_sequences = 16;
    config.engine.max_batched_tokens = 128;
    let model = SpawnModel {
        kv_cache_len: Some(2048),
        ..fake_model(None)
    };
    let harmony = Arc::new(TestHarmony::start_with(config, Some(model)).await);
    let completed = concurrent_streams_with_disconnects(&harmony, MODEL, 64, 60, 80).await;
    assert!(completed > 0);
    harmony.wait_for_idle_engine(MODEL).await;
    let (_, metrics) = harmony.get_text("/metrics").await;
    assert!(
        metrics.contains("harmony_kv_blocks_used{pool=\"test\",model=\"fake\"} 0"),
        "{metrics}"
    );
    match Arc::try_unwrap(harmony) {
        Ok(harmony) => harmony.stop().await,
        Err(_) => panic!("harmony still shared"),
    }
}

#[tokio::test]
async fn shutdown_drains_in_flight_streams_then_stops() {
    // A slow fake keeps the first stream in flight (300 steps of 10 ms, within the 5 s drain
    // grace) while the test checks that new work is refused.
    let slow_model = SpawnModel {
        path: "fake://slow".to_owned(),
        ..fake_model(None)
    };
    let harmony = TestHarmony::start_with(HarmonyConfig::for_test(), Some(slow_model)).await;
    let response = harmony
        .client
        .post(format!("{}/v1/chat/completions", harmony.base_url))
        .json(&chat_body(
            "long",
            json!({"stream": true, "max_tokens": 300, "ignore_eos": true}),
        ))
        .send()
        .await
        .expect("sent");
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("first chunk").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("assistant"));
    harmony.shutdown.cancel();
    let handle = harmony.handle.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !handle.is_draining() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("draining starts");
    let (status, body) = harmony
        .post("/v1/chat/completions", &chat_body("new", json!({})))
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    let mut rest = String::new();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
    }
    assert!(
        rest.contains("\"finish_reason\":\"length\""),
        "in-flight stream finished: {rest}"
    );
    assert!(rest.trim_end().ends_with("data: [DONE]"));
    harmony.server.await.expect("task").expect("clean stop");
}

#[derive(Default)]
struct ControlPlaneLog {
    registrations: Vec<RegisterReplica>,
    deregistrations: Vec<DeregisterReplica>,
}

/// The control plane's internal registration API: records what the replica sends and answers
/// with the desired models the test sets.
struct FakeControlPlane {
    url: String,
    log: Arc<Mutex<ControlPlaneLog>>,
    desired: Arc<Mutex<Vec<DesiredModel>>>,
    /// Bumped on every registration and deregistration.
    calls: tokio::sync::watch::Receiver<usize>,
}

impl FakeControlPlane {
    async fn start(desired: Vec<DesiredModel>) -> Self {
        use axum::routing::post;
        let log = Arc::new(Mutex::new(ControlPlaneLog::default()));
        let desired = Arc::new(Mutex::new(desired));
        let (calls_tx, calls) = tokio::sync::watch::channel(0usize);
        let calls_tx = Arc::new(calls_tx);
        let router = axum::Router::new()
            .route(
                "/internal/harmony/register",
                post({
                    let (log, desired, calls_tx) = (
                        Arc::clone(&log),
                        Arc::clone(&desired),
                        Arc::clone(&calls_tx),
                    );
                    move |axum::Json(body): axum::Json<RegisterReplica>| async move {
                        log.lock().expect("lock").registrations.push(body);
                        calls_tx.send_modify(|calls| *calls += 1);
                        axum::Json(RegisterReplicaResponse {
                            replica_id: "r-1".to_owned(),
                            heartbeat_interval_ms: 100,
                            ttl_ms: 1000,
                            desired_models: desired.lock().expect("lock").clone(),
                        })
                    }
                }),
            )
            .route(
                "/internal/harmony/deregister",
                post({
                    let (log, calls_tx) = (Arc::clone(&log), Arc::clone(&calls_tx));
                    move |axum::Json(body): axum::Json<DeregisterReplica>| async move {
                        log.lock().expect("lock").deregistrations.push(body);
                        calls_tx.send_modify(|calls| *calls += 1);
                        "ok"
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            log,
            desired,
            calls,
        }
    }

    fn config(&self) -> HarmonyConfig {
        let mut config = HarmonyConfig::for_test();
        config.control_plane_url = Some(self.url.clone());
        config
    }

    fn set_desired(&self, desired: Vec<DesiredModel>) {
        *self.desired.lock().expect("lock") = desired;
    }

    fn log(&self) -> std::sync::MutexGuard<'_, ControlPlaneLog> {
        self.log.lock().expect("lock")
    }

    /// Waits until the calls received so far satisfy `predicate`.
    async fn wait_for(&mut self, what: &str, predicate: impl Fn(&ControlPlaneLog) -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            while !predicate(&self.log()) {
                if self.calls.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for {what}");
    }
}

fn desired_model(key: &str) -> DesiredModel {
    DesiredModel {
        key: key.to_owned(),
        path: format!("fake://{key}"),
        max_seq_len: None,
        kv_cache_len: None,
    }
}

fn last_online_models(log: &ControlPlaneLog) -> Vec<String> {
    log.registrations
        .last()
        .map_or_else(Vec::new, |registration| {
            let mut keys: Vec<String> = registration
                .online_models
                .iter()
                .map(|model| model.key.clone())
                .collect();
            keys.sort();
            keys
        })
}

#[tokio::test]
async fn registers_loads_desired_models_reports_draining_and_deregisters() {
    let mut control_plane = FakeControlPlane::start(vec![desired_model(MODEL)]).await;
    let mut config = control_plane.config();
    config.identity.ordinal = 3;
    let harmony = TestHarmony::start_with(config, None).await;
    control_plane
        .wait_for("a heartbeat reporting the desired model online", |log| {
            last_online_models(log) == [MODEL]
        })
        .await;
    harmony.stop().await;
    let log = control_plane.log();
    assert_eq!(log.registrations[0].ordinal, 3);
    assert_eq!(log.registrations[0].status, ReplicaStatus::Online);
    assert_eq!(log.registrations[0].capacity_ends_at, None);
    assert_eq!(
        log.registrations.last().map(|r| r.status),
        Some(ReplicaStatus::Draining)
    );
    assert_eq!(log.deregistrations.len(), 1);
    assert_eq!(log.deregistrations[0].partition_key, "test-partition");
}

#[tokio::test]
async fn unloads_models_no_longer_desired_but_keeps_explicitly_loaded_ones() {
    // "fake" is spawned explicitly and "preloaded" comes from the config; the control plane
    // lists both as well as "desired", which only it asked for.
    let mut control_plane = FakeControlPlane::start(vec![
        desired_model("desired"),
        desired_model(MODEL),
        desired_model("preloaded"),
    ])
    .await;
    let mut config = control_plane.config();
    config.preload_models = vec![SpawnModel {
        key: "preloaded".to_owned(),
        path: "fake://preloaded".to_owned(),
        max_seq_len: None,
        kv_cache_len: None,
    }];
    let harmony = TestHarmony::start_with(config, Some(fake_model(None))).await;
    control_plane
        .wait_for("all three models online", |log| {
            last_online_models(log) == ["desired", MODEL, "preloaded"]
        })
        .await;

    control_plane.set_desired(Vec::new());
    control_plane
        .wait_for("the model only the control plane wanted unloaded", |log| {
            last_online_models(log) == [MODEL, "preloaded"]
        })
        .await;
    let (status, body) = harmony
        .post(
            "/v1/chat/completions",
            &json!({"model": "desired", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = harmony
        .post("/v1/chat/completions", &chat_body("still here", json!({})))
        .await;
    assert_eq!(status, 200);

    // Listed again: loaded again.
    control_plane.set_desired(vec![desired_model("desired")]);
    control_plane
        .wait_for("the desired model back", |log| {
            last_online_models(log) == ["desired", MODEL, "preloaded"]
        })
        .await;
    harmony.stop().await;
}

#[tokio::test]
async fn drains_and_deregisters_ahead_of_the_capacity_reservation_end() {
    // The block ends in 10 minutes and the replica drains 1 hour ahead: at once, with no clock
    // to wait on (when the drain is due is unit-tested in `config`).
    let end = (chrono::Utc::now() + chrono::Duration::minutes(10))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut control_plane = FakeControlPlane::start(Vec::new()).await;
    let mut config = control_plane.config();
    config.capacity_reservation =
        Some(CapacityReservation::parse(&end, Duration::from_secs(3600)).expect("valid end"));
    let harmony = TestHarmony::start_with(config, Some(fake_model(None))).await;
    control_plane
        .wait_for("deregistration", |log| !log.deregistrations.is_empty())
        .await;
    {
        let log = control_plane.log();
        assert!(log
            .registrations
            .iter()
            .all(|r| r.capacity_ends_at.as_deref() == Some(end.as_str())));
        assert_eq!(
            log.registrations.last().map(|r| r.status),
            Some(ReplicaStatus::Draining)
        );
    }
    assert!(harmony.handle.is_draining());

    // Still up, unready, and saying why.
    let (status, health) = harmony.get_text("/health").await;
    assert_eq!(status, 503);
    let health: Value = serde_json::from_str(&health).expect("json");
    assert_eq!(health["status"], "draining");
    assert_eq!(health["capacity_reservation_end"], end.as_str());
    assert!(health["drain_starts_at"].is_string(), "{health}");
    let (_, metrics) = harmony.get_text("/metrics").await;
    assert!(
        metrics.contains("harmony_capacity_reservation_end_timestamp_seconds "),
        "{metrics}"
    );
    let (status, body) = harmony
        .post("/v1/chat/completions", &chat_body("too late", json!({})))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(!harmony.server.is_finished(), "waits for the stop signal");

    harmony.stop().await;
    assert_eq!(
        control_plane.log().deregistrations.len(),
        1,
        "deregistered once"
    );
}

/// The real SmolLM2-135M-Instruct (Q4_1 GGUF) through the same HTTP surface. Skipped, with a
/// message, when the model file is missing and `scripts/fetch-model.sh` cannot fetch it; under
/// CI (`CI` set), where the model is always fetched, that fails instead.
mod real_model {
    use super::*;

    pub(crate) const REAL: &str = "smol";

    pub(crate) fn model_path() -> Option<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            let fetched = std::process::Command::new("bash")
                .arg(root.join("scripts/fetch-model.sh"))
                .status()
                .is_ok_and(|status| status.success());
            if !fetched {
                adaptive_registry::test_util::skip_or_fail(&format!(
                    "{} is missing and scripts/fetch-model.sh failed",
                    path.display()
                ));
                return None;
            }
        }
        Some(path)
    }

    pub(crate) async fn start_real(config: HarmonyConfig) -> Option<TestHarmony> {
        let path = model_path()?;
        let model = SpawnModel {
            key: REAL.to_owned(),
            path: path.display().to_string(),
            max_seq_len: Some(2048),
            kv_cache_len: Some(16 * 1024),
        };
        Some(TestHarmony::start_with(config, Some(model)).await)
    }

    pub(crate) fn ask(question: &str, max_tokens: u32) -> Value {
        json!({
            "model": REAL,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": max_tokens,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_model_answers_in_english_deterministically_alone_batched_and_cached() {
        let Some(harmony) = start_real(HarmonyConfig::for_test()).await else {
            return;
        };
        let question = ask("What is the capital of France?", 24);
        let (status, alone) = harmony.post("/v1/chat/completions", &question).await;
        assert_eq!(status, 200, "{alone}");
        let answer = alone["choices"][0]["message"]["content"]
            .as_str()
            .expect("text")
            .to_owned();
        eprintln!("answer: {answer:?}");
        assert!(answer.contains("Paris"), "{answer}");
        let letters = answer
            .chars()
            .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
            .count();
        assert!(
            letters * 10 >= answer.chars().count() * 8,
            "mostly English letters: {answer}"
        );

        // Repeated: same text, and the prompt's full blocks come from the prefix cache.
        let (_, repeated) = harmony.post("/v1/chat/completions", &question).await;
        assert_eq!(repeated["choices"][0]["message"]["content"], answer);
        assert!(
            repeated["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0)
                > 0
        );

        // Batched with 7 other prompts of different lengths.
        let harmony = Arc::new(harmony);
        let mut others = Vec::new();
        for index in 0..7 {
            let harmony = Arc::clone(&harmony);
            others.push(tokio::spawn(async move {
                let filler = "Tell me about the weather. ".repeat(1 + index * 3);
                harmony
                    .post("/v1/chat/completions", &ask(&filler, 8 + index as u32 * 4))
                    .await
            }));
        }
        let (_, batched) = harmony
            .post(
                "/v1/chat/completions",
                &ask("What is the capital of France?", 24),
            )
            .await;
        for other in others {
            assert_eq!(other.await.expect("task").0, 200);
        }
        assert_eq!(batched["choices"][0]["message"]["content"], answer);
        harmony.wait_for_idle_engine(REAL).await;
        if let Ok(harmony) = Arc::try_unwrap(harmony) {
            harmony.stop().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn real_model_survives_64_concurrent_streams_with_disconnects() {
        let mut config = HarmonyConfig::for_test();
        config.engine.max_running_sequences = 64;
        config.engine.max_batched_tokens = 256;
        let Some(harmony) = start_real(config).await else {
            return;
        };
        let harmony = Arc::new(harmony);
        let completed = concurrent_streams_with_disconnects(&harmony, REAL, 64, 40, 12).await;
        assert!(completed > 0);
        harmony.wait_for_idle_engine(REAL).await;
        let (status, body) = harmony
            .post("/v1/chat/completions", &ask(&"long ".repeat(3000), 4))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("context_length_exceeded"))
        );
        if let Ok(harmony) = Arc::try_unwrap(harmony) {
            harmony.stop().await;
        }
    }
}

#[path = "http/registry_model.rs"]
mod registry_model;

#[path = "http/tool_calls.rs"]
mod tool_calls;
