//! Interactions and the completions read from them: exactly-once inserts, cursor pagination
//! both ways, grouping, and the filter expression (any, not, scores, text).

use adaptive_control_plane::store::{
    CompletionCondition, CompletionFilter, MetadataStore, NewInteraction, NewMetric, NewScore,
    NumericComparison, PageRequest, StoreError, TextField, TextPredicate,
};

use super::{interaction, model, project, setup};
use crate::harness::Backend;

conformance!(
    interactions_are_inserted_exactly_once,
    completions_are_filtered_and_paginated,
    completion_filters_combine_or_not_scores_and_text,
);

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
