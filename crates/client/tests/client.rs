//! The client against a real control plane in-process (SQLite, port 0).

use adaptive_api_types::ErrorCode;
use adaptive_client::ControlPlaneClient;
use adaptive_control_plane::config::{Config, Secrets};
use adaptive_control_plane::ControlPlane;

async fn start() -> (
    tempfile::TempDir,
    adaptive_control_plane::RunningControlPlane,
    String,
) {
    let directory = tempfile::tempdir().expect("tempdir");
    let control_plane = ControlPlane::build(Config::for_test(directory.path()), Secrets::default())
        .await
        .expect("build");
    let admin = control_plane
        .bootstrap_admin()
        .await
        .expect("bootstrap")
        .expect("admin");
    let running = control_plane.start().await.expect("start");
    (directory, running, admin.api_key.expose().to_owned())
}

#[tokio::test]
async fn projects_and_models_round_trip() {
    let (_directory, running, api_key) = start().await;
    let client = ControlPlaneClient::new(format!("http://{}", running.public_addr), Some(api_key));
    client.ready().await.expect("ready");
    assert!(client.list_projects().await.expect("list").is_empty());
    let project = client
        .create_project("demo", Some("Demo"), None)
        .await
        .expect("create");
    assert_eq!(project.key, "demo");
    assert_eq!(client.list_projects().await.expect("list"), vec![project]);

    let model = client
        .add_model("/models/tiny.gguf", "Tiny", Some("tiny"))
        .await
        .expect("add");
    assert_eq!(
        (model.key.as_str(), model.online.as_str()),
        ("tiny", "OFFLINE")
    );
    let deployment = client
        .deploy_model("demo", "tiny", &[])
        .await
        .expect("deploy");
    assert!(deployment.desired_online && deployment.is_default);
    assert_eq!(deployment.status, "PENDING", "no replica serves it yet");
    let models = client.list_models().await.expect("models");
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].online, "PENDING");
    assert_eq!(models[0].harmony_url, "/models/tiny.gguf");

    let duplicate = client
        .create_project("demo", None, None)
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Some(ErrorCode::AlreadyExists));
    let missing = client
        .deploy_model("nope", "tiny", &[])
        .await
        .expect_err("missing project");
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
    running.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_unauthenticated() {
    let (_directory, running, _api_key) = start().await;
    let base = format!("http://{}", running.public_addr);
    for key in [None, Some("ak_wrong".to_owned())] {
        let error = ControlPlaneClient::new(base.clone(), key)
            .list_projects()
            .await
            .expect_err("rejected");
        assert_eq!(error.code(), Some(ErrorCode::Unauthenticated));
    }
    running.shutdown().await;
}
