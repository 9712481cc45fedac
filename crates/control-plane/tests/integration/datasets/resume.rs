//! Processing survives its replica: a dataset left mid-processing by a crash, or by a replica
//! that stopped, is processed again by the next control plane started on the same database
//! and storage, to READY with the whole file; two replicas racing for it process it once; one
//! whose file is gone ends FAILED. An abort of the upload (which adaptive-sdk sends on any
//! error after the dataset was acknowledged) does not take the parts from under it.

use adaptive_control_plane::datasets::ResumeReport;
use adaptive_control_plane::store::MetadataStore;
use adaptive_control_plane::uploads::Uploads;
use adaptive_control_plane::RunningControlPlane;

use super::*;
use crate::harness::test_control_plane;

/// The chunked file the resume tests upload: scored, a few hundred kilobytes in 64 KiB parts.
fn resume_file() -> Vec<u8> {
    scored_jsonl(3000, 500)
}

const RESUME_PART_BYTES: usize = 64 * 1024;

/// A control plane over an existing database and registry: a replica started again after
/// another stopped. (Unlike [`TestServer`], it finds the admin bootstrapped already.)
struct Replica {
    running: RunningControlPlane,
    _directory: tempfile::TempDir,
}

impl Replica {
    async fn start(store: MetadataStore, storage: &TestStorage) -> Self {
        let directory = tempfile::tempdir().expect("tempdir");
        let registry = storage.model_registry();
        assert!(registry.is_some(), "a registry url");
        let control_plane = test_control_plane(directory.path(), store, registry);
        let admin = control_plane.bootstrap_admin().await.expect("bootstrap");
        assert!(admin.is_none(), "the admin exists already");
        let running = control_plane.start().await.expect("serve");
        Self {
            running,
            _directory: directory,
        }
    }

    fn client(&self, api_key: &str) -> Client {
        Client::at(self.running.public_addr, api_key)
    }

    async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// A first control plane on `backend` with the registry (parts and datasets) on `storage`, a
/// project, and the metrics the resume file scores.
async fn first_replica(backend: Backend, storage: &TestStorage) -> (TestDatabase, TestServer) {
    let database = TestDatabase::create(backend).await;
    let server = TestServer::start_with_model_registry(
        database.store().await,
        UploadLimits::default(),
        storage.model_registry(),
    )
    .await;
    create_project(&server).await;
    create_metric(&server, "quality", "SCALAR").await;
    create_metric(&server, "helpful", "BOOL").await;
    (database, server)
}

/// What a replica that died mid-processing leaves: the session completed, the dataset row
/// PROCESSING part way, claimed by a replica that is gone (its lease ran out), and the start of
/// a copy at the dataset's object. Returns the dataset id.
async fn leave_crash_state(
    store: &MetadataStore,
    storage: &TestStorage,
    key: &str,
    session_id: Option<&str>,
) -> String {
    let pool = store.raw_pool_for_tests();
    let project_id: String = sqlx::query_scalar("SELECT id FROM projects WHERE key = $1")
        .bind(PROJECT)
        .fetch_one(&pool)
        .await
        .expect("project");
    let now = chrono::Utc::now().timestamp_millis();
    if let Some(session_id) = session_id {
        sqlx::query("UPDATE upload_sessions SET completed_at = $2 WHERE id = $1")
            .bind(session_id)
            .bind(now)
            .execute(&pool)
            .await
            .expect("complete the session");
    }
    let dataset_id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO datasets (id, project_id, key, name, kind, source, status, progress, \
         upload_session_id, created_at, updated_at, claimed_by, claim_expires_at) \
         VALUES ($1, $2, $3, $4, 'PROMPT', 'UPLOADED', 'PROCESSING', 0.4, $5, $6, $6, \
         'a-replica-that-died', $7)",
    )
    .bind(&dataset_id)
    .bind(&project_id)
    .bind(key)
    .bind(format!("{key} name"))
    .bind(session_id)
    .bind(now - 120_000)
    .bind(now - 1_000)
    .execute(&pool)
    .await
    .expect("insert the dataset row");
    let objects = storage.model_storage().objects().expect("objects");
    let path = objects.path(&format!(".datasets/{project_id}/{dataset_id}.jsonl"));
    objects
        .object_store()
        .put(
            &path,
            b"{\"messages\": [{\"role\": \"user\", \"co".to_vec().into(),
        )
        .await
        .expect("a partial copy");
    dataset_id
}

/// Checks that a resumed dataset is READY with the whole file, its counts, and no parts left.
async fn assert_resumed(client: &Client, storage: &TestStorage, dataset_id: &str, file: &[u8]) {
    let processed = client.wait_processed(dataset_id).await;
    assert_eq!(processed["status"], "DONE", "{processed}");
    let dataset = client.describe(dataset_id).await;
    let (status, _, bytes) = client
        .download(dataset["downloadUrl"].as_str().expect("url"), "original")
        .await;
    assert_eq!(status, 200);
    assert!(bytes == file, "the whole file, byte for byte");
    assert_eq!(dataset["records"], 3501);
    assert_eq!(
        usage_counts(&dataset),
        [
            ("helpful".to_owned(), 1500, 0),
            ("quality".to_owned(), 3000, 500)
        ]
    );
    wait_for(
        "the parts to be removed",
        Duration::from_secs(10),
        || async { storage.objects_under(".uploads").await == 0 },
    )
    .await;
}

#[tokio::test]
async fn sqlite_processing_cut_by_a_crash_resumes_after_a_restart() {
    processing_cut_by_a_crash_resumes_after_a_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_processing_cut_by_a_crash_resumes_after_a_restart() {
    processing_cut_by_a_crash_resumes_after_a_restart(Backend::Postgres).await;
}

async fn processing_cut_by_a_crash_resumes_after_a_restart(backend: Backend) {
    let storage = TestStorage::start(Storage::Local).await.expect("local");
    let (database, first) = first_replica(backend, &storage).await;
    let api_key = first.api_key.clone();
    let file = resume_file();
    let session_id = Client::admin(&first)
        .upload_parts(&file, RESUME_PART_BYTES)
        .await;
    first.stop().await;
    let store = database.store().await;
    let dataset_id = leave_crash_state(&store, &storage, "crashed", Some(&session_id)).await;
    // However long the restart takes, the upload sweeper keeps the parts of a dataset that is
    // not READY or FAILED yet.
    let uploads = Uploads::new(
        store.clone(),
        storage.model_storage(),
        UploadLimits::default(),
    );
    assert_eq!(uploads.remove_idle_since(i64::MAX).await.expect("sweep"), 0);

    let restarted = Replica::start(store, &storage).await;
    let client = restarted.client(&api_key);
    assert_resumed(&client, &storage, &dataset_id, &file).await;
    restarted.stop().await;
}

#[tokio::test]
async fn sqlite_processing_cut_by_a_stop_resumes_after_a_restart() {
    processing_cut_by_a_stop_resumes_after_a_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_processing_cut_by_a_stop_resumes_after_a_restart() {
    processing_cut_by_a_stop_resumes_after_a_restart(Backend::Postgres).await;
}

/// The first control plane stops right after acknowledging the upload: its processing gives
/// the dataset up (or, on a quick machine, finishes first), never fails it, and the next one
/// ends it READY.
async fn processing_cut_by_a_stop_resumes_after_a_restart(backend: Backend) {
    let storage = TestStorage::start(Storage::Local).await.expect("local");
    let (database, first) = first_replica(backend, &storage).await;
    let api_key = first.api_key.clone();
    let file = resume_file();
    let created = Client::admin(&first)
        .upload_chunked("stopped", &file, RESUME_PART_BYTES)
        .await;
    assert_eq!(created["status"], "PENDING", "{created}");
    let dataset_id = created["datasetId"].as_str().expect("datasetId").to_owned();
    first.stop().await;
    let store = database.store().await;
    let (status, claimed_by): (String, Option<String>) =
        sqlx::query_as("SELECT status, claimed_by FROM datasets WHERE id = $1")
            .bind(&dataset_id)
            .fetch_one(&store.raw_pool_for_tests())
            .await
            .expect("dataset row");
    assert_ne!(status, "FAILED");
    assert!(
        claimed_by.is_none(),
        "the stopped replica gave its claim up"
    );
    if status != "READY" {
        assert!(storage.objects_under(".uploads").await > 0, "parts kept");
    }

    let restarted = Replica::start(store, &storage).await;
    let client = restarted.client(&api_key);
    assert_resumed(&client, &storage, &dataset_id, &file).await;
    restarted.stop().await;
}

/// adaptive-sdk aborts its upload session on any error once `createDatasetFromMultipartUpload`
/// has answered (a failed status poll, say): the abort is refused with 409 while the dataset is
/// pending or processing, and the dataset still ends READY with the whole file.
#[tokio::test]
async fn sqlite_an_abort_does_not_take_the_parts_of_a_processing_dataset() {
    an_abort_does_not_take_the_parts_of_a_processing_dataset(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_an_abort_does_not_take_the_parts_of_a_processing_dataset() {
    an_abort_does_not_take_the_parts_of_a_processing_dataset(Backend::Postgres).await;
}

async fn an_abort_does_not_take_the_parts_of_a_processing_dataset(backend: Backend) {
    let storage = TestStorage::start(Storage::Local).await.expect("local");
    let (database, first) = first_replica(backend, &storage).await;
    let api_key = first.api_key.clone();
    let admin = Client::admin(&first);
    let file = resume_file();
    let session_id = admin.upload_parts(&file, RESUME_PART_BYTES).await;
    // Left processing by a replica that died: the running one sweeps only at start and every
    // 30 s, so the dataset stays PROCESSING while the abort comes in.
    let store = database.store().await;
    let dataset_id = leave_crash_state(&store, &storage, "aborted", Some(&session_id)).await;
    let (status, body) = admin.abort_upload(&session_id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(&dataset_id), "{message}");
    assert!(storage.objects_under(".uploads").await > 0, "parts kept");
    first.stop().await;

    let restarted = Replica::start(store, &storage).await;
    let client = restarted.client(&api_key);
    assert_resumed(&client, &storage, &dataset_id, &file).await;
    // Once the dataset has ended, its session is gone with its parts.
    let (status, body) = client.abort_upload(&session_id).await;
    assert_eq!(status, 404, "{body}");
    restarted.stop().await;
}

/// Two replicas finding the same abandoned dataset: one takes it over, and it is processed
/// once, to READY.
#[tokio::test]
async fn sqlite_racing_replicas_resume_a_dataset_once() {
    racing_replicas_resume_a_dataset_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_racing_replicas_resume_a_dataset_once() {
    racing_replicas_resume_a_dataset_once(Backend::Postgres).await;
}

async fn racing_replicas_resume_a_dataset_once(backend: Backend) {
    let storage = TestStorage::start(Storage::Local).await.expect("local");
    let (database, server) = first_replica(backend, &storage).await;
    let api_key = server.api_key.clone();
    let file = resume_file();
    let session_id = Client::admin(&server)
        .upload_parts(&file, RESUME_PART_BYTES)
        .await;
    // Only the two racers look for abandoned datasets.
    server.stop().await;
    let store = database.store().await;
    let dataset_id = leave_crash_state(&store, &storage, "raced", Some(&session_id)).await;
    let replica = || {
        let uploads = Uploads::new(
            store.clone(),
            storage.model_storage(),
            UploadLimits::default(),
        );
        Datasets::new(store.clone(), storage.model_storage(), uploads)
    };
    let (one, other) = (replica(), replica());
    let (one_report, other_report) = tokio::join!(one.resume_unclaimed(), other.resume_unclaimed());
    let reports = [one_report.expect("resume"), other_report.expect("resume")];
    let resumed: usize = reports.iter().map(|report| report.resumed).sum();
    assert_eq!(resumed, 1, "{reports:?}");
    let reader = Replica::start(store, &storage).await;
    assert_resumed(&reader.client(&api_key), &storage, &dataset_id, &file).await;
    for datasets in [one, other] {
        datasets.stop().await;
    }
    reader.stop().await;
}

/// A dataset left mid-processing whose file cannot be had again ends FAILED, saying so: one
/// sent whole in a request that was cut, and one whose parts were removed. So does one whose
/// processing died with its replica too many times.
#[tokio::test]
async fn abandoned_datasets_without_their_file_are_marked_failed() {
    let storage = TestStorage::start(Storage::Local).await.expect("local");
    let (database, server) = first_replica(Backend::Sqlite, &storage).await;
    let api_key = server.api_key.clone();
    let session_id = Client::admin(&server).upload_parts(&jsonl(10), 512).await;
    let poisonous_session = Client::admin(&server).upload_parts(&jsonl(3), 512).await;
    server.stop().await;
    let store = database.store().await;
    leave_crash_state(&store, &storage, "cut-request", None).await;
    let poisonous =
        leave_crash_state(&store, &storage, "poisonous", Some(&poisonous_session)).await;
    sqlx::query("UPDATE datasets SET expired_claims = 5 WHERE id = $1")
        .bind(&poisonous)
        .execute(&store.raw_pool_for_tests())
        .await
        .expect("five crashes before");
    leave_crash_state(&store, &storage, "parts-removed", Some(&session_id)).await;
    let parts = storage.model_storage().objects().expect("objects");
    parts
        .object_store()
        .delete(&parts.path(&format!(".uploads/{session_id}/2")))
        .await
        .expect("remove a part");

    let uploads = Uploads::new(
        store.clone(),
        storage.model_storage(),
        UploadLimits::default(),
    );
    let datasets = Datasets::new(store.clone(), storage.model_storage(), uploads);
    let report = datasets.resume_unclaimed().await.expect("resume");
    assert_eq!(
        report,
        ResumeReport {
            resumed: 1,
            failed: 2,
            deferred: 0
        }
    );
    let reader = Replica::start(store, &storage).await;
    let client = reader.client(&api_key);
    for key in ["cut-request", "parts-removed"] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let failed = loop {
            let described = client.status_of(key).await;
            if described["status"] != "PROCESSING" {
                break described;
            }
            assert!(tokio::time::Instant::now() < deadline, "{key}: {described}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(failed["status"], "FAILED", "{key}: {failed}");
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(error.contains("upload the file again"), "{key}: {error}");
        assert!(error.contains("gone"), "{key}: {error}");
    }
    let poisoned = client.status_of("poisonous").await;
    assert_eq!(poisoned["status"], "FAILED", "{poisoned}");
    let error = poisoned["error"].as_str().unwrap_or_default();
    assert!(error.contains("interrupted 6 times"), "{error}");
    wait_for(
        "the remaining parts to be removed",
        Duration::from_secs(10),
        || async { storage.objects_under(".uploads").await == 0 },
    )
    .await;
    datasets.stop().await;
    reader.stop().await;
}
