//! The gateway end to end over HTTP, in front of fake harmony replicas (no model: they stream a
//! fixed reply). The directory and the interaction store are small in-memory versions of what
//! the control plane provides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adaptive_gateway::{
    Caller, Directory, GatewayConfig, GatewayError, GatewayMetrics, GatewayState,
    InteractionRecord, InteractionStore, ModelListing, Recorder, RecorderConfig, Replica,
    ResolvedModel, StoreError,
};
use adaptive_test_support::fake_harmony::{FakeBehaviour, FakeHarmony, FakeHarmonyConfig};
use adaptive_test_support::wait_for;
use futures::StreamExt;
use serde_json::{json, Value};

const API_KEY: &str = "test-key";

struct MemoryDirectory {
    replicas: Mutex<Vec<Replica>>,
}

#[async_trait::async_trait]
impl Directory for MemoryDirectory {
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, GatewayError> {
        let expected = format!("Bearer {API_KEY}");
        match headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
        {
            Some(value) if value == expected => Ok(Caller {
                user_id: Some("u1".into()),
                api_key_id: Some("k1".into()),
            }),
            _ => Err(GatewayError::Unauthenticated(
                "missing or invalid API key".into(),
            )),
        }
    }

    async fn resolve(&self, _caller: &Caller, model: &str) -> Result<ResolvedModel, GatewayError> {
        let replicas = self.replicas.lock().expect("not poisoned").clone();
        match model {
            "proj" | "proj/chat" => Ok(resolved("chat", replicas)),
            "proj/offline" => Ok(resolved("offline", Vec::new())),
            other => Err(GatewayError::NotFound(format!("model '{other}' not found"))),
        }
    }

    async fn list_models(&self, _caller: &Caller) -> Result<Vec<ModelListing>, GatewayError> {
        Ok(vec![ModelListing {
            id: "proj/chat".into(),
            created_unix: 0,
            owned_by: "proj".into(),
        }])
    }
}

fn resolved(key: &str, replicas: Vec<Replica>) -> ResolvedModel {
    ResolvedModel {
        project_id: "p-1".into(),
        project_key: "proj".into(),
        model_service_id: format!("ms-{key}"),
        model_service_key: key.into(),
        model_id: format!("m-{key}"),
        model_key: format!("{key}-model"),
        replicas,
    }
}

#[derive(Default)]
struct MemoryStore {
    records: Mutex<BTreeMap<uuid::Uuid, InteractionRecord>>,
}

#[async_trait::async_trait]
impl InteractionStore for MemoryStore {
    async fn store_interactions(&self, batch: &[InteractionRecord]) -> Result<(), StoreError> {
        let mut records = self.records.lock().expect("not poisoned");
        for record in batch {
            records
                .entry(record.completion_id)
                .or_insert_with(|| record.clone());
        }
        Ok(())
    }
}

struct Harness {
    addr: SocketAddr,
    replicas: Vec<FakeHarmony>,
    store: Arc<MemoryStore>,
    recorder: Option<Recorder>,
    client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    state: GatewayState,
}

impl Harness {
    async fn start(replica_configs: Vec<FakeHarmonyConfig>) -> Self {
        let mut replicas = Vec::new();
        for config in replica_configs {
            replicas.push(
                FakeHarmony::start(config)
                    .await
                    .expect("fake harmony starts"),
            );
        }
        let directory = Arc::new(MemoryDirectory {
            replicas: Mutex::new(
                replicas
                    .iter()
                    .enumerate()
                    .map(|(index, fake)| Replica {
                        id: format!("r{index}"),
                        url: fake.url(),
                    })
                    .collect(),
            ),
        });
        let store = Arc::new(MemoryStore::default());
        let (recorder, handle) = Recorder::spawn(store.clone(), RecorderConfig::default());
        let config = GatewayConfig {
            first_token_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            ..GatewayConfig::default()
        };
        let state = GatewayState::new(config, directory, handle, GatewayMetrics::unregistered())
            .expect("gateway state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = adaptive_gateway::router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            replicas,
            store,
            recorder: Some(recorder),
            client: reqwest::Client::new(),
            server,
            state,
        }
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("http://{}{path}", self.addr))
            .bearer_auth(API_KEY)
            .json(&body)
    }

    async fn stored(&mut self) -> Vec<InteractionRecord> {
        self.server.abort();
        if let Some(recorder) = self.recorder.take() {
            recorder.shutdown(Duration::from_secs(10)).await;
        }
        self.store
            .records
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "proj/chat", "messages": [{"role": "user", "content": "hello"}], "stream": stream})
}

async fn sse_events(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.expect("body");
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn unary_chat_carries_session_and_completion_ids_and_is_recorded() {
    let mut harness = Harness::start(vec![FakeHarmonyConfig::default()]).await;
    let response = harness
        .post("/api/v1/chat/completions", chat_body(false))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let choice = &body["choices"][0];
    let completion_id = choice["completion_id"]
        .as_str()
        .expect("completion_id")
        .to_owned();
    assert_eq!(
        choice["message"]["content"],
        "Hello from the fake harmony replica."
    );
    assert_eq!(choice["message"]["id"], completion_id.as_str());
    assert_eq!(choice["model"], "proj/chat");
    assert!(uuid::Uuid::parse_str(body["session_id"].as_str().expect("session_id")).is_ok());
    assert_eq!(
        harness.replicas[0].bodies()[0]["model"],
        "chat-model",
        "harmony gets its own model key"
    );
    let stored = harness.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].completion_id.to_string(), completion_id);
    assert_eq!(stored[0].completion, "Hello from the fake harmony replica.");
    assert_eq!(stored[0].usage.prompt_tokens, 7);
}

#[tokio::test]
async fn store_false_keeps_the_usage_but_not_the_content() {
    let mut harness = Harness::start(vec![FakeHarmonyConfig::default()]).await;
    for stream in [false, true] {
        let mut body = chat_body(stream);
        body["store"] = json!(false);
        let response = harness
            .post("/api/v1/chat/completions", body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body");
    }
    let stored = harness.stored().await;
    assert_eq!(stored.len(), 2, "both calls are counted");
    for record in stored {
        assert!(!record.stored);
        assert_eq!(record.messages.get(), "null");
        assert_eq!(record.completion, "");
        assert_eq!(record.usage.prompt_tokens, 7);
        assert!(record.usage.completion_tokens > 0);
    }
}

#[tokio::test]
async fn streaming_relays_every_chunk_then_done_and_hides_usage_unless_asked() {
    let mut harness = Harness::start(vec![FakeHarmonyConfig::default()]).await;
    let events = sse_events(
        harness
            .post("/v1/chat/completions", chat_body(true))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str(event).expect("json chunk"))
        .collect();
    assert_eq!(chunks.len(), 6, "one chunk per word, usage chunk dropped");
    let text: String = chunks
        .iter()
        .map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content")
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Hello from the fake harmony replica.");
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));
    assert!(chunks
        .iter()
        .all(|chunk| chunk["choices"][0]["completion_id"].is_string()
            && chunk["session_id"].is_string()));

    let mut with_usage = chat_body(true);
    with_usage["stream_options"] = json!({"include_usage": true});
    let events = sse_events(
        harness
            .post("/v1/chat/completions", with_usage)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).expect("json");
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 6);
    let stored = harness.stored().await;
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|record| record.completion
        == "Hello from the fake harmony replica."
        && record.usage.completion_tokens == 6));
}

#[tokio::test]
async fn errors_are_openai_shaped_with_stable_codes() {
    let harness = Harness::start(vec![FakeHarmonyConfig::default()]).await;
    let cases = [
        (
            json!({"model": "nope/x", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found",
        ),
        (
            json!({"model": "proj/offline", "messages": [{"role": "user", "content": "x"}]}),
            503,
            "model_not_online",
        ),
        (
            json!({"model": "proj", "messages": "x"}),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let response = harness
            .post("/api/v1/chat/completions", body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), status);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], code);
        assert!(error["error"]["message"].is_string() && error["error"]["type"].is_string());
    }
    let malformed = harness
        .client
        .post(format!("http://{}/v1/chat/completions", harness.addr))
        .bearer_auth(API_KEY)
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(malformed.status(), 400);
    let unauthenticated = harness
        .client
        .post(format!("http://{}/v1/chat/completions", harness.addr))
        .json(&chat_body(false))
        .send()
        .await
        .expect("sent");
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test]
async fn load_spreads_over_replicas_by_outstanding_tokens() {
    let slow = FakeHarmonyConfig {
        chunk_delay: Duration::from_millis(200),
        ..FakeHarmonyConfig::default()
    };
    let harness = Harness::start(vec![slow.clone(), slow.clone(), slow]).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = harness
            .post("/v1/chat/completions", chat_body(true))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let counts: Vec<usize> = harness.replicas.iter().map(FakeHarmony::requests).collect();
    assert_eq!(
        counts,
        vec![1, 1, 1],
        "three overlapping streams land on three replicas"
    );
    drop(streams);
}

#[tokio::test]
async fn session_affinity_keeps_a_session_on_one_replica() {
    let harness = Harness::start(vec![
        FakeHarmonyConfig::default(),
        FakeHarmonyConfig::default(),
        FakeHarmonyConfig::default(),
    ])
    .await;
    let session = uuid::Uuid::new_v4().to_string();
    for _ in 0..6 {
        let mut body = chat_body(false);
        body["session_id"] = json!(session);
        let response: Value = harness
            .post("/v1/chat/completions", body)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert_eq!(response["session_id"], session.as_str());
    }
    let counts: Vec<usize> = harness.replicas.iter().map(FakeHarmony::requests).collect();
    assert_eq!(
        counts.iter().filter(|count| **count == 6).count(),
        1,
        "all six turns on one replica: {counts:?}"
    );
}

#[tokio::test]
async fn a_replica_that_fails_before_the_first_token_is_retried_elsewhere() {
    let harness = Harness::start(vec![
        FakeHarmonyConfig::default(),
        FakeHarmonyConfig::default(),
    ])
    .await;
    harness.replicas[0].kill();
    harness.replicas[1].set_behaviour(FakeBehaviour::Healthy);
    for stream in [false, true, false, true] {
        let response = harness
            .post("/v1/chat/completions", chat_body(stream))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            response.status(),
            200,
            "a dead replica costs a retry, not an error"
        );
        let _ = response.text().await;
    }
    assert_eq!(harness.replicas[1].requests(), 4);

    let failing = Harness::start(vec![
        FakeHarmonyConfig {
            behaviour: FakeBehaviour::FailBeforeFirstToken,
            ..FakeHarmonyConfig::default()
        },
        FakeHarmonyConfig::default(),
    ])
    .await;
    for _ in 0..4 {
        let response = failing
            .post("/v1/chat/completions", chat_body(true))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(
            sse_events(response).await.last().map(String::as_str),
            Some("[DONE]")
        );
    }
    assert!(
        failing.state.balancer().outstanding_tokens("r0") == 0
            && failing.state.balancer().outstanding_tokens("r1") == 0,
        "leases released"
    );
}

#[tokio::test]
async fn a_failure_after_the_first_token_ends_the_stream_with_an_error_event_and_no_record() {
    let mut harness = Harness::start(vec![FakeHarmonyConfig {
        behaviour: FakeBehaviour::BreakAfterFirstToken,
        ..FakeHarmonyConfig::default()
    }])
    .await;
    let events = sse_events(
        harness
            .post("/v1/chat/completions", chat_body(true))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let last: Value = serde_json::from_str(events.last().expect("an event")).expect("json");
    assert_eq!(last["error"]["code"], "unavailable");
    assert!(
        harness.stored().await.is_empty(),
        "an unfinished completion is not recorded"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream_and_is_not_recorded() {
    let slow = FakeHarmonyConfig {
        chunk_delay: Duration::from_millis(300),
        ..FakeHarmonyConfig::default()
    };
    let mut harness = Harness::start(vec![slow]).await;
    let response = harness
        .post("/v1/chat/completions", chat_body(true))
        .send()
        .await
        .expect("sent");
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("bytes");
    assert!(first.starts_with(b"data: "));
    assert_eq!(harness.replicas[0].open_streams(), 1);
    drop(body);
    let replica = &harness.replicas[0];
    assert!(
        wait_for(Duration::from_secs(5), || async {
            replica.open_streams() == 0
        })
        .await,
        "the upstream stream was closed"
    );
    assert!(harness.stored().await.is_empty());
}

#[tokio::test]
async fn completions_and_models_list() {
    let harness = Harness::start(vec![FakeHarmonyConfig::default()]).await;
    let body: Value = harness
        .post(
            "/api/v1/completions",
            json!({"model": "proj", "prompt": "Once"}),
        )
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body["choices"][0]["text"],
        "Hello from the fake harmony replica."
    );
    assert!(body["choices"][0]["completion_id"].is_string());
    let models: Value = harness
        .client
        .get(format!("http://{}/v1/models", harness.addr))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"][0]["id"], "proj/chat");
}
