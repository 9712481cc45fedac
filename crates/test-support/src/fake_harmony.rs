//! A fake harmony replica: OpenAI-shaped `/v1/chat/completions` and `/v1/completions` that
//! answer a fixed reply, streamed word by word when asked, with usage. It records what it was
//! sent and can be told to fail, to stall, or be killed, so that routing and retry behaviour can
//! be tested without a model.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// How the fake answers.
#[derive(Debug, Clone)]
pub enum FakeBehaviour {
    /// Answers normally.
    Healthy,
    /// Answers 500 before any token.
    FailBeforeFirstToken,
    /// Sends the first chunk, then closes the connection without finishing.
    BreakAfterFirstToken,
}

#[derive(Debug, Clone)]
pub struct FakeHarmonyConfig {
    pub reply: String,
    pub behaviour: FakeBehaviour,
    /// Pause between streamed chunks (zero: everything at once).
    pub chunk_delay: Duration,
}

impl Default for FakeHarmonyConfig {
    fn default() -> Self {
        Self {
            reply: "Hello from the fake harmony replica.".to_owned(),
            behaviour: FakeBehaviour::Healthy,
            chunk_delay: Duration::ZERO,
        }
    }
}

struct Shared {
    config: Mutex<FakeHarmonyConfig>,
    requests: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
    open_streams: AtomicUsize,
}

/// A running fake replica; stops when dropped or killed.
pub struct FakeHarmony {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeHarmony {
    pub async fn start(config: FakeHarmonyConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            requests: AtomicUsize::new(0),
            bodies: Mutex::new(Vec::new()),
            open_streams: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completion))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Request bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.shared
            .bodies
            .lock()
            .map(|bodies| bodies.clone())
            .unwrap_or_default()
    }

    /// Streams currently being sent (a cancelled client makes this drop).
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    pub fn set_behaviour(&self, behaviour: FakeBehaviour) {
        if let Ok(mut config) = self.shared.config.lock() {
            config.behaviour = behaviour;
        }
    }

    /// Stops accepting connections: later requests get "connection refused".
    pub fn kill(&self) {
        self.server.abort();
    }
}

impl Drop for FakeHarmony {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    answer(shared, body, true).await
}

async fn completion(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    answer(shared, body, false).await
}

async fn answer(shared: Arc<Shared>, body: Bytes, chat: bool) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"message": "malformed JSON", "type": "invalid_request_error", "param": null, "code": "invalid_request"}}))).into_response();
    };
    if let Ok(mut bodies) = shared.bodies.lock() {
        bodies.push(request.clone());
    }
    let config = shared
        .config
        .lock()
        .map(|config| config.clone())
        .unwrap_or_default();
    if matches!(config.behaviour, FakeBehaviour::FailBeforeFirstToken) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "fake failure").into_response();
    }
    let model = request.get("model").cloned().unwrap_or(Value::Null);
    let words: Vec<String> = config
        .reply
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect();
    let usage = json!({"prompt_tokens": 7, "completion_tokens": words.len(), "total_tokens": 7 + words.len()});
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !stream {
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": config.reply}, "finish_reason": "stop"})
        } else {
            json!({"index": 0, "text": config.reply, "finish_reason": "stop"})
        };
        let object = if chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        return axum::Json(json!({"id": "fake-1", "object": object, "created": 0, "model": model, "choices": [choice], "usage": usage})).into_response();
    }
    let chunks = stream_chunks(&words, chat, &model, usage, &config.behaviour);
    let delay = config.chunk_delay;
    let guard = OpenStreamGuard::new(shared.clone());
    let body = futures::stream::unfold(
        (chunks.into_iter(), guard, true),
        move |(mut chunks, guard, first)| async move {
            let next = chunks.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if next.is_err() {
                // Let the chunks before the break reach the client first.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some((next, (chunks, guard, false)))
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn stream_chunks(
    words: &[String],
    chat: bool,
    model: &Value,
    usage: Value,
    behaviour: &FakeBehaviour,
) -> Vec<Result<Bytes, std::io::Error>> {
    let event = |value: Value| Ok(Bytes::from(format!("data: {value}\n\n")));
    let mut chunks = Vec::new();
    for (index, word) in words.iter().enumerate() {
        let finish = (index + 1 == words.len()).then_some("stop");
        let choice = if chat {
            json!({"index": 0, "delta": {"role": "assistant", "content": word}, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": word, "finish_reason": finish})
        };
        chunks.push(event(json!({"id": "fake-1", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [choice]})));
        if matches!(behaviour, FakeBehaviour::BreakAfterFirstToken) {
            chunks.push(Err(std::io::Error::other("fake connection break")));
            return chunks;
        }
    }
    chunks.push(event(json!({"id": "fake-1", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage})));
    chunks.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    chunks
}

struct OpenStreamGuard(Arc<Shared>);

impl OpenStreamGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open_streams.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for OpenStreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}
