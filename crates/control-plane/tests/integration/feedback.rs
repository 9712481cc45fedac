//! The feedback API on both backends: interactions imported with their feedback, direct scores
//! (`addDirectScore`), comparisons and outcomes; what is acknowledged is read back through
//! GraphQL, and what is refused is a 4xx in our error body that leaves nothing behind.

use serde_json::{json, Value};

use crate::harness::{Backend, TestDatabase, TestServer};

const COMPLETION_QUERY: &str = "query($project: IdOrKey!, $id: UUID!) { completion(project: $project, id: $id) { \
     id completion source sessionId createdAt model { key } labels { key value } chatMessages { role content } \
     directScores { id value details metric { key } } \
     comparisonScores { id metric { key } preferedCompletion { id completion } otherCompletion { id completion } } } }";

const ADD_SCORE: &str = "mutation($completion: UUID!, $metric: IdOrKey!, $input: ScoreAddInput!) { \
     addDirectScore(completionId: $completion, metricId: $metric, input: $input) { id value details metric { key } } }";

async fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.public_url(path))
        .bearer_auth(&server.api_key)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

fn ok(body: &Value) -> &Value {
    assert!(body["errors"].is_null(), "{body}");
    &body["data"]
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error: {body}"))
}

async fn completion(server: &TestServer, id: &str) -> Value {
    let body = server
        .graphql(COMPLETION_QUERY, json!({"project": "fb", "id": id}))
        .await;
    ok(&body)["completion"].clone()
}

/// The ids of the completions of project `fb` that a `ListCompletionsFilterInput` selects,
/// sorted.
async fn filtered_completion_ids(server: &TestServer, mut filter: Value) -> Vec<String> {
    filter["project"] = json!("fb");
    let body = server
        .graphql(
            "query($filter: ListCompletionsFilterInput!) { completions(filter: $filter, page: {first: 10}) { totalCount nodes { id } } }",
            json!({"filter": filter}),
        )
        .await;
    let completions = &ok(&body)["completions"];
    let mut ids: Vec<String> = completions["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| node["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(completions["totalCount"], json!(ids.len()), "{body}");
    ids.sort();
    ids
}

async fn setup(server: &TestServer) {
    for (project, metrics) in [
        ("fb", &[("quality", "SCALAR"), ("thumbs", "BOOL")][..]),
        ("other", &[("elsewhere", "SCALAR")][..]),
    ] {
        ok(&server
            .graphql(
                "mutation($key: String) { createProject(input: {key: $key, name: $key}) { key } }",
                json!({"key": project}),
            )
            .await);
        for (key, kind) in metrics {
            ok(&server
                .graphql(
                    &format!("mutation($project: IdOrKey!, $key: String) {{ createMetric(project: $project, input: {{name: $key, key: $key, kind: {kind}}}) {{ key }} }}"),
                    json!({"project": project, "key": key}),
                )
                .await);
        }
    }
    ok(&server
        .graphql(
            "mutation { addModel(input: {path: \"fake://fb\", name: \"fb-model\", key: \"fb-model\"}) { key } }",
            json!({}),
        )
        .await);
    ok(&server
        .graphql(
            "mutation { addModelsToProject(input: {project: \"fb\", models: [\"fb-model\"]}) { success } }",
            json!({}),
        )
        .await);
}

#[tokio::test]
async fn feedback_is_stored_and_read_back() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        feedback_round_trip(backend).await;
    }
}

async fn feedback_round_trip(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let server = TestServer::start(database.store().await).await;
    setup(&server).await;

    // Interactions, with feedback, through both mounts.
    let session = uuid::Uuid::new_v4().to_string();
    let (status, imported) = post(
        &server,
        "/api/v1/interactions",
        json!({
            "project": "fb", "model_service": "fb-model", "completion": "Paris",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]}],
            "feedbacks": [{"metric": "quality", "value": 0.75, "details": "good"}, {"metric": "thumbs", "value": true}],
            "session_id": session, "labels": {"env": "test"}, "created_at": "2024-05-01T12:00:00Z",
        }),
    )
    .await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["session_id"], session);
    assert_eq!(imported["feedback_ids"].as_array().map(Vec::len), Some(2));
    let first_id = imported["completion_id"].as_str().expect("id").to_owned();
    let first = completion(&server, &first_id).await;
    assert_eq!(first["completion"], "Paris");
    assert_eq!(first["source"], "OFFLINE");
    assert_eq!(first["model"]["key"], "fb-model");
    assert_eq!(first["createdAt"], json!(1_714_564_800_000_i64));
    assert_eq!(first["labels"], json!([{"key": "env", "value": "test"}]));
    assert_eq!(first["chatMessages"][1]["content"], "Capital of France?");
    let mut scores: Vec<(String, f64)> = first["directScores"]
        .as_array()
        .expect("scores")
        .iter()
        .map(|score| {
            (
                score["metric"]["key"].as_str().expect("key").to_owned(),
                score["value"].as_f64().expect("value"),
            )
        })
        .collect();
    scores.sort_by(|left, right| left.0.cmp(&right.0));
    assert_eq!(
        scores,
        [("quality".to_owned(), 0.75), ("thumbs".to_owned(), 1.0)]
    );
    let (status, second) = post(
        &server,
        "/v1/interactions",
        json!({"project": "fb", "completion": "Lyon", "messages": [{"role": "user", "content": "Capital of France?"}]}),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["feedback_ids"], json!([]));
    let second_id = second["completion_id"].as_str().expect("id").to_owned();

    // Refused imports store nothing.
    for (body, status, code) in [
        (
            json!({"project": "fb", "completion": "x", "messages": [{"role": "user", "content": "q"}], "feedbacks": [{"metric": "thumbs", "value": 0.5}]}),
            400,
            "invalid_request",
        ),
        (
            json!({"project": "fb", "completion": "x", "messages": [{"role": "user", "content": "q"}], "feedbacks": [{"metric": "elsewhere", "value": 1}]}),
            404,
            "not_found",
        ),
        (
            json!({"project": "fb", "completion": "x", "messages": [{"role": "user", "content": "q"}], "model_service": "nope"}),
            404,
            "not_found",
        ),
        (
            json!({"project": "fb", "completion": "x", "messages": [{"role": "user", "content": "q"}], "created_at": "yesterday"}),
            400,
            "invalid_request",
        ),
        (
            json!({"project": "fb", "completion": "x", "messages": []}),
            400,
            "invalid_request",
        ),
        (
            json!({"project": "fb", "messages": [{"role": "user", "content": "q"}]}),
            400,
            "invalid_request",
        ),
        (
            json!({"project": "nope", "completion": "x", "messages": [{"role": "user", "content": "q"}]}),
            404,
            "not_found",
        ),
    ] {
        let (got, error) = post(&server, "/api/v1/interactions", body.clone()).await;
        assert_eq!(
            (got, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {error}"
        );
    }
    let count = server
        .graphql(
            "{ completions(filter: {project: \"fb\"}, page: {first: 10}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(ok(&count)["completions"]["totalCount"], 2);

    // Direct scores.
    let scored = server
        .graphql(
            ADD_SCORE,
            json!({"completion": second_id, "metric": "thumbs", "input": {"value": 0, "details": "wrong city"}}),
        )
        .await;
    assert_eq!(
        ok(&scored)["addDirectScore"]["metric"]["key"],
        "thumbs",
        "{scored}"
    );
    assert_eq!(ok(&scored)["addDirectScore"]["value"], 0.0);
    let scored = server
        .graphql(
            ADD_SCORE,
            json!({"completion": second_id, "metric": "quality", "input": {"value": -2.5}}),
        )
        .await;
    assert_eq!(ok(&scored)["addDirectScore"]["value"], -2.5);
    for (metric, value, code) in [
        ("thumbs", json!(0.5), "invalid_request"),
        ("thumbs", json!("yes"), "invalid_request"),
        ("quality", json!(true), "invalid_request"),
        ("quality", json!(null), "invalid_request"),
        ("elsewhere", json!(1), "not_found"),
        ("nope", json!(1), "not_found"),
    ] {
        let refused = server
            .graphql(
                ADD_SCORE,
                json!({"completion": second_id, "metric": metric, "input": {"value": value}}),
            )
            .await;
        assert_eq!(error_code(&refused), code, "{metric} {value}: {refused}");
    }
    let unknown = server
        .graphql(
            ADD_SCORE,
            json!({"completion": uuid::Uuid::new_v4(), "metric": "thumbs", "input": {"value": 1}}),
        )
        .await;
    assert_eq!(error_code(&unknown), "not_found");
    let second = completion(&server, &second_id).await;
    assert_eq!(second["directScores"].as_array().map(Vec::len), Some(2));

    // Completion filters through GraphQL: or / not / neq / score / text conditions.
    let first_only = vec![first_id.clone()];
    let second_only = vec![second_id.clone()];
    let mut both = vec![first_id.clone(), second_id.clone()];
    both.sort();
    for (filter, expected) in [
        (
            json!({"advancedFilter": {"and": [{"scores": {"metric": "quality", "value": {"gt": 0}}}]}}),
            &first_only,
        ),
        (
            json!({"scores": [{"metric": "quality", "lt": 0, "gte": -2.5}]}),
            &second_only,
        ),
        (
            json!({"advancedFilter": {"or": [{"completion": {"contains": "LYON"}}, {"label": {"key": "env", "value": {"eq": "test"}}}]}}),
            &both,
        ),
        (
            json!({"advancedFilter": {"not": {"model": {"eq": "fb-model"}}}}),
            &second_only,
        ),
        (
            json!({"advancedFilter": {"model": {"neq": "fb-model"}}}),
            &second_only,
        ),
        (
            json!({"advancedFilter": {"label": {"key": "env", "value": {"neq": "prod"}}}}),
            &first_only,
        ),
        (
            json!({"advancedFilter": {"prompt": {"contains": "france"}}}),
            &both,
        ),
        (
            json!({"advancedFilter": {"and": [{"prompt": {"contains": "BRIEF"}}, {"scores": {"metric": "thumbs", "value": {"eq": 1}}}]}}),
            &first_only,
        ),
        (
            json!({"advancedFilter": {"completion": {"eq": "Paris"}}}),
            &first_only,
        ),
        (json!({"prompt": "capital"}), &both),
        // Users are named by email as well as by id.
        (json!({"createdBy": "admin@localhost"}), &both),
        (
            json!({"advancedFilter": {"createdBy": {"eq": "ADMIN@localhost"}}}),
            &both,
        ),
        (
            json!({"advancedFilter": {"createdBy": {"neq": "admin@localhost"}}}),
            &Vec::new(),
        ),
        (
            json!({"advancedFilter": {"scores": {"metric": "no-such-metric"}}}),
            &Vec::new(),
        ),
    ] {
        assert_eq!(
            &filtered_completion_ids(&server, filter.clone()).await,
            expected,
            "{filter}"
        );
    }
    assert_eq!(second["directScores"][0]["details"], "wrong city");

    // Comparisons: stored completions, and texts recorded with the comparison.
    let (status, compared) = post(
        &server,
        "/api/v1/comparison",
        json!({"project": "fb", "metric": "quality", "preferred_completion": first_id, "other_completion": second_id, "tied": "good"}),
    )
    .await;
    assert_eq!(status, 201, "{compared}");
    let comparison_id = compared["comparison_id"].as_str().expect("id").to_owned();
    // The comparison filter: completions that took part in a comparison of the metric.
    assert_eq!(
        filtered_completion_ids(&server, json!({"comparisons": [{"metric": "quality"}]})).await,
        both
    );
    for metric in ["thumbs", "no-such-metric"] {
        let filter = json!({"comparisons": [{"metric": metric}]});
        assert!(filtered_completion_ids(&server, filter).await.is_empty());
    }
    let (status, from_text) = post(
        &server,
        "/v1/comparison",
        json!({"project": "fb", "metric": "thumbs", "messages": [{"role": "user", "content": "2+2?"}],
               "preferred_completion": {"text": "4", "model": "fb-model"}, "other_completion": {"text": "5", "model": "fb-model"}}),
    )
    .await;
    assert_eq!(status, 201, "{from_text}");
    let first = completion(&server, &first_id).await;
    assert_eq!(first["comparisonScores"][0]["id"], comparison_id.as_str());
    assert_eq!(first["comparisonScores"][0]["metric"]["key"], "quality");
    assert_eq!(
        first["comparisonScores"][0]["otherCompletion"]["id"],
        second_id.as_str()
    );
    let count = server
        .graphql(
            "{ completions(filter: {project: \"fb\"}, page: {first: 10}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ok(&count)["completions"]["totalCount"],
        4,
        "the two texts are completions now"
    );
    let metric = server
        .graphql(
            "{ metric(metricIdOrKey: \"thumbs\", projectIdOrKey: \"fb\") { hasComparisonScores } }",
            json!({}),
        )
        .await;
    assert_eq!(ok(&metric)["metric"]["hasComparisonScores"], true);
    let missing = uuid::Uuid::new_v4().to_string();
    for (body, status, code) in [
        (
            json!({"project": "fb", "metric": "quality", "preferred_completion": first_id, "other_completion": first_id}),
            400,
            "invalid_request",
        ),
        (
            json!({"project": "fb", "metric": "quality", "preferred_completion": first_id, "other_completion": missing}),
            404,
            "not_found",
        ),
        (
            json!({"project": "fb", "metric": "quality", "preferred_completion": {"text": "a", "model": "fb-model"}, "other_completion": first_id}),
            400,
            "invalid_request",
        ),
        (
            json!({"project": "fb", "metric": "quality", "preferred_completion": first_id, "other_completion": second_id, "tied": "maybe"}),
            400,
            "invalid_request",
        ),
        (
            json!({"project": "fb", "metric": "elsewhere", "preferred_completion": first_id, "other_completion": second_id}),
            404,
            "not_found",
        ),
        (
            json!({"project": "fb", "metric": "quality", "preferred_completion": 7, "other_completion": second_id}),
            400,
            "invalid_request",
        ),
    ] {
        let (got, error) = post(&server, "/api/v1/comparison", body.clone()).await;
        assert_eq!(
            (got, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {error}"
        );
    }

    // Outcomes.
    let (status, outcome) = post(
        &server,
        "/api/v1/outcome",
        json!({"project_id": "fb", "metric": "thumbs", "value": false, "session_id": session}),
    )
    .await;
    assert_eq!(status, 201, "{outcome}");
    assert!(outcome["outcome_id"].as_str().is_some(), "{outcome}");
    let store = database.store().await;
    let project = store.get_project("fb").await.expect("project");
    let outcomes = store
        .outcomes_for_session(&project.id, &session)
        .await
        .expect("outcomes");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].value, 0.0);
    assert_eq!(outcomes[0].id, outcome["outcome_id"].as_str().expect("id"));
    for (body, status, code) in [
        (
            json!({"project_id": "fb", "metric": "thumbs", "value": 2, "session_id": session}),
            400,
            "invalid_request",
        ),
        (
            json!({"project_id": "fb", "metric": "thumbs", "value": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"project_id": "fb", "metric": "thumbs", "value": 1, "session_id": "not-a-uuid"}),
            400,
            "invalid_request",
        ),
        (
            json!({"project_id": "fb", "metric": "nope", "value": 1, "session_id": session}),
            404,
            "not_found",
        ),
    ] {
        let (got, error) = post(&server, "/api/v1/outcome", body.clone()).await;
        assert_eq!(
            (got, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {error}"
        );
    }
    store.close().await;
    server.stop().await;
}
