//! The metadata store conformance suite: every case runs against SQLite and PostgreSQL.

use adaptive_control_plane::bootstrap;
use adaptive_control_plane::config::{SecretSource, SecretString, Secrets};
use adaptive_control_plane::store::{
    ChatMessage, CompletionCondition, CompletionFilter, ComputeConfigUpdate, DeployRequest, Label,
    MetadataStore, ModelServiceUpdate, NewInteraction, NewMetric, NewModel, NewProject, NewScore,
    NewUser, NumericComparison, PageRequest, Placement, StoreError, TextField, TextPredicate,
    USER_TYPE_HUMAN,
};
use sqlx::Row;

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

conformance!(
    projects_are_created_listed_and_unique,
    invalid_keys_are_rejected,
    models_are_attached_deployed_and_resolved,
    placement_selects_the_desired_models_of_a_pool,
    terminate_needs_force_when_deployed_in_several_projects,
    deleting_a_model_is_refused_while_deployed,
    interactions_are_inserted_exactly_once,
    completions_are_filtered_and_paginated,
    completion_filters_combine_or_not_scores_and_text,
    scores_are_validated_and_aggregated,
    api_keys_are_stored_hashed,
    metrics_are_shared_between_projects,
    bootstrap_runs_once,
);

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

async fn interactions_are_inserted_exactly_once(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let project = project(&store, "p").await;
    let model = model(&store, "m").await;
    let batch: Vec<NewInteraction> = (0..5)
        .map(|index| {
            interaction(
                &project.id,
                &model.id,
                &uuid::Uuid::new_v4().to_string(),
                1000 + index,
                "hi",
            )
        })
        .collect();
    assert_eq!(store.insert_interactions(&batch).await.expect("insert"), 5);
    assert_eq!(
        store.insert_interactions(&batch).await.expect("retry"),
        0,
        "a retried batch adds nothing"
    );
    let mut overlapping = batch[3..].to_vec();
    overlapping.push(interaction(
        &project.id,
        &model.id,
        &uuid::Uuid::new_v4().to_string(),
        2000,
        "new",
    ));
    assert_eq!(
        store
            .insert_interactions(&overlapping)
            .await
            .expect("overlap"),
        1
    );
    let page = store
        .list_completions(
            &CompletionFilter::project(&project.id),
            &PageRequest::default(),
            false,
        )
        .await
        .expect("list");
    assert_eq!(page.total_count, 6);
    let stored = store
        .get_completion(&project.id, &batch[0].id)
        .await
        .expect("get");
    assert_eq!(stored.chat_messages, batch[0].chat_messages);
    assert_eq!(stored.metadata, batch[0].metadata);
    assert_eq!(stored.labels, batch[0].labels);
    store.close().await;
}

/// The same, read backwards: the last page first, then `before` each page's start cursor;
/// returned in list order. Checks the page flags on the way.
async fn created_at_backwards(
    store: &MetadataStore,
    filter: &CompletionFilter,
    page_size: i64,
) -> Vec<i64> {
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_completions(
                filter,
                &PageRequest {
                    last: Some(page_size),
                    before: before.clone(),
                    ..PageRequest::default()
                },
                false,
            )
            .await
            .expect("page");
        assert_eq!(
            page.position.has_next_page,
            before.is_some(),
            "later items follow"
        );
        pages.push(
            page.nodes
                .iter()
                .map(|node| node.created_at)
                .collect::<Vec<_>>(),
        );
        if !page.position.has_previous_page {
            break;
        }
        before = page.position.start_cursor;
    }
    pages.into_iter().rev().flatten().collect()
}

/// `created_at` of every completion a filter selects, read page by page through the cursor;
/// every page reports the same total, which is what was read.
async fn created_at_page_by_page(
    store: &MetadataStore,
    filter: &CompletionFilter,
    page_size: i64,
    ascending: bool,
) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut totals = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_completions(
                filter,
                &PageRequest {
                    first: Some(page_size),
                    after: cursor.clone(),
                    ..PageRequest::default()
                },
                ascending,
            )
            .await
            .expect("page");
        totals.push(page.total_count);
        seen.extend(page.nodes.iter().map(|node| node.created_at));
        if !page.position.has_next_page {
            break;
        }
        cursor = page.position.end_cursor;
    }
    assert!(
        totals.iter().all(|total| *total == seen.len() as i64),
        "{totals:?}"
    );
    seen
}

/// `(model key, count)` of each model group a filter selects, after checking the group count.
async fn model_groups(store: &MetadataStore, filter: &CompletionFilter) -> Vec<(String, i64)> {
    let (groups, total, _) = store
        .list_completion_groups(
            filter,
            adaptive_control_plane::store::CompletionGroupBy::Model,
            &PageRequest::default(),
        )
        .await
        .expect("groups");
    assert_eq!(total, groups.len() as i64);
    groups
        .into_iter()
        .map(|group| (group.key, group.count))
        .collect()
}

async fn completions_are_filtered_and_paginated(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let project = project(&store, "p").await;
    let other_project = self::project(&store, "other").await;
    let model_a = model(&store, "a").await;
    let model_b = model(&store, "b").await;
    let mut batch = Vec::new();
    for index in 0..7 {
        let model_id = if index < 4 { &model_a.id } else { &model_b.id };
        batch.push(interaction(
            &project.id,
            model_id,
            &uuid::Uuid::new_v4().to_string(),
            100 + index,
            &format!("q{}", index % 3),
        ));
    }
    batch.push(interaction(
        &other_project.id,
        &model_a.id,
        &uuid::Uuid::new_v4().to_string(),
        50,
        "elsewhere",
    ));
    store.insert_interactions(&batch).await.expect("insert");
    let base = CompletionFilter::project(&project.id);

    assert_eq!(
        created_at_page_by_page(&store, &base, 3, false).await,
        vec![106, 105, 104, 103, 102, 101, 100],
        "newest first, each once"
    );
    assert_eq!(
        created_at_backwards(&store, &base, 3).await,
        vec![106, 105, 104, 103, 102, 101, 100],
        "last/before walks the same order back to the start"
    );
    let both_ways = store
        .list_completions(
            &base,
            &PageRequest {
                first: Some(2),
                last: Some(2),
                ..PageRequest::default()
            },
            false,
        )
        .await;
    assert!(matches!(both_ways, Err(StoreError::Invalid(_))));

    let by_model = store
        .list_completions(
            &base.and(CompletionCondition::Model(vec![model_b.id.clone()])),
            &PageRequest::default(),
            true,
        )
        .await
        .expect("by model");
    assert_eq!(
        by_model
            .nodes
            .iter()
            .map(|node| node.created_at)
            .collect::<Vec<_>>(),
        vec![104, 105, 106]
    );

    let by_time = store
        .list_completions(
            &base.and(CompletionCondition::CreatedAt {
                from_ms: Some(101),
                to_ms: Some(102),
            }),
            &PageRequest::default(),
            true,
        )
        .await
        .expect("by time");
    assert_eq!(by_time.total_count, 2);

    let by_label = store
        .list_completions(
            &base.and(CompletionCondition::Label {
                key: "env".to_owned(),
                values: vec!["prod".to_owned()],
            }),
            &PageRequest::default(),
            true,
        )
        .await
        .expect("by label");
    assert_eq!(
        by_label
            .nodes
            .iter()
            .map(|node| node.created_at)
            .collect::<Vec<_>>(),
        vec![100, 102, 104, 106]
    );

    assert_eq!(
        model_groups(&store, &base).await,
        vec![("a".to_owned(), 4), ("b".to_owned(), 3)]
    );
    let (prompt_groups, prompt_total, _) = store
        .list_completion_groups(
            &base,
            adaptive_control_plane::store::CompletionGroupBy::Prompt,
            &PageRequest::default(),
        )
        .await
        .expect("prompt groups");
    assert_eq!(prompt_total, 3);
    assert_eq!(
        prompt_groups.iter().map(|group| group.count).sum::<i64>(),
        7
    );

    let bad_cursor = store
        .list_completions(
            &base,
            &PageRequest {
                first: Some(2),
                after: Some("garbage".to_owned()),
                ..PageRequest::default()
            },
            false,
        )
        .await;
    assert!(
        matches!(bad_cursor, Err(StoreError::Invalid(_))),
        "{bad_cursor:?}"
    );
    let missing = store.get_completion(&other_project.id, &batch[0].id).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "a completion is only found in its project"
    );
    store.close().await;
}

/// `created_at` of the completions a filter selects, oldest first, after checking that the
/// count agrees.
async fn selected(store: &MetadataStore, filter: &CompletionFilter) -> Vec<i64> {
    let page = store
        .list_completions(
            filter,
            &PageRequest {
                first: Some(100),
                ..PageRequest::default()
            },
            true,
        )
        .await
        .expect("list");
    assert_eq!(page.total_count, page.nodes.len() as i64, "{filter:?}");
    page.nodes.iter().map(|node| node.created_at).collect()
}

async fn completion_filters_combine_or_not_scores_and_text(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let project = project(&store, "p").await;
    let model_a = model(&store, "a").await;
    let model_b = model(&store, "b").await;
    let prompts = ["Hello World", "50% off_sale", "hello again", "other", "x"];
    let mut batch = Vec::new();
    for (index, prompt) in prompts.iter().enumerate() {
        let model_id = if index < 3 { &model_a.id } else { &model_b.id };
        batch.push(interaction(
            &project.id,
            model_id,
            &uuid::Uuid::new_v4().to_string(),
            index as i64,
            prompt,
        ));
    }
    // No model, no completion text, no labels: NOT of a model or label condition selects it.
    let mut bare = interaction(
        &project.id,
        &model_a.id,
        &uuid::Uuid::new_v4().to_string(),
        5,
        "bare",
    );
    bare.model_id = None;
    bare.completion = None;
    bare.labels = Vec::new();
    batch.push(bare);
    store.insert_interactions(&batch).await.expect("insert");
    store
        .create_metric(
            "p",
            NewMetric {
                key: Some("quality".to_owned()),
                name: "quality".to_owned(),
                kind: "SCALAR".to_owned(),
                scoring_type: "HIGHER_IS_BETTER".to_owned(),
                ..NewMetric::default()
            },
        )
        .await
        .expect("metric");
    let score = |index: usize, value: f64, reason: &str| NewScore {
        completion_id: batch[index].id.clone(),
        metric: "quality".to_owned(),
        value: value.into(),
        reason: Some(reason.to_owned()),
        details: None,
        created_by: None,
        created_at: None,
    };
    store
        .insert_scores(&[
            score(0, 1.0, "bad"),
            score(1, 3.0, "ok"),
            score(2, 5.0, "great"),
        ])
        .await
        .expect("scores");
    let quality_id = store
        .find_metric("quality")
        .await
        .expect("find")
        .expect("quality")
        .id;
    let base = CompletionFilter::project(&project.id);
    let model_is = |model_id: &str| CompletionCondition::Model(vec![model_id.to_owned()]);
    let not = |condition: CompletionCondition| CompletionCondition::Not(Box::new(condition));
    let quality = |comparisons: Vec<(NumericComparison, f64)>, reasons: Vec<&str>| {
        CompletionCondition::Score {
            metric_id: quality_id.clone(),
            comparisons,
            reasons: reasons.into_iter().map(str::to_owned).collect(),
        }
    };
    let text =
        |field: TextField, predicate: TextPredicate| CompletionCondition::Text { field, predicate };
    let contains = |needle: &str| TextPredicate::Contains(needle.to_owned());

    assert_eq!(selected(&store, &base).await, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        selected(&store, &base.and(not(model_is(&model_a.id)))).await,
        vec![3, 4, 5],
        "NOT model a keeps model b and the completion without a model"
    );
    assert_eq!(
        selected(
            &store,
            &base.and(CompletionCondition::Any(vec![
                CompletionCondition::CreatedAt {
                    from_ms: Some(4),
                    to_ms: None
                },
                CompletionCondition::CompletionId(batch[0].id.clone()),
            ]))
        )
        .await,
        vec![0, 4, 5]
    );
    assert_eq!(
        selected(&store, &base.and(CompletionCondition::Any(Vec::new()))).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        selected(
            &store,
            &base.and(not(CompletionCondition::LabelPresent {
                key: "env".to_owned()
            }))
        )
        .await,
        vec![5]
    );
    assert_eq!(
        selected(
            &store,
            &base.and(CompletionCondition::LabelPresent {
                key: "en".to_owned()
            })
        )
        .await,
        Vec::<i64>::new(),
        "a key prefix is not the key"
    );

    assert_eq!(
        selected(
            &store,
            &base.and(quality(vec![(NumericComparison::Gte, 3.0)], vec![]))
        )
        .await,
        vec![1, 2]
    );
    assert_eq!(
        selected(
            &store,
            &base.and(quality(
                vec![(NumericComparison::Gt, 0.5), (NumericComparison::Lt, 5.0)],
                vec![]
            ))
        )
        .await,
        vec![0, 1]
    );
    assert_eq!(
        selected(
            &store,
            &base.and(quality(vec![(NumericComparison::Neq, 3.0)], vec![]))
        )
        .await,
        vec![0, 2]
    );
    assert_eq!(
        selected(&store, &base.and(quality(vec![], vec!["great", "bad"]))).await,
        vec![0, 2]
    );
    assert_eq!(
        selected(&store, &base.and(not(quality(vec![], vec![])))).await,
        vec![3, 4, 5],
        "NOT a score condition: the completions without a quality score"
    );
    let unknown_metric = CompletionCondition::Score {
        metric_id: String::new(),
        comparisons: Vec::new(),
        reasons: Vec::new(),
    };
    assert_eq!(
        selected(&store, &base.and(unknown_metric)).await,
        Vec::<i64>::new()
    );

    assert_eq!(
        selected(
            &store,
            &base.and(text(TextField::Prompt, contains("HELLO")))
        )
        .await,
        vec![0, 2],
        "contains ignores ASCII case"
    );
    assert_eq!(
        selected(&store, &base.and(text(TextField::Prompt, contains("%")))).await,
        vec![1],
        "% is literal"
    );
    assert_eq!(
        selected(&store, &base.and(text(TextField::Prompt, contains("o_w")))).await,
        Vec::<i64>::new(),
        "_ is literal: it does not match the space of 'hello world'"
    );
    assert_eq!(
        selected(&store, &base.and(text(TextField::Prompt, contains("user")))).await,
        Vec::<i64>::new(),
        "the prompt's roles and JSON are not its text"
    );
    assert_eq!(
        selected(
            &store,
            &base.and(text(
                TextField::Prompt,
                TextPredicate::Equals("x".to_owned())
            ))
        )
        .await,
        vec![4]
    );
    assert_eq!(
        selected(
            &store,
            &base.and(text(TextField::Completion, contains("ANSWER TO h")))
        )
        .await,
        vec![0, 2]
    );
    assert_eq!(
        selected(
            &store,
            &base.and(not(text(TextField::Completion, contains("answer"))))
        )
        .await,
        vec![5],
        "NOT contains selects the completion without text"
    );

    let grouped = base.and(CompletionCondition::Any(vec![
        quality(vec![(NumericComparison::Gte, 3.0)], vec![]),
        model_is(&model_b.id),
    ]));
    assert_eq!(
        model_groups(&store, &grouped).await,
        vec![("a".to_owned(), 2), ("b".to_owned(), 2)]
    );
    let stats = store.score_stats(&grouped).await.expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].scores, 2);
    assert_eq!(
        created_at_page_by_page(&store, &grouped, 1, true).await,
        vec![1, 2, 3, 4]
    );
    store.close().await;
}

async fn scores_are_validated_and_aggregated(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let project = project(&store, "p").await;
    let model = model(&store, "m").await;
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let batch: Vec<NewInteraction> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| interaction(&project.id, &model.id, id, index as i64, "x"))
        .collect();
    store.insert_interactions(&batch).await.expect("insert");
    for (key, kind) in [("quality", "SCALAR"), ("thumbs", "BOOL")] {
        store
            .create_metric(
                "p",
                NewMetric {
                    key: Some(key.to_owned()),
                    name: key.to_owned(),
                    kind: kind.to_owned(),
                    scoring_type: "HIGHER_IS_BETTER".to_owned(),
                    ..NewMetric::default()
                },
            )
            .await
            .expect("metric");
    }
    let score = |completion: &str, metric: &str, value: f64| NewScore {
        completion_id: completion.to_owned(),
        metric: metric.to_owned(),
        value: value.into(),
        reason: None,
        details: Some("because".to_owned()),
        created_by: None,
        created_at: None,
    };
    let bad_bool = store.insert_scores(&[score(&ids[0], "thumbs", 0.5)]).await;
    assert!(
        matches!(bad_bool, Err(StoreError::Invalid(_))),
        "{bad_bool:?}"
    );
    let unknown_completion = store
        .insert_scores(&[score(&uuid::Uuid::new_v4().to_string(), "quality", 1.0)])
        .await;
    assert!(
        matches!(unknown_completion, Err(StoreError::NotFound { .. })),
        "{unknown_completion:?}"
    );
    let unknown_metric = store.insert_scores(&[score(&ids[0], "nope", 1.0)]).await;
    assert!(
        matches!(unknown_metric, Err(StoreError::NotFound { .. })),
        "{unknown_metric:?}"
    );

    store
        .insert_scores(&[
            score(&ids[0], "quality", 2.0),
            score(&ids[1], "quality", 4.0),
            score(&ids[2], "thumbs", 1.0),
        ])
        .await
        .expect("scores");
    let on_first = store
        .scores_for_completion(&ids[0])
        .await
        .expect("scores of one");
    assert_eq!(on_first.len(), 1);
    assert_eq!(on_first[0].details.as_deref(), Some("because"));
    let stats = store
        .score_stats(&CompletionFilter::project(&project.id))
        .await
        .expect("stats");
    let quality = stats
        .iter()
        .find(|stat| stat.metric.key == "quality")
        .expect("quality stats");
    assert_eq!(quality.scores, 2);
    assert!((quality.average - 3.0).abs() < 1e-9);
    assert!((quality.stddev - 1.0).abs() < 1e-9);
    assert!((quality.sum - 6.0).abs() < 1e-9);
    assert_eq!((quality.min, quality.max), (2.0, 4.0));
    assert!(store
        .metric_has_scores(&quality.metric.id)
        .await
        .expect("has scores"));
    store.close().await;
}

async fn api_keys_are_stored_hashed(backend: Backend) {
    let (_database, store) = setup(backend).await;
    let user = store
        .create_user(NewUser {
            email: "someone@example.com".into(),
            name: "Someone".into(),
            user_type: USER_TYPE_HUMAN.into(),
        })
        .await
        .expect("user");
    let key = store.create_api_key(&user.id, None).await.expect("key");
    assert!(key.expose().starts_with("ak_") && key.expose().len() == 67);
    let found = store
        .user_for_api_key(key.expose())
        .await
        .expect("lookup")
        .expect("valid key");
    assert_eq!(found.id, user.id);
    assert!(store
        .user_for_api_key("ak_wrong")
        .await
        .expect("lookup")
        .is_none());
    let rows = sqlx::query("SELECT key_hash FROM api_keys")
        .fetch_all(&any_pool(&store))
        .await
        .expect("rows");
    for row in rows {
        let hash: String = row.try_get("key_hash").expect("hash");
        assert_ne!(hash, key.expose());
        assert_eq!(hash.len(), 64);
    }
    let short = store
        .create_api_key(&user.id, Some(SecretString::new("short")))
        .await;
    assert!(matches!(short, Err(StoreError::Invalid(_))), "{short:?}");
    store.close().await;
}

/// Raw access for assertions on stored bytes.
fn any_pool(store: &MetadataStore) -> sqlx::AnyPool {
    store.raw_pool_for_tests()
}

async fn metrics_are_shared_between_projects(backend: Backend) {
    let (_database, store) = setup(backend).await;
    project(&store, "a").await;
    project(&store, "b").await;
    let input = || NewMetric {
        key: Some("accuracy".to_owned()),
        name: "Accuracy".to_owned(),
        kind: "SCALAR".to_owned(),
        scoring_type: "HIGHER_IS_BETTER".to_owned(),
        description: Some("d".to_owned()),
        unit: None,
    };
    let created = store.create_metric("a", input()).await.expect("create");
    let linked = store.create_metric("b", input()).await.expect("link");
    assert_eq!(created.id, linked.id);
    let again = store.create_metric("a", input()).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "{again:?}"
    );
    let projects: Vec<String> = store
        .metric_projects(&created.id)
        .await
        .expect("projects")
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(projects, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(
        store
            .get_project_metric("accuracy", "b")
            .await
            .expect("describe")
            .id,
        created.id
    );
    project(&store, "c").await;
    assert!(matches!(
        store.get_project_metric("accuracy", "c").await,
        Err(StoreError::NotFound { .. })
    ));
    let bad_kind = store
        .create_metric(
            "a",
            NewMetric {
                kind: "WEIRD".to_owned(),
                ..input()
            },
        )
        .await;
    assert!(
        matches!(bad_kind, Err(StoreError::Invalid(_))),
        "{bad_kind:?}"
    );
    store.close().await;
}

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
