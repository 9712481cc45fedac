//! Models in projects: attach, deploy, default and resolution, placement on compute pools,
//! termination and deletion.

use adaptive_control_plane::store::{DeployRequest, ModelServiceUpdate, Placement, StoreError};

use super::{model, project, setup};
use crate::harness::Backend;

conformance!(
    models_are_attached_deployed_and_resolved,
    placement_selects_the_desired_models_of_a_pool,
    terminate_needs_force_when_deployed_in_several_projects,
    deleting_a_model_is_refused_while_deployed,
);

async fn models_are_attached_deployed_and_resolved(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let project = project(&store, "chat").await;
    let first = model(&store, "small").await;
    let second = model(&store, "large").await;

    let attached = store.attach_model("chat", "small").await.expect("attach");
    assert!(
        attached.is_default,
        "the first model of a project is its default"
    );
    assert!(!attached.desired_online, "attaching does not deploy");
    let again = store
        .attach_model("chat", "small")
        .await
        .expect("attach again");
    assert_eq!(again.id, attached.id, "attach is idempotent");

    store
        .ensure_compute_pool("gpu", "GPU pool")
        .await
        .expect("pool");
    let deployed = store
        .deploy_model(DeployRequest {
            project: "chat".to_owned(),
            model: "large".to_owned(),
            placement: Some(Placement {
                compute_pools: vec!["gpu".to_owned()],
                max_ttft_ms: Some(500),
            }),
        })
        .await
        .expect("deploy");
    assert!(deployed.desired_online);
    assert!(!deployed.is_default);

    let by_project = store.resolve_model_service("chat").await.expect("default");
    assert_eq!(by_project.model_key, "small");
    assert_eq!(by_project.model_path, first.path);
    assert!(by_project.is_default);
    let explicit = store
        .resolve_model_service("chat/large")
        .await
        .expect("explicit");
    assert_eq!(explicit.model_id, second.id);
    assert_eq!(explicit.project_id, project.id);
    assert_eq!(explicit.placement.compute_pools, vec!["gpu".to_owned()]);
    assert_eq!(explicit.placement.max_ttft_ms, Some(500));
    assert!(explicit.desired_online);

    let updated = store
        .update_model_service(ModelServiceUpdate {
            project: "chat".to_owned(),
            model_service: "large".to_owned(),
            is_default: Some(true),
            system_prompt_template: Some("You are {{ name }}".to_owned()),
            ..ModelServiceUpdate::default()
        })
        .await
        .expect("update");
    assert!(updated.is_default);
    assert_eq!(
        store
            .resolve_model_service("chat")
            .await
            .expect("default")
            .model_key,
        "large"
    );
    let defaults = store
        .list_model_services(&project.id)
        .await
        .expect("services")
        .iter()
        .filter(|service| service.is_default)
        .count();
    assert_eq!(defaults, 1, "one default per project");

    for bad in ["", "/x", "chat/", "chat/unknown", "unknown"] {
        assert!(store.resolve_model_service(bad).await.is_err(), "{bad}");
    }
    let unknown_pool = store
        .deploy_model(DeployRequest {
            project: "chat".to_owned(),
            model: "small".to_owned(),
            placement: Some(Placement {
                compute_pools: vec!["nowhere".to_owned()],
                max_ttft_ms: None,
            }),
        })
        .await;
    assert!(
        matches!(unknown_pool, Err(StoreError::NotFound { .. })),
        "{unknown_pool:?}"
    );

    assert!(store
        .remove_model_from_project("chat", "small")
        .await
        .expect("remove"));
    assert!(!store
        .remove_model_from_project("chat", "small")
        .await
        .expect("remove again"));
    store.close().await;
}

async fn placement_selects_the_desired_models_of_a_pool(backend: Backend) {
    let (_database, store) = setup(backend).await;
    project(&store, "a").await;
    project(&store, "b").await;
    model(&store, "everywhere").await;
    model(&store, "gpu-only").await;
    model(&store, "attached-only").await;
    store.ensure_compute_pool("gpu", "gpu").await.expect("pool");
    store.ensure_compute_pool("cpu", "cpu").await.expect("pool");
    for (project, model, pools) in [
        ("a", "everywhere", vec![]),
        ("b", "everywhere", vec!["cpu".to_owned()]),
        ("a", "gpu-only", vec!["gpu".to_owned()]),
    ] {
        store
            .deploy_model(DeployRequest {
                project: project.to_owned(),
                model: model.to_owned(),
                placement: Some(Placement {
                    compute_pools: pools,
                    max_ttft_ms: None,
                }),
            })
            .await
            .expect("deploy");
    }
    store
        .attach_model("b", "attached-only")
        .await
        .expect("attach");
    let keys = |models: Vec<adaptive_control_plane::store::Model>| -> Vec<String> {
        models.into_iter().map(|model| model.key).collect()
    };
    assert_eq!(
        keys(store.desired_models_for_pool("gpu").await.expect("gpu")),
        vec!["everywhere".to_owned(), "gpu-only".to_owned()]
    );
    assert_eq!(
        keys(store.desired_models_for_pool("cpu").await.expect("cpu")),
        vec!["everywhere".to_owned()]
    );
    assert_eq!(
        keys(store.desired_models_for_pool("other").await.expect("other")),
        vec!["everywhere".to_owned()],
        "an empty placement means every pool"
    );
    store.close().await;
}

async fn terminate_needs_force_when_deployed_in_several_projects(backend: Backend) {
    let (_database, store) = setup(backend).await;
    project(&store, "a").await;
    project(&store, "b").await;
    model(&store, "shared").await;
    for project in ["a", "b"] {
        store
            .deploy_model(DeployRequest {
                project: project.to_owned(),
                model: "shared".to_owned(),
                placement: None,
            })
            .await
            .expect("deploy");
    }
    let refused = store.terminate_model("shared", false).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.terminate_model("shared", true).await.expect("force"),
        2
    );
    assert!(store
        .desired_models_for_pool("any")
        .await
        .expect("desired")
        .is_empty());
    store.close().await;
}

async fn deleting_a_model_is_refused_while_deployed(backend: Backend) {
    let (_database, store) = setup(backend).await;
    project(&store, "alpha").await;
    project(&store, "beta").await;
    let deployed = model(&store, "deployed").await;
    store
        .deploy_model(DeployRequest {
            project: "beta".to_owned(),
            model: "deployed".to_owned(),
            placement: None,
        })
        .await
        .expect("deploy");
    store
        .attach_model("alpha", "deployed")
        .await
        .expect("attach");

    let refused = store.delete_model("deployed").await.expect_err("deployed");
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused}");
    assert!(refused.to_string().contains("project(s) beta"), "{refused}");
    assert_eq!(
        store
            .model_projects(&deployed.id)
            .await
            .expect("projects")
            .len(),
        2
    );

    store
        .terminate_model("deployed", false)
        .await
        .expect("terminate");
    let deleted = store.delete_model(&deployed.id).await.expect("delete");
    assert_eq!(deleted.key, "deployed");
    let missing = store.get_model("deployed").await.expect_err("gone");
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
    for project_key in ["alpha", "beta"] {
        let project = store.get_project(project_key).await.expect("project");
        let services = store
            .list_model_services(&project.id)
            .await
            .expect("services");
        assert!(services.is_empty(), "attachments removed with the model");
    }
    let again = store.delete_model("deployed").await.expect_err("gone");
    assert!(matches!(again, StoreError::NotFound { .. }), "{again}");
}
