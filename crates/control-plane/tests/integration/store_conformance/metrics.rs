//! Metrics and their scores: metrics shared between projects, score validation and statistics.

use adaptive_control_plane::store::{
    CompletionFilter, NewInteraction, NewMetric, NewScore, StoreError,
};

use super::{interaction, model, project, setup};
use crate::harness::Backend;

conformance!(
    metrics_are_shared_between_projects,
    scores_are_validated_and_aggregated,
);

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
