//! Projects: creation, lookup by key or id, unique and derived keys, and key validation.

use adaptive_control_plane::store::{ComputeConfigUpdate, NewModel, NewProject, StoreError};

use super::{model, project, setup};
use crate::harness::Backend;

conformance!(
    projects_are_created_listed_and_unique,
    invalid_keys_are_rejected,
);

async fn projects_are_created_listed_and_unique(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let created = project(&store, "alpha").await;
    project(&store, "beta").await;
    let by_key = store.get_project("alpha").await.expect("by key");
    let by_id = store.get_project(&created.id).await.expect("by id");
    assert_eq!(by_key, created);
    assert_eq!(by_id, created);
    let keys: Vec<String> = store
        .list_projects()
        .await
        .expect("list")
        .into_iter()
        .map(|project| project.key)
        .collect();
    assert_eq!(keys, vec!["alpha".to_owned(), "beta".to_owned()]);
    let duplicate = store
        .create_project(NewProject {
            key: Some("alpha".to_owned()),
            name: "again".to_owned(),
            description: None,
        })
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists { .. })),
        "{duplicate:?}"
    );
    let missing = store.get_project("nope").await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    let derived = store
        .create_project(NewProject {
            key: None,
            name: "My Great Project".to_owned(),
            description: Some("d".to_owned()),
        })
        .await
        .expect("derived key");
    assert_eq!(derived.key, "my-great-project");
    store.close().await;
}

async fn invalid_keys_are_rejected(backend: Backend) {
    let (_database, store) = setup(backend).await;
    for bad in ["", "has space", "slash/inside", &"x".repeat(129)] {
        let result = store
            .create_project(NewProject {
                key: Some(bad.to_owned()),
                name: "n".to_owned(),
                description: None,
            })
            .await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{bad:?}: {result:?}"
        );
    }
    let result = store
        .add_model(NewModel {
            path: String::new(),
            name: "m".to_owned(),
            ..NewModel::default()
        })
        .await;
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    let config = store
        .update_model_compute_config(
            &model(&store, "m").await.key,
            ComputeConfigUpdate {
                tp: Some(0),
                ..ComputeConfigUpdate::default()
            },
        )
        .await;
    assert!(matches!(config, Err(StoreError::Invalid(_))), "{config:?}");
    store.close().await;
}
