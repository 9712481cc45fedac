//! Chunked uploads (`/api/v1/upload/*`) on both database backends and on three object
//! stores (a local directory, s3s-fs in-process and SeaweedFS `weed mini`, both real S3 servers
//! with SigV4): parts out of order and retried, a part larger than the write buffer (a multipart
//! upload on S3), the bytes read back through [`Uploads`] as an import would (a second instance
//! over the same store and registry root, like another replica), abort, sessions private to
//! their creator, size limits, and the removal of abandoned sessions.

use std::time::Duration;

use adaptive_control_plane::model_storage::ModelStorage;
use adaptive_control_plane::uploads::{UploadLimits, Uploads, PART_WRITE_BUFFER_BYTES};
use adaptive_registry::test_util::{self, TestBackend};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::harness::{wait_for, Backend, TestDatabase, TestServer};

/// The object store the server keeps its uploads in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Local,
    S3sFs,
    SeaweedFs,
}

/// A running object store, seen from outside the server.
pub struct TestStorage {
    backend: TestBackend,
}

impl TestStorage {
    /// `None` when SeaweedFS is unavailable here (skipped with a message; a failure under CI).
    pub async fn start(storage: Storage) -> Option<Self> {
        let backend = match storage {
            Storage::Local => test_util::local().await,
            Storage::S3sFs => test_util::s3s_fs().await,
            Storage::SeaweedFs => test_util::seaweedfs().await?,
        };
        Some(Self { backend })
    }

    pub fn model_registry(&self) -> Option<(String, adaptive_registry::StoreEnv)> {
        Some((self.backend.url.clone(), self.backend.store_env()))
    }

    pub fn model_storage(&self) -> ModelStorage {
        ModelStorage::open(&self.backend.url, &self.backend.store_env())
    }

    /// How many objects lie under `prefix` (relative to the registry root).
    pub async fn objects_under(&self, prefix: &str) -> usize {
        let store = &self.backend.store;
        let listed: Vec<_> = store
            .object_store()
            .list(Some(&store.path(prefix)))
            .try_collect()
            .await
            .expect("list objects");
        listed.len()
    }
}

/// A database, an object store, and a server over both.
struct Setup {
    database: TestDatabase,
    storage: TestStorage,
    server: TestServer,
}

impl Setup {
    async fn start(backend: Backend, storage: Storage, limits: UploadLimits) -> Option<Self> {
        let storage = TestStorage::start(storage).await?;
        let database = TestDatabase::create(backend).await;
        let server = TestServer::start_with_model_registry(
            database.store().await,
            limits,
            storage.model_registry(),
        )
        .await;
        Some(Self {
            database,
            storage,
            server,
        })
    }

    async fn session_objects(&self, session_id: &str) -> usize {
        self.storage
            .objects_under(&format!(".uploads/{session_id}"))
            .await
    }
}

struct Client<'a> {
    server: &'a TestServer,
    api_key: String,
    http: reqwest::Client,
}

impl<'a> Client<'a> {
    fn admin(server: &'a TestServer) -> Self {
        Self {
            server,
            api_key: server.api_key.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// A new user holding `role` in the admin team.
    async fn user(server: &'a TestServer, name: &str, role: &str) -> Self {
        let api_key = server.service_account_key(name, "admin", role).await;
        Self {
            server,
            api_key,
            http: reqwest::Client::new(),
        }
    }

    async fn answer(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("json body: {text}"))
        };
        (status, body)
    }

    async fn init(&self, total_parts_count: i64) -> String {
        let (status, body) = self
            .post_json(
                "/api/v1/upload/init",
                json!({"content_type": "application/jsonl", "metadata": {"origin": "test"}, "total_parts_count": total_parts_count}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["session_id"].as_str().expect("session_id").to_owned()
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.server.public_url(path))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .expect("request");
        Self::answer(response).await
    }

    async fn part(&self, session_id: &str, part_number: i64, bytes: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .post(self.server.public_url("/api/v1/upload/part"))
            .bearer_auth(&self.api_key)
            .query(&[
                ("session_id", session_id.to_owned()),
                ("part_number", part_number.to_string()),
            ])
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("request");
        Self::answer(response).await
    }

    async fn status(&self, session_id: &str) -> (u16, Value) {
        self.post_json("/api/v1/upload/status", json!({"session_id": session_id}))
            .await
    }

    /// As the SDK aborts: DELETE with a JSON body.
    async fn abort(&self, session_id: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(self.server.public_url("/api/v1/upload/abort"))
            .bearer_auth(&self.api_key)
            .header("content-type", "application/json")
            .body(json!({"session_id": session_id}).to_string())
            .send()
            .await
            .expect("request");
        Self::answer(response).await
    }

    async fn user_id(&self) -> String {
        let response = self
            .http
            .post(self.server.public_url("/api/graphql"))
            .bearer_auth(&self.api_key)
            .json(&json!({"query": "{ me { id } }"}))
            .send()
            .await
            .expect("request");
        let (_, body) = Self::answer(response).await;
        body["data"]["me"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned()
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error body: {body}"))
}

/// The server's chunked uploads seen from outside: same store, same registry root.
async fn replica_uploads(setup: &Setup) -> Uploads {
    Uploads::new(
        setup.database.store().await,
        setup.storage.model_storage(),
        UploadLimits::default(),
    )
}

fn part_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| seed.wrapping_add(index as u8))
        .collect()
}

#[tokio::test]
async fn sqlite_parts_in_any_order_and_retried_read_back_in_order() {
    parts_in_any_order_and_retried_read_back_in_order(Backend::Sqlite, Storage::Local).await;
}

#[tokio::test]
async fn postgres_parts_in_any_order_and_retried_read_back_in_order() {
    parts_in_any_order_and_retried_read_back_in_order(Backend::Postgres, Storage::Local).await;
}

#[tokio::test]
async fn s3s_parts_in_any_order_and_retried_read_back_in_order() {
    parts_in_any_order_and_retried_read_back_in_order(Backend::Sqlite, Storage::S3sFs).await;
}

#[tokio::test]
async fn postgres_seaweedfs_parts_in_any_order_and_retried_read_back_in_order() {
    parts_in_any_order_and_retried_read_back_in_order(Backend::Postgres, Storage::SeaweedFs).await;
}

async fn parts_in_any_order_and_retried_read_back_in_order(backend: Backend, storage: Storage) {
    let Some(setup) = Setup::start(backend, storage, UploadLimits::default()).await else {
        return;
    };
    let server = &setup.server;
    let client = Client::admin(server);
    let session_id = client.init(3).await;
    // Part 2 is over the write buffer: it goes to storage in pieces (a multipart upload on S3).
    let large_part_len = PART_WRITE_BUFFER_BYTES * 2 + 12_345;
    let parts = [
        part_bytes(1, 5000),
        part_bytes(2, large_part_len),
        part_bytes(3, 17),
    ];

    let (status, body) = client.part(&session_id, 3, parts[2].clone()).await;
    assert_eq!((status, &body["size_bytes"]), (200, &json!(17)), "{body}");
    // A first attempt at part 1 that the client retries with the right bytes.
    assert_eq!(client.part(&session_id, 1, vec![0; 10]).await.0, 200);
    let (status, body) = client.status(&session_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["completed_parts"], json!([1, 3]));
    assert_eq!(body["total_parts_count"], 3);
    assert_eq!(body["metadata"], json!({"origin": "test"}));
    assert_eq!(body["content_type"], "application/jsonl");
    assert_eq!(client.part(&session_id, 1, parts[0].clone()).await.0, 200);
    assert_eq!(client.part(&session_id, 2, parts[1].clone()).await.0, 200);

    for (part_number, why) in [(0, "zero"), (4, "past the end"), (-1, "negative")] {
        let (status, body) = client.part(&session_id, part_number, vec![1]).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid_request"),
            "{why}: {body}"
        );
    }
    let (status, body) = client.part(&session_id, 2, Vec::new()).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_request"),
        "{body}"
    );
    let (status, body) = client.part("not-a-session", 1, vec![1]).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");

    // The status is also read with the session id in the query string.
    let response = client
        .http
        .post(server.public_url("/api/v1/upload/status"))
        .bearer_auth(&client.api_key)
        .query(&[("session_id", &session_id)])
        .send()
        .await
        .expect("request");
    let (status, body) = Client::answer(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["completed_parts"], json!([1, 2, 3]));
    let total_bytes = 5000 + large_part_len as i64 + 17;
    assert_eq!(body["uploaded_bytes"], total_bytes);

    let uploads = replica_uploads(&setup).await;
    let owner = client.user_id().await;
    let completed = uploads
        .complete(&owner, &session_id)
        .await
        .expect("complete");
    assert_eq!(completed.total_bytes, total_bytes);
    let mut read_back = Vec::new();
    for part in &completed.parts {
        read_back.extend_from_slice(
            &uploads
                .read_part(&completed, part.part_number)
                .await
                .expect("read"),
        );
    }
    assert_eq!(read_back, parts.concat());

    let (status, body) = client.part(&session_id, 2, parts[1].clone()).await;
    assert_eq!((status, error_code(&body)), (409, "conflict"), "{body}");
    let (_, body) = client.status(&session_id).await;
    assert_eq!(body["completed"], true);
    setup.server.stop().await;
}

#[tokio::test]
async fn sqlite_sessions_are_private_and_abort_removes_the_objects() {
    sessions_are_private_and_abort_removes_the_objects(Backend::Sqlite, Storage::Local).await;
}

#[tokio::test]
async fn postgres_sessions_are_private_and_abort_removes_the_objects() {
    sessions_are_private_and_abort_removes_the_objects(Backend::Postgres, Storage::Local).await;
}

#[tokio::test]
async fn s3s_sessions_are_private_and_abort_removes_the_objects() {
    sessions_are_private_and_abort_removes_the_objects(Backend::Sqlite, Storage::S3sFs).await;
}

async fn sessions_are_private_and_abort_removes_the_objects(backend: Backend, storage: Storage) {
    let Some(setup) = Setup::start(backend, storage, UploadLimits::default()).await else {
        return;
    };
    let server = &setup.server;
    let owner = Client::admin(server);
    let session_id = owner.init(2).await;
    assert_eq!(owner.part(&session_id, 1, part_bytes(9, 100)).await.0, 200);
    assert_eq!(setup.session_objects(&session_id).await, 1);

    // Another admin may not see, extend or abort it.
    let other = Client::user(server, "other-uploader", "admin").await;
    for (what, (status, body)) in [
        ("status", other.status(&session_id).await),
        ("part", other.part(&session_id, 2, vec![1]).await),
        ("abort", other.abort(&session_id).await),
    ] {
        assert_eq!(
            (status, error_code(&body)),
            (404, "not_found"),
            "{what}: {body}"
        );
    }
    // Without dataset:create, nothing at all.
    let reader = Client::user(server, "reader", "read-only").await;
    let (status, body) = reader
        .post_json("/api/v1/upload/init", json!({"total_parts_count": 1}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "permission_denied"),
        "{body}"
    );
    let (status, _) = owner.status(&session_id).await;
    assert_eq!(status, 200);

    let (status, body) = owner.abort(&session_id).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(setup.session_objects(&session_id).await, 0);
    let (status, body) = owner.status(&session_id).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");
    let (status, _) = owner.abort(&session_id).await;
    assert_eq!(status, 404);
    setup.server.stop().await;
}

#[tokio::test]
async fn oversized_parts_and_files_are_refused() {
    oversized_parts_and_files_are_refused_on(Storage::Local).await;
}

#[tokio::test]
async fn s3s_oversized_parts_and_files_are_refused() {
    oversized_parts_and_files_are_refused_on(Storage::S3sFs).await;
}

async fn oversized_parts_and_files_are_refused_on(storage: Storage) {
    let limits = UploadLimits {
        max_part_bytes: 1024,
        max_parts: 4,
        max_total_bytes: 2048,
        ..UploadLimits::default()
    };
    let Some(setup) = Setup::start(Backend::Sqlite, storage, limits).await else {
        return;
    };
    let server = &setup.server;
    let client = Client::admin(server);
    let (status, body) = client
        .post_json("/api/v1/upload/init", json!({"total_parts_count": 5}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_request"),
        "{body}"
    );
    let (status, body) = client
        .post_json("/api/v1/upload/init", json!({"total_parts_count": 0}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_request"),
        "{body}"
    );

    let session_id = client.init(3).await;
    let (status, body) = client.part(&session_id, 1, vec![0; 1025]).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_request"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1024"),
        "{body}"
    );
    assert_eq!(client.part(&session_id, 1, vec![0; 1024]).await.0, 200);
    assert_eq!(client.part(&session_id, 2, vec![0; 1024]).await.0, 200);
    let (status, body) = client.part(&session_id, 3, vec![0; 1]).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_request"),
        "{body}"
    );
    // Replacing a part counts its new size, not both.
    assert_eq!(client.part(&session_id, 2, vec![0; 1000]).await.0, 200);
    assert_eq!(client.part(&session_id, 3, vec![0; 24]).await.0, 200);

    // Without a Content-Length the limit holds on the bytes as they stream in, and a refused
    // part leaves the earlier copy of that part in place.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![7; 1000]), Ok(vec![7; 1000])];
    let response = client
        .http
        .post(server.public_url("/api/v1/upload/part"))
        .bearer_auth(&client.api_key)
        .query(&[("session_id", session_id.as_str()), ("part_number", "1")])
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("request");
    let (status, body) = Client::answer(response).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_request"),
        "{body}"
    );
    let (_, body) = client.status(&session_id).await;
    assert_eq!(body["uploaded_bytes"], 1024 + 1000 + 24, "{body}");
    setup.server.stop().await;
}

#[tokio::test]
async fn sqlite_idle_sessions_are_removed_with_their_objects() {
    idle_sessions_are_removed_with_their_objects(Backend::Sqlite, Storage::Local).await;
}

#[tokio::test]
async fn postgres_idle_sessions_are_removed_with_their_objects() {
    idle_sessions_are_removed_with_their_objects(Backend::Postgres, Storage::Local).await;
}

#[tokio::test]
async fn postgres_s3s_idle_sessions_are_removed_with_their_objects() {
    idle_sessions_are_removed_with_their_objects(Backend::Postgres, Storage::S3sFs).await;
}

async fn idle_sessions_are_removed_with_their_objects(backend: Backend, storage: Storage) {
    let Some(setup) = Setup::start(backend, storage, UploadLimits::default()).await else {
        return;
    };
    let client = Client::admin(&setup.server);
    let session_id = client.init(2).await;
    assert_eq!(client.part(&session_id, 1, vec![5; 64]).await.0, 200);

    let uploads = replica_uploads(&setup).await;
    let now = chrono::Utc::now().timestamp_millis();
    let an_hour_ago = now - 3_600_000;
    assert_eq!(
        uploads.remove_idle_since(an_hour_ago).await.expect("sweep"),
        0
    );
    assert_eq!(client.status(&session_id).await.0, 200);
    assert_eq!(
        uploads.remove_idle_since(now + 1000).await.expect("sweep"),
        1
    );
    assert_eq!(setup.session_objects(&session_id).await, 0);
    assert_eq!(client.status(&session_id).await.0, 404);
    setup.server.stop().await;
}

/// The server's own sweeper, with an idle TTL of a few milliseconds.
#[tokio::test]
async fn the_sweeper_removes_abandoned_sessions() {
    let limits = UploadLimits {
        idle_ttl: Duration::from_millis(1),
        sweep_interval: Duration::from_millis(50),
        ..UploadLimits::default()
    };
    let Some(setup) = Setup::start(Backend::Sqlite, Storage::Local, limits).await else {
        return;
    };
    let client = Client::admin(&setup.server);
    let session_id = client.init(2).await;
    // The part may land after the sweeper removed the session: then it is a 404.
    let (status, _) = client.part(&session_id, 1, vec![5; 64]).await;
    assert!(status == 200 || status == 404, "{status}");
    wait_for(
        "the abandoned session to go",
        Duration::from_secs(10),
        || async {
            client.status(&session_id).await.0 == 404
                && setup.session_objects(&session_id).await == 0
        },
    )
    .await;
    setup.server.stop().await;
}

/// Not a test: how much memory part uploads cost the server. Four 100 MiB parts are sent at
/// once, generated on the fly (the client holds one 1 MiB chunk per part), and the process's
/// peak RSS is compared before and after. Run with
/// `cargo test -p adaptive-control-plane --test integration -- --ignored --nocapture part_upload_peak_memory`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn part_upload_peak_memory() {
    const PARTS: i64 = 4;
    const PART_BYTES: usize = 100 << 20;
    const CHUNK_BYTES: usize = 1 << 20;
    fn peak_rss_mib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kib / 1024
    }
    let Some(setup) = Setup::start(Backend::Sqlite, Storage::Local, UploadLimits::default()).await
    else {
        return;
    };
    let client = Client::admin(&setup.server);
    let session_id = client.init(PARTS).await;
    let before = peak_rss_mib();
    let started = tokio::time::Instant::now();
    let uploads = (1..=PARTS).map(|part_number| {
        let chunks = futures::stream::iter(0..PART_BYTES / CHUNK_BYTES).map(move |index| {
            Ok::<_, std::io::Error>(vec![
                (part_number as u8).wrapping_add(index as u8);
                CHUNK_BYTES
            ])
        });
        client
            .http
            .post(setup.server.public_url("/api/v1/upload/part"))
            .bearer_auth(&client.api_key)
            .query(&[
                ("session_id", session_id.clone()),
                ("part_number", part_number.to_string()),
            ])
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
    });
    for response in futures::future::join_all(uploads).await {
        assert_eq!(response.expect("part").status().as_u16(), 200);
    }
    let elapsed = started.elapsed();
    let (_, body) = client.status(&session_id).await;
    assert_eq!(body["uploaded_bytes"], PARTS * PART_BYTES as i64);
    println!(
        "{PARTS} concurrent parts of {} MiB in {:.2} s: peak RSS {before} MiB -> {} MiB",
        PART_BYTES >> 20,
        elapsed.as_secs_f64(),
        peak_rss_mib()
    );
    setup.server.stop().await;
}
