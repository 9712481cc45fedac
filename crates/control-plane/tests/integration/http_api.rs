//! The HTTP surfaces over a real server on port 0 (SQLite; the store suite covers PostgreSQL).

use std::collections::BTreeSet;

use adaptive_control_plane::http::openapi;
use serde_json::{json, Value};

use crate::harness::{Backend, TestDatabase, TestServer};

async fn server() -> (TestDatabase, TestServer) {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let store = database.store().await;
    (database, TestServer::start(store).await)
}

fn register_body(pool: &str, partition: &str, ordinal: u32, models: &[&str]) -> Value {
    json!({
        "group": pool,
        "partition_key": partition,
        "ordinal": ordinal,
        "gpu_count": 2,
        "gpu_types": ["NVIDIA H100"],
        "advertised_url": format!("http://{partition}-{ordinal}:50053"),
        "status": "ONLINE",
        "online_models": models.iter().map(|key| json!({"key": key, "path": format!("model_registry://{key}"), "max_seq_len": 4096})).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn health_ready_and_every_documented_route_answers() {
    let (_database, server) = server().await;
    let client = reqwest::Client::new();
    let health = client
        .get(server.public_url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
    let ready: Value = client
        .get(server.public_url("/ready"))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(ready, json!({"status": "ready", "store": "sqlite"}));

    let document: Value = client
        .get(server.public_url("/api/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let documented: BTreeSet<String> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .as_object()
                .expect("methods")
                .keys()
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    let routed: BTreeSet<String> = openapi::REST_ROUTES
        .iter()
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    assert_eq!(documented, routed, "the document lists exactly the routes");
    for (method, path, port) in openapi::REST_ROUTES {
        let url = match *port {
            "internal" => server.internal_url(path),
            _ => server.public_url(path),
        };
        let response = match *method {
            "get" => client.get(&url).send().await,
            "delete" => client.delete(&url).send().await,
            _ => client.post(&url).json(&json!({})).send().await,
        }
        .expect("request");
        assert_ne!(response.status().as_u16(), 404, "{method} {path} is routed");
        assert_ne!(
            response.status().as_u16(),
            405,
            "{method} {path} accepts {method}"
        );
    }
    let unknown = client
        .get(server.public_url("/nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status().as_u16(), 404);
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
    server.stop().await;
}

#[tokio::test]
async fn malformed_input_gets_our_error_body() {
    let (_database, server) = server().await;
    let client = reqwest::Client::new();
    for body in ["not json", "{\"group\": \"pool\"}", "{\"group\": 3}"] {
        let response = client
            .post(server.internal_url("/internal/harmony/register"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "invalid_request", "{body}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    let empty_group = client
        .post(server.internal_url("/internal/harmony/register"))
        .json(&register_body("", "p", 0, &[]))
        .send()
        .await
        .expect("request");
    assert_eq!(empty_group.status().as_u16(), 400);
    server.stop().await;
}

#[tokio::test]
async fn graphql_requires_a_valid_api_key() {
    let (_database, server) = server().await;
    let client = reqwest::Client::new();
    let query = json!({"query": "{ me { email } }"});
    let anonymous = client
        .post(server.public_url("/api/graphql"))
        .json(&query)
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthenticated");
    let wrong = client
        .post(server.public_url("/api/graphql"))
        .bearer_auth("ak_not-a-key")
        .json(&query)
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    let malformed = client
        .post(server.public_url("/api/graphql"))
        .bearer_auth(&server.api_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(malformed.status().as_u16(), 400, "a body that is not JSON");
    let body: Value = malformed.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_request");
    let me = server
        .graphql("{ me { email teams { role { key } } } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["email"], "admin@localhost");
    assert_eq!(me["data"]["me"]["teams"][0]["role"]["key"], "admin");
    server.stop().await;
}

#[tokio::test]
async fn graphql_errors_carry_a_stable_code() {
    let (_database, server) = server().await;
    let missing = server
        .graphql(
            "mutation($p: IdOrKey!) { createMetric(project: $p, input: {name: \"m\", kind: SCALAR}) { id } }",
            json!({"p": "no-such-project"}),
        )
        .await;
    assert_eq!(
        missing["errors"][0]["extensions"]["code"], "not_found",
        "{missing}"
    );
    assert_eq!(
        missing["errors"][0]["message"],
        "project 'no-such-project' not found"
    );

    server
        .graphql(
            "mutation { createProject(input: {name: \"P\", key: \"p\"}) { id } }",
            json!({}),
        )
        .await;
    let duplicate = server
        .graphql(
            "mutation { createProject(input: {name: \"P\", key: \"p\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        duplicate["errors"][0]["extensions"]["code"], "already_exists",
        "{duplicate}"
    );

    let invalid = server
        .graphql(
            "mutation { createProject(input: {name: \"P\", key: \"bad key\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        invalid["errors"][0]["extensions"]["code"], "invalid_request",
        "{invalid}"
    );

    server.graphql_register_pool("gpu").await;
    let resize = server
        .graphql(
            "mutation { resizeInferencePartition(input: {computePool: \"gpu\", size: 2}) }",
            json!({}),
        )
        .await;
    assert_eq!(
        resize["errors"][0]["extensions"]["code"], "not_supported",
        "{resize}"
    );
    let message = resize["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not supported on pool 'gpu'"), "{message}");
    server.stop().await;
}

impl TestServer {
    async fn graphql_register_pool(&self, pool: &str) -> Value {
        reqwest::Client::new()
            .post(self.internal_url("/internal/harmony/register"))
            .json(&register_body(pool, &format!("{pool}-partition"), 0, &[]))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("json")
    }
}

#[tokio::test]
async fn registration_answers_the_models_deployed_to_the_pool() {
    let (_database, server) = server().await;
    let client = reqwest::Client::new();
    let first = server.graphql_register_pool("gpu").await;
    assert_eq!(first["replica_id"], "gpu-partition-0");
    assert_eq!(first["desired_models"], json!([]));
    assert_eq!(first["heartbeat_interval_ms"], 1000);
    server.graphql_register_pool("cpu").await;

    let setup = server
        .graphql(
            "mutation {
                createProject(input: {name: \"P\", key: \"p\"}) { id }
                addModel(input: {path: \"model_registry://m\", name: \"M\", key: \"m\"}) { key }
            }",
            json!({}),
        )
        .await;
    assert!(setup["errors"].is_null(), "{setup}");
    let deployed = server
        .graphql(
            "mutation { deployModel(input: {project: \"p\", model: \"m\", placement: {computePools: [\"gpu\"]}}) { modelService { desiredOnline } warnings } }",
            json!({}),
        )
        .await;
    assert_eq!(
        deployed["data"]["deployModel"]["modelService"]["desiredOnline"], true,
        "{deployed}"
    );

    let gpu: Value = client
        .post(server.internal_url("/internal/harmony/register"))
        .json(&register_body("gpu", "gpu-partition", 0, &["m"]))
        .send()
        .await
        .expect("heartbeat")
        .json()
        .await
        .expect("json");
    assert_eq!(
        gpu["desired_models"],
        json!([{"key": "m", "path": "model_registry://m", "max_seq_len": 8192, "kv_cache_len": 8192}])
    );
    let cpu = server.graphql_register_pool("cpu").await;
    assert_eq!(
        cpu["desired_models"],
        json!([]),
        "placement excludes the cpu pool"
    );

    let pools = server
        .graphql(
            "{ computePools { key harmonyGroups { key status worldSize gpuTypes onlineModels { key online } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        pools["data"]["computePools"],
        json!([
            {"key": "cpu", "harmonyGroups": [{"key": "cpu-partition", "status": "ONLINE", "worldSize": 2, "gpuTypes": "NVIDIA H100", "onlineModels": []}]},
            {"key": "gpu", "harmonyGroups": [{"key": "gpu-partition", "status": "ONLINE", "worldSize": 2, "gpuTypes": "NVIDIA H100", "onlineModels": [{"key": "m", "online": "ONLINE"}]}]}
        ]),
        "{pools}"
    );

    let removed: Value = client
        .post(server.internal_url("/internal/harmony/deregister"))
        .json(&json!({"partition_key": "gpu-partition", "ordinal": 0}))
        .send()
        .await
        .expect("deregister")
        .json()
        .await
        .expect("json");
    assert_eq!(removed, json!({"removed": true}));
    let model = server
        .graphql("{ model(idOrKey: \"m\") { online } }", json!({}))
        .await;
    assert_eq!(
        model["data"]["model"]["online"], "PENDING",
        "deployed but no replica serves it"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_reports_public_requests() {
    let (_database, server) = server().await;
    let client = reqwest::Client::new();
    client
        .get(server.public_url("/health"))
        .send()
        .await
        .expect("health");
    let metrics = client
        .get(server.internal_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = metrics
        .lines()
        .find(|line| line.starts_with("concorde_http_server_request_duration_seconds_count"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.contains("http_route=\"/health\""), "{line}");
    assert!(line.contains("http_response_status_code=\"200\""), "{line}");
    server.stop().await;
}
