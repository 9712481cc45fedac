//! Datasets through the API, on SQLite and PostgreSQL, with the GraphQL documents
//! `adaptive-sdk` 0.14 sends: a small file in a GraphQL multipart request, a large one through
//! a chunked upload and `createDatasetFromMultipartUpload` (polled to the end), then list, get,
//! download (original and recipe formats) and delete, the file kept as an object under the
//! registry root. Malformed files are refused (multipart) or end FAILED with the bad line
//! named (chunked); forged file references get 400, not a crash; permissions hold.
//! `metricsUsage` counts scores and comparisons per metric of the project.
//! Resumable processing: [`resume`].

use std::net::SocketAddr;
use std::time::Duration;

use adaptive_control_plane::datasets::Datasets;
use adaptive_control_plane::uploads::UploadLimits;
use serde_json::{json, Value};

use crate::harness::{wait_for, Backend, TestDatabase, TestServer};
use crate::uploads::{Storage, TestStorage};

mod resume;

const DATASET_FRAGMENTS: &str = r#"
fragment DatasetData on Dataset {
  id
  key
  name
  createdAt
  kind
  records
  downloadUrl
  metricsUsage {
    scoreCount
    comparisonCount
    metric {
      ...MetricData
    }
  }
}

fragment MetricData on Metric {
  id
  key
  name
  kind
  description
  scoringType
  createdAt
  hasDirectScores
  hasComparisonScores
}
"#;

fn load_dataset_document() -> String {
    format!(
        "mutation LoadDataset($input: DatasetCreate!, $file: Upload!) {{\n  createDataset(input: $input, file: $file) {{\n    ...DatasetData\n  }}\n}}\n{DATASET_FRAGMENTS}"
    )
}

fn list_datasets_document() -> String {
    format!(
        "query ListDatasets($input: IdOrKey!) {{\n  datasets(project: $input) {{\n    ...DatasetData\n  }}\n}}\n{DATASET_FRAGMENTS}"
    )
}

fn describe_dataset_document() -> String {
    format!(
        "query DescribeDataset($input: IdOrKey!, $project: IdOrKey!) {{\n  dataset(idOrKey: $input, project: $project) {{\n    ...DatasetData\n  }}\n}}\n{DATASET_FRAGMENTS}"
    )
}

const CREATE_FROM_UPLOAD: &str = "mutation CreateDatasetFromMultipartUpload($input: DatasetCreateFromMultipartUpload!) {\n  createDatasetFromMultipartUpload(input: $input) {\n    datasetId\n    status\n    progress\n    error\n  }\n}";
const PROCESSING_STATUS: &str = "query DatasetUploadProcessingStatus($input: DatasetUploadProcessingStatusInput!) {\n  datasetUploadProcessingStatus(input: $input) {\n    datasetId\n    status\n    progress\n    error\n  }\n}";
const DELETE_DATASET: &str = "mutation DeleteDataset($idOrKey: IdOrKey!, $project: IdOrKey!) {\n  deleteDataset(idOrKey: $idOrKey, project: $project)\n}";

const PROJECT: &str = "datasets";

fn record(index: usize) -> String {
    json!({
        "messages": [
            {"role": "system", "content": "answer briefly"},
            {"role": "user", "content": format!("what is {index} + {index}?")}
        ],
        "completion": format!("{}", index * 2),
        "labels": {"index": index.to_string()}
    })
    .to_string()
}

fn jsonl(records: usize) -> Vec<u8> {
    let mut file = String::new();
    for index in 0..records {
        file.push_str(&record(index));
        file.push('\n');
    }
    file.into_bytes()
}

/// `completions` records scored on `quality` (every one), `helpful` (every other one) and
/// `unregistered` (every third one), then `preferences` preferences on `quality` and one that
/// names no metric.
fn scored_jsonl(completions: usize, preferences: usize) -> Vec<u8> {
    let mut file = String::new();
    for index in 0..completions {
        let mut scores = json!({"quality": index as f64 / 10.0});
        if index % 2 == 0 {
            scores["helpful"] = json!(true);
        }
        if index % 3 == 0 {
            scores["unregistered"] = json!(1);
        }
        let line = json!({
            "messages": [{"role": "user", "content": format!("what is {index} + {index}?")}],
            "completion": format!("{}", index * 2),
            "metrics": scores
        });
        file.push_str(&line.to_string());
        file.push('\n');
    }
    for index in 0..=preferences {
        let mut line = json!({
            "messages": [{"role": "user", "content": format!("what is {index} * 2?")}],
            "preferred_completion": format!("{}", index * 2),
            "other_completion": "no idea"
        });
        if index < preferences {
            line["metric"] = json!("quality");
        }
        file.push_str(&line.to_string());
        file.push('\n');
    }
    file.into_bytes()
}

/// `metricsUsage` as (metric key, scoreCount, comparisonCount).
fn usage_counts(dataset: &Value) -> Vec<(String, i64, i64)> {
    dataset["metricsUsage"]
        .as_array()
        .unwrap_or_else(|| panic!("metricsUsage: {dataset}"))
        .iter()
        .map(|usage| {
            (
                usage["metric"]["key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                usage["scoreCount"].as_i64().unwrap_or(-1),
                usage["comparisonCount"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

async fn create_metric(server: &TestServer, key: &str, kind: &str) {
    let created = server
        .graphql(
            &format!("mutation($project: IdOrKey!, $key: String) {{ createMetric(project: $project, input: {{name: $key, key: $key, kind: {kind}}}) {{ key }} }}"),
            json!({"project": PROJECT, "key": key}),
        )
        .await;
    assert!(created["errors"].is_null(), "{created}");
}

/// A GraphQL multipart request (operations, map, one file), as the SDK's httpx sends it.
fn multipart(operations: &Value, file_name: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "dataset-test-boundary-5b0c3e";
    let mut body = Vec::new();
    let mut part = |disposition: String, content_type: Option<&str>, value: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; {disposition}\r\n").as_bytes(),
        );
        if let Some(content_type) = content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    };
    part(
        "name=\"operations\"".to_owned(),
        None,
        operations.to_string().as_bytes(),
    );
    part(
        "name=\"map\"".to_owned(),
        None,
        json!({"0": ["variables.file"]}).to_string().as_bytes(),
    );
    part(
        format!("name=\"0\"; filename=\"{file_name}\""),
        Some("application/jsonl"),
        file,
    );
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A client of one control plane (its public address).
struct Client {
    public: SocketAddr,
    api_key: String,
    http: reqwest::Client,
}

impl Client {
    fn admin(server: &TestServer) -> Self {
        Self::at(server.public, &server.api_key)
    }

    /// With `api_key`, of the control plane serving on `public`.
    fn at(public: SocketAddr, api_key: &str) -> Self {
        Self {
            public,
            api_key: api_key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A new user holding `role` in a team the project is shared with.
    async fn project_user(server: &TestServer, name: &str, role: &str) -> Self {
        let api_key = server.service_account_key(name, "dsteam", role).await;
        Self::at(server.public, &api_key)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(self.url("/api/graphql"))
            .bearer_auth(&self.api_key)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json body")
    }

    /// `createDataset` with the file in a multipart request: (HTTP status, body).
    async fn upload_small(&self, key: &str, file: &[u8]) -> (u16, Value) {
        let operations = json!({
            "query": load_dataset_document(),
            "operationName": "LoadDataset",
            "variables": {"input": {"project": PROJECT, "name": format!("{key} name"), "key": key}, "file": null}
        });
        let (content_type, body) = multipart(&operations, key, file);
        let response = self
            .http
            .post(self.url("/api/graphql"))
            .bearer_auth(&self.api_key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// The SDK's chunked path: init, parts, createDatasetFromMultipartUpload; returns its answer.
    async fn upload_chunked(&self, key: &str, file: &[u8], part_bytes: usize) -> Value {
        let session_id = self.upload_parts(file, part_bytes).await;
        self.create_from_upload(key, &session_id).await
    }

    /// Aborts an upload session as the SDK does (DELETE with a JSON body): status and body.
    async fn abort_upload(&self, session_id: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(self.url("/api/v1/upload/abort"))
            .bearer_auth(&self.api_key)
            .header("content-type", "application/json")
            .body(json!({"session_id": session_id}).to_string())
            .send()
            .await
            .expect("abort");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The first steps of the chunked path: init and every part; returns the session id.
    async fn upload_parts(&self, file: &[u8], part_bytes: usize) -> String {
        let parts: Vec<&[u8]> = file.chunks(part_bytes).collect();
        let init: Value = self
            .http
            .post(self.url("/api/v1/upload/init"))
            .bearer_auth(&self.api_key)
            .json(&json!({"content_type": "application/jsonl", "metadata": null, "total_parts_count": parts.len()}))
            .send()
            .await
            .expect("init")
            .json()
            .await
            .expect("json");
        let session_id = init["session_id"].as_str().expect("session_id").to_owned();
        for (index, part) in parts.iter().enumerate() {
            let response = self
                .http
                .post(self.url("/api/v1/upload/part"))
                .bearer_auth(&self.api_key)
                .query(&[
                    ("session_id", session_id.clone()),
                    ("part_number", (index + 1).to_string()),
                ])
                .header("content-type", "application/octet-stream")
                .body(part.to_vec())
                .send()
                .await
                .expect("part");
            assert_eq!(response.status().as_u16(), 200, "part {}", index + 1);
        }
        session_id
    }

    /// `createDatasetFromMultipartUpload` of a session whose parts are all sent.
    async fn create_from_upload(&self, key: &str, session_id: &str) -> Value {
        let created = self
            .graphql(
                CREATE_FROM_UPLOAD,
                json!({"input": {"project": PROJECT, "name": format!("{key} name"), "key": key, "uploadSessionId": session_id}}),
            )
            .await;
        assert!(created["errors"].is_null(), "{created}");
        created["data"]["createDatasetFromMultipartUpload"].clone()
    }

    /// Polls `datasetUploadProcessingStatus` until it is not PENDING, as the SDK does.
    async fn wait_processed(&self, dataset_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let polled = self
                .graphql(
                    PROCESSING_STATUS,
                    json!({"input": {"project": PROJECT, "datasetId": dataset_id}}),
                )
                .await;
            assert!(polled["errors"].is_null(), "{polled}");
            let status = &polled["data"]["datasetUploadProcessingStatus"];
            if status["status"] != "PENDING" {
                return status.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the dataset to be processed: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn describe(&self, id_or_key: &str) -> Value {
        let described = self
            .graphql(
                &describe_dataset_document(),
                json!({"input": id_or_key, "project": PROJECT}),
            )
            .await;
        assert!(described["errors"].is_null(), "{described}");
        described["data"]["dataset"].clone()
    }

    /// The dataset's `status` and `error`.
    async fn status_of(&self, id_or_key: &str) -> Value {
        let described = self
            .graphql(
                "query($id: IdOrKey!, $project: IdOrKey!) { dataset(idOrKey: $id, project: $project) { status error } }",
                json!({"id": id_or_key, "project": PROJECT}),
            )
            .await;
        assert!(described["errors"].is_null(), "{described}");
        described["data"]["dataset"].clone()
    }

    async fn download(&self, download_url: &str, format: &str) -> (u16, String, Vec<u8>) {
        let response = self
            .http
            .get(self.url(download_url))
            .bearer_auth(&self.api_key)
            .query(&[("format", format)])
            .send()
            .await
            .expect("download");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            status,
            content_type,
            response.bytes().await.expect("body").to_vec(),
        )
    }
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("a GraphQL error: {body}"))
}

fn dataset_objects(server: &TestServer) -> Vec<std::path::PathBuf> {
    let root = server.data_dir().join("shared").join(".datasets");
    let mut found = Vec::new();
    let Ok(projects) = std::fs::read_dir(&root) else {
        return found;
    };
    for project in projects.flatten() {
        for file in std::fs::read_dir(project.path())
            .expect("project dir")
            .flatten()
        {
            found.push(file.path());
        }
    }
    found
}

async fn server_with_project(backend: Backend) -> (TestDatabase, TestServer) {
    let database = TestDatabase::create(backend).await;
    let server = TestServer::start(database.store().await).await;
    create_project(&server).await;
    (database, server)
}

async fn create_project(server: &TestServer) {
    let ok = |body: &Value| assert!(body["errors"].is_null(), "{body}");
    ok(&server
        .graphql(
            "mutation { createTeam(input: {key: \"dsteam\", name: \"Datasets team\"}) { key } }",
            json!({}),
        )
        .await);
    ok(&server
        .graphql(
            "mutation($key: String) { createProject(input: {key: $key, name: \"Datasets\", team: \"dsteam\"}) { key } }",
            json!({"key": PROJECT}),
        )
        .await);
}

/// Both ways in with the registry root on an S3 server: the file is an object there, the
/// session's parts are removed, and deleting removes the object.
#[tokio::test]
async fn s3s_datasets_are_objects_on_s3() {
    let storage = TestStorage::start(Storage::S3sFs)
        .await
        .expect("s3s-fs runs in-process");
    let database = TestDatabase::create(Backend::Sqlite).await;
    let server = TestServer::start_with_model_registry(
        database.store().await,
        UploadLimits::default(),
        storage.model_registry(),
    )
    .await;
    create_project(&server).await;
    let client = Client::admin(&server);

    let (_, body) = client.upload_small("small", &jsonl(5)).await;
    assert!(body["errors"].is_null(), "{body}");
    let large_file = jsonl(3000);
    let created = client.upload_chunked("large", &large_file, 100_000).await;
    let dataset_id = created["datasetId"].as_str().expect("datasetId").to_owned();
    let processed = client.wait_processed(&dataset_id).await;
    assert_eq!(processed["status"], "DONE", "{processed}");
    assert_eq!(storage.objects_under(".datasets").await, 2);
    wait_for(
        "the parts to be removed",
        Duration::from_secs(10),
        || async { storage.objects_under(".uploads").await == 0 },
    )
    .await;
    let large = client.describe(&dataset_id).await;
    let (status, _, bytes) = client
        .download(large["downloadUrl"].as_str().expect("url"), "original")
        .await;
    assert_eq!(status, 200);
    assert_eq!(bytes, large_file);
    for key in ["small", "large"] {
        let deleted = client
            .graphql(DELETE_DATASET, json!({"idOrKey": key, "project": PROJECT}))
            .await;
        assert_eq!(deleted["data"]["deleteDataset"], true, "{deleted}");
    }
    assert_eq!(storage.objects_under(".datasets").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn sqlite_small_and_chunked_uploads_list_get_download_delete() {
    small_and_chunked_uploads_list_get_download_delete(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_small_and_chunked_uploads_list_get_download_delete() {
    small_and_chunked_uploads_list_get_download_delete(Backend::Postgres).await;
}

async fn small_and_chunked_uploads_list_get_download_delete(backend: Backend) {
    let (_database, server) = server_with_project(backend).await;
    let client = Client::admin(&server);

    let small_file = jsonl(20);
    let (status, body) = client.upload_small("small", &small_file).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let small = &body["data"]["createDataset"];
    assert_eq!(small["key"], "small");
    assert_eq!(small["name"], "small name");
    assert_eq!(small["kind"], "PROMPT_COMPLETION");
    assert_eq!(small["records"], 20);
    assert_eq!(small["metricsUsage"], json!([]));
    let small_id = small["id"].as_str().expect("id").to_owned();

    // Parts cut in the middle of records, as the SDK cuts a file.
    let large_file = jsonl(3000);
    let created = client.upload_chunked("large", &large_file, 64 * 1024).await;
    assert_eq!(created["status"], "PENDING", "{created}");
    let large_id = created["datasetId"].as_str().expect("datasetId").to_owned();
    let processed = client.wait_processed(&large_id).await;
    assert_eq!(processed["status"], "DONE", "{processed}");
    assert_eq!(processed["progress"], 1.0);
    assert!(processed["error"].is_null());
    let large = client.describe(&large_id).await;
    assert_eq!(large["key"], "large");
    assert_eq!(large["records"], 3000);
    assert_eq!(large["kind"], "PROMPT_COMPLETION");
    // The session's parts are gone once processed.
    let uploads_dir = server.data_dir().join("model_registry").join(".uploads");
    wait_for(
        "the parts to be removed",
        Duration::from_secs(10),
        || async {
            std::fs::read_dir(&uploads_dir).map_or(true, |mut entries| entries.next().is_none())
        },
    )
    .await;

    let listed = client
        .graphql(&list_datasets_document(), json!({"input": PROJECT}))
        .await;
    let keys: Vec<&str> = listed["data"]["datasets"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|dataset| dataset["key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["small", "large"]);
    assert_eq!(client.describe("small").await["id"], small_id.as_str());
    assert!(client.describe("nonexistent").await.is_null());

    let download_url = large["downloadUrl"].as_str().expect("downloadUrl");
    assert!(
        download_url.starts_with("/api/v1/projects/"),
        "{download_url}"
    );
    let (status, content_type, bytes) = client.download(download_url, "original").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    assert_eq!(bytes, large_file, "the original file, byte for byte");
    let (status, _, recipe) = client
        .download(small["downloadUrl"].as_str().expect("url"), "recipe")
        .await;
    assert_eq!(status, 200);
    let first: Value =
        serde_json::from_slice(recipe.split(|byte| *byte == b'\n').next().expect("a line"))
            .expect("json");
    assert_eq!(
        first,
        json!({"prompt": [["system", "answer briefly"], ["user", "what is 0 + 0?"]], "completion": ["assistant", "0"], "metadata": {"labels": {"index": "0"}}})
    );
    assert_eq!(recipe.iter().filter(|byte| **byte == b'\n').count(), 20);
    let (status, _, body) = client.download(download_url, "parquet").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // A key is the project's once.
    let (_, body) = client.upload_small("small", &small_file).await;
    assert_eq!(error_code(&body), "already_exists", "{body}");

    assert_eq!(dataset_objects(&server).len(), 2);
    let deleted = client
        .graphql(
            DELETE_DATASET,
            json!({"idOrKey": "small", "project": PROJECT}),
        )
        .await;
    assert_eq!(deleted["data"]["deleteDataset"], true, "{deleted}");
    let deleted = client
        .graphql(
            DELETE_DATASET,
            json!({"idOrKey": large_id, "project": PROJECT}),
        )
        .await;
    assert_eq!(deleted["data"]["deleteDataset"], true, "{deleted}");
    assert!(dataset_objects(&server).is_empty());
    assert!(client.describe("small").await.is_null());
    let again = client
        .graphql(
            DELETE_DATASET,
            json!({"idOrKey": "small", "project": PROJECT}),
        )
        .await;
    assert_eq!(error_code(&again), "not_found", "{again}");
    let (status, _, _) = client.download(download_url, "original").await;
    assert_eq!(status, 404);

    // Scores and preferences are counted per metric of the project, on both ways in.
    create_metric(&server, "quality", "SCALAR").await;
    create_metric(&server, "helpful", "BOOL").await;
    let scored_file = scored_jsonl(600, 150);
    let created = client
        .upload_chunked("scored", &scored_file, 16 * 1024)
        .await;
    let scored_id = created["datasetId"].as_str().expect("datasetId").to_owned();
    let processed = client.wait_processed(&scored_id).await;
    assert_eq!(processed["status"], "DONE", "{processed}");
    let scored = client.describe("scored").await;
    assert_eq!(scored["records"], 751);
    let expected = vec![
        ("helpful".to_owned(), 300, 0),
        ("quality".to_owned(), 600, 150),
    ];
    assert_eq!(usage_counts(&scored), expected, "{scored}");
    assert_eq!(scored["metricsUsage"][1]["metric"]["kind"], "SCALAR");
    let (_, body) = client
        .upload_small("scored-small", &scored_jsonl(6, 2))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(
        usage_counts(&body["data"]["createDataset"]),
        [("helpful".to_owned(), 3, 0), ("quality".to_owned(), 6, 2)]
    );
    // A key no metric of the project has is counted all the same, and shows once it has one.
    create_metric(&server, "unregistered", "SCALAR").await;
    let mut expected_now = expected;
    expected_now.push(("unregistered".to_owned(), 200, 0));
    assert_eq!(usage_counts(&client.describe("scored").await), expected_now);
    server.stop().await;
}

#[tokio::test]
async fn sqlite_malformed_files_are_refused_or_fail_with_the_line() {
    malformed_files_are_refused_or_fail_with_the_line(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_malformed_files_are_refused_or_fail_with_the_line() {
    malformed_files_are_refused_or_fail_with_the_line(Backend::Postgres).await;
}

async fn malformed_files_are_refused_or_fail_with_the_line(backend: Backend) {
    let (_database, server) = server_with_project(backend).await;
    let client = Client::admin(&server);

    let mut bad_file = jsonl(3);
    bad_file.extend_from_slice(b"{\"messages\": \"not a list\"}\n");
    let (status, body) = client.upload_small("bad", &bad_file).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(error_code(&body), "invalid_request", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("messages"), "{message}");
    assert!(client.describe("bad").await.is_null(), "nothing kept");
    assert!(dataset_objects(&server).is_empty(), "no object kept");
    let (_, body) = client.upload_small("empty", b"\n\n").await;
    assert_eq!(error_code(&body), "invalid_request", "{body}");

    // The chunked path answers first and fails during processing.
    let mut bad_large = jsonl(2000);
    bad_large.extend_from_slice(b"not json at all\n");
    let created = client.upload_chunked("bad-large", &bad_large, 50_000).await;
    let dataset_id = created["datasetId"].as_str().expect("datasetId").to_owned();
    let processed = client.wait_processed(&dataset_id).await;
    assert_eq!(processed["status"], "ERROR", "{processed}");
    let error = processed["error"].as_str().unwrap_or_default();
    assert!(error.contains("line 2001"), "{error}");
    assert!(dataset_objects(&server).is_empty(), "no object kept");
    let failed = client
        .graphql(
            "query($id: IdOrKey!, $project: IdOrKey!) { dataset(idOrKey: $id, project: $project) { status error } }",
            json!({"id": dataset_id, "project": PROJECT}),
        )
        .await;
    assert_eq!(failed["data"]["dataset"]["status"], "FAILED", "{failed}");
    // A failed dataset gives its key up to the next upload.
    let (_, body) = client.upload_small("bad-large", &jsonl(2)).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["createDataset"]["records"], 2);

    // An incomplete or unknown session is refused at once.
    let unknown = client
        .graphql(
            CREATE_FROM_UPLOAD,
            json!({"input": {"project": PROJECT, "name": "x", "key": "x", "uploadSessionId": "00000000-0000-0000-0000-000000000000"}}),
        )
        .await;
    assert_eq!(error_code(&unknown), "not_found", "{unknown}");
    assert!(client.describe("x").await.is_null());
    server.stop().await;
}

/// File references written by the client instead of the multipart machinery.
#[tokio::test]
async fn forged_file_references_are_refused_without_a_crash() {
    let (_database, server) = server_with_project(Backend::Sqlite).await;
    let client = Client::admin(&server);
    let mutation = "mutation($input: DatasetCreate!, $file: Upload!) { createDataset(input: $input, file: $file) { id } }";
    let input = json!({"project": PROJECT, "name": "forged"});
    for file in [
        "#__graphql_file__:0",
        "#__graphql_file__:7",
        "#__graphql_file__:x",
        "#__graphql_file__:99999999999999999999999",
    ] {
        let response = client
            .http
            .post(server.public_url("/api/graphql"))
            .bearer_auth(&client.api_key)
            .json(&json!({"query": mutation, "variables": {"input": input, "file": file}}))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        let code = body["error"]["code"]
            .as_str()
            .or_else(|| body["errors"][0]["extensions"]["code"].as_str());
        assert_eq!(code, Some("invalid_request"), "{file}: {status} {body}");
    }
    let literal = "mutation { createDataset(input: {project: \"datasets\", name: \"forged\"}, file: \"\\u0023__graphql_file__:x\") { id } }";
    let response = client
        .http
        .post(server.public_url("/api/graphql"))
        .bearer_auth(&client.api_key)
        .json(&json!({"query": literal}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    // A multipart body that is not one.
    let response = client
        .http
        .post(server.public_url("/api/graphql"))
        .bearer_auth(&client.api_key)
        .header("content-type", "multipart/form-data; boundary=nope")
        .body("garbage")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    // The server is still there.
    let listed = client
        .graphql(&list_datasets_document(), json!({"input": PROJECT}))
        .await;
    assert_eq!(listed["data"]["datasets"], json!([]), "{listed}");
    server.stop().await;
}

#[tokio::test]
async fn readers_list_and_download_but_do_not_upload() {
    let (_database, server) = server_with_project(Backend::Sqlite).await;
    let admin = Client::admin(&server);
    let (_, body) = admin.upload_small("shared", &jsonl(2)).await;
    assert!(body["errors"].is_null(), "{body}");
    let download_url = body["data"]["createDataset"]["downloadUrl"]
        .as_str()
        .expect("url")
        .to_owned();
    let reader = Client::project_user(&server, "ds-reader", "read-only").await;
    let listed = reader
        .graphql(&list_datasets_document(), json!({"input": PROJECT}))
        .await;
    assert_eq!(listed["data"]["datasets"][0]["key"], "shared", "{listed}");
    let (status, _, bytes) = reader.download(&download_url, "original").await;
    assert_eq!((status, bytes), (200, jsonl(2)));
    let (_, body) = reader.upload_small("mine", &jsonl(1)).await;
    assert_eq!(error_code(&body), "permission_denied", "{body}");
    let deleted = reader
        .graphql(
            DELETE_DATASET,
            json!({"idOrKey": "shared", "project": PROJECT}),
        )
        .await;
    assert_eq!(error_code(&deleted), "permission_denied", "{deleted}");

    // Someone outside the project sees nothing of it.
    let outsider_created = server
        .graphql(
            "mutation($input: UserCreate!) { createUser(input: $input) { generatedApiKey } }",
            json!({"input": {"name": "ds-outsider", "teams": [{"team": "default", "role": "admin"}], "userType": "SYSTEM", "generateApiKey": true}}),
        )
        .await;
    let outsider_key = outsider_created["data"]["createUser"]["generatedApiKey"]
        .as_str()
        .expect("key");
    let response = reqwest::Client::new()
        .get(server.public_url(&download_url))
        .bearer_auth(outsider_key)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status().as_u16(), 403);
    server.stop().await;
}
