//! The metadata store conformance suite: every case runs against SQLite and PostgreSQL.
//!
//! One module per domain of the store; each lists its own cases in `conformance!`, which makes
//! a `sqlite` and a `postgres` test of every case, named
//! `store_conformance::<domain>::<backend>::<case>`. The fixtures every domain uses
//! (a fresh store, a project, a model, an interaction) live here.

use adaptive_control_plane::store::{
    ChatMessage, Label, MetadataStore, NewInteraction, NewModel, NewProject,
};

use crate::harness::{Backend, TestDatabase};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(crate::harness::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(crate::harness::Backend::Postgres).await;
                }
            )*
        }
    };
}

mod api_keys;
mod bootstrap;
mod completions;
mod metrics;
mod models;
mod projects;

async fn setup(backend: Backend) -> (TestDatabase, MetadataStore) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    (database, store)
}

async fn project(store: &MetadataStore, key: &str) -> adaptive_control_plane::store::Project {
    store
        .create_project(NewProject {
            key: Some(key.to_owned()),
            name: format!("Project {key}"),
            description: None,
        })
        .await
        .expect("create project")
}

async fn model(store: &MetadataStore, key: &str) -> adaptive_control_plane::store::Model {
    store
        .add_model(NewModel {
            path: format!("model_registry://{key}"),
            name: key.to_owned(),
            key: Some(key.to_owned()),
            ..NewModel::default()
        })
        .await
        .expect("add model")
}

fn interaction(
    project_id: &str,
    model_id: &str,
    id: &str,
    created_at: i64,
    prompt: &str,
) -> NewInteraction {
    NewInteraction {
        id: id.to_owned(),
        project_id: project_id.to_owned(),
        model_service_id: None,
        model_id: Some(model_id.to_owned()),
        chat_messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: prompt.to_owned(),
        }],
        completion: Some(format!("answer to {prompt}")),
        source: "LIVE".to_owned(),
        session_id: Some("session-1".to_owned()),
        created_by: None,
        labels: vec![Label {
            key: "env".to_owned(),
            value: if created_at % 2 == 0 { "prod" } else { "dev" }.to_owned(),
        }],
        metadata: serde_json::json!({"parameters": {"temperature": 0.5}, "timings": {"ttft_ms": 12}}),
        prompt_tokens: 10,
        completion_tokens: 5,
        created_at,
    }
}
