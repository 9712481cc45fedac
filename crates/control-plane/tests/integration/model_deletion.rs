//! Deleting models through the GraphQL API (`deleteModel`), on SQLite and PostgreSQL: refused
//! with `conflict` while a project has the model deployed, and, once allowed, the model's objects
//! in the registry (the control plane's `model_registry`, a local directory here) are removed
//! with it.

use adaptive_registry::{
    import_model, ImportOptions, ImportRequest, ModelKey, Registry, RegistryStore, StoreEnv,
};
use serde_json::{json, Value};

use crate::harness::{Backend, TestDatabase, TestServer};

#[tokio::test]
async fn sqlite_deleting_a_deployed_model_is_refused_then_removes_its_registry_objects() {
    deleting_a_deployed_model_is_refused_then_removes_its_registry_objects(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_deleting_a_deployed_model_is_refused_then_removes_its_registry_objects() {
    deleting_a_deployed_model_is_refused_then_removes_its_registry_objects(Backend::Postgres).await;
}

/// The registry the server deletes from: `<data_dir>/model_registry` by default.
fn server_registry(server: &TestServer) -> Registry {
    let location = server.data_dir().join("model_registry");
    let store = RegistryStore::from_url(&location.display().to_string(), &StoreEnv::default())
        .expect("local registry");
    Registry::new(store)
}

/// A small HF-layout model (the registry accepts any config.json and safetensors bytes).
async fn import_tiny_model(registry: &Registry, key: &str) {
    let source = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        source.path().join("config.json"),
        br#"{"model_type":"llama"}"#,
    )
    .expect("config");
    std::fs::write(source.path().join("model.safetensors"), vec![7u8; 4096]).expect("weights");
    let request = ImportRequest {
        source: source.path().to_path_buf(),
        key: ModelKey::parse(key).expect("key"),
        name: None,
    };
    import_model(registry, &request, &ImportOptions::default())
        .await
        .expect("import");
}

fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("no error")
}

async fn deleting_a_deployed_model_is_refused_then_removes_its_registry_objects(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let server = TestServer::start(database.store().await).await;
    let registry = server_registry(&server);
    import_tiny_model(&registry, "tiny").await;
    let tiny = ModelKey::parse("tiny").expect("key");
    let setup = server
        .graphql(
            "mutation {
                createProject(input: {name: \"P\", key: \"p\"}) { id }
                addModel(input: {path: \"model_registry://tiny\", name: \"Tiny\", key: \"tiny\"}) { key }
            }",
            json!({}),
        )
        .await;
    assert_eq!(setup["data"]["addModel"]["key"], "tiny", "{setup}");
    let deployed = server
        .graphql(
            "mutation { deployModel(input: {project: \"p\", model: \"tiny\"}) { modelService { desiredOnline } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        deployed["data"]["deployModel"]["modelService"]["desiredOnline"], true,
        "{deployed}"
    );

    let delete = "mutation($model: String!) { deleteModel(input: {model: $model}) }";
    let refused = server.graphql(delete, json!({"model": "tiny"})).await;
    assert_eq!(error_code(&refused), "conflict", "{refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("deployed in project(s) p"), "{message}");
    assert!(
        registry.exists(&tiny).await.expect("exists"),
        "objects kept"
    );

    let terminated = server
        .graphql(
            "mutation { terminateModel(idOrKey: \"tiny\", force: false) }",
            json!({}),
        )
        .await;
    assert!(terminated["errors"].is_null(), "{terminated}");
    let deleted = server.graphql(delete, json!({"model": "tiny"})).await;
    assert_eq!(deleted["data"]["deleteModel"], true, "{deleted}");
    assert!(!registry.exists(&tiny).await.expect("exists"));
    assert!(registry.list_models().await.expect("list").is_empty());
    assert!(registry
        .list_unfinished_imports()
        .await
        .expect("list")
        .is_empty());
    let described = server
        .graphql("{ model(idOrKey: \"tiny\") { key } }", json!({}))
        .await;
    assert!(described["data"]["model"].is_null(), "{described}");

    let again = server.graphql(delete, json!({"model": "tiny"})).await;
    assert_eq!(error_code(&again), "not_found", "{again}");
    server.stop().await;
}
