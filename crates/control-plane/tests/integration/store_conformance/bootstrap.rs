//! First start: the bootstrap admin, the default project and the local model, each made once.

use adaptive_control_plane::bootstrap;
use adaptive_control_plane::config::{SecretSource, SecretString, Secrets};
use adaptive_control_plane::store::StoreError;

use super::setup;
use crate::harness::Backend;

conformance!(bootstrap_runs_once,);

async fn bootstrap_runs_once(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let secrets = Secrets {
        bootstrap_api_key: Some(SecretSource::Inline(SecretString::new(
            "bootstrap-key-0123456789",
        ))),
        ..Secrets::default()
    };
    let admin = bootstrap::ensure_bootstrap_admin(&store, "default", &secrets)
        .await
        .expect("bootstrap")
        .expect("created on an empty install");
    assert_eq!(admin.api_key.expose(), "bootstrap-key-0123456789");
    let user = store
        .user_for_api_key("bootstrap-key-0123456789")
        .await
        .expect("lookup")
        .expect("admin");
    let memberships = store.user_memberships(&user.id).await.expect("memberships");
    let memberships: Vec<(&str, &str)> = memberships
        .iter()
        .map(|m| (m.team.key.as_str(), m.role.key.as_str()))
        .collect();
    // The admin team makes it an admin everywhere; the default team shows it new projects.
    assert_eq!(memberships, [("admin", "admin"), ("default", "admin")]);
    assert!(
        bootstrap::ensure_bootstrap_admin(&store, "default", &secrets)
            .await
            .expect("again")
            .is_none()
    );

    let created = bootstrap::ensure_default_project(&store, "default")
        .await
        .expect("default project");
    assert_eq!(
        created.map(|project| project.key),
        Some(bootstrap::DEFAULT_PROJECT_KEY.to_owned())
    );
    assert!(bootstrap::ensure_default_project(&store, "default")
        .await
        .expect("again")
        .is_none());

    let (model, service) = bootstrap::register_and_deploy_local_model(
        &store,
        "default",
        "local",
        "/models/local.gguf",
    )
    .await
    .expect("register");
    assert_eq!(model.path, "/models/local.gguf");
    assert!(service.desired_online && service.is_default);
    let (same, _) = bootstrap::register_and_deploy_local_model(
        &store,
        "default",
        "local",
        "/models/local.gguf",
    )
    .await
    .expect("idempotent");
    assert_eq!(same.id, model.id);
    let conflict =
        bootstrap::register_and_deploy_local_model(&store, "default", "local", "/elsewhere.gguf")
            .await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict(_))),
        "{conflict:?}"
    );
    store.close().await;
}
