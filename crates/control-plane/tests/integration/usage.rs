//! Usage on both backends: the gateway's batches (stored and `store: false` calls alike) are
//! counted once, however often a batch is retried, and read back through the SDK's usage
//! queries per model, project, user and API key, bucketed in a timezone; a caller sees only
//! the projects it may read; score aggregates per metric and model.

use adaptive_control_plane::inference_adapters::StoreInteractionSink;
use adaptive_gateway::{Caller, InteractionRecord, InteractionStore, JsonText, Usage};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use crate::harness::{Backend, TestDatabase, TestServer};

fn ok(body: &Value) -> &Value {
    assert!(body["errors"].is_null(), "{body}");
    &body["data"]
}

struct Service {
    project_id: String,
    model_service_id: String,
    model_id: String,
}

async fn setup(server: &TestServer) -> (Service, Service, String) {
    ok(&server
        .graphql(
            "mutation { addModel(input: {path: \"fake://usage\", name: \"usage-model\", key: \"usage-model\"}) { key } }",
            json!({}),
        )
        .await);
    let mut services = Vec::new();
    for project in ["u1", "u2"] {
        ok(&server
            .graphql(
                "mutation($key: String) { createProject(input: {key: $key, name: $key}) { key } }",
                json!({"key": project}),
            )
            .await);
        ok(&server
            .graphql(
                "mutation($project: String!) { addModelsToProject(input: {project: $project, models: [\"usage-model\"]}) { success } }",
                json!({"project": project}),
            )
            .await);
        let body = server
            .graphql(
                "query($project: IdOrKey!) { project(idOrKey: $project) { id modelServices { id model { id } } } }",
                json!({"project": project}),
            )
            .await;
        let project = &ok(&body)["project"];
        services.push(Service {
            project_id: project["id"].as_str().expect("id").to_owned(),
            model_service_id: project["modelServices"][0]["id"]
                .as_str()
                .expect("service")
                .to_owned(),
            model_id: project["modelServices"][0]["model"]["id"]
                .as_str()
                .expect("model")
                .to_owned(),
        });
    }
    // A reader of u1 only.
    ok(&server
        .graphql(
            "mutation { createTeam(input: {name: \"Usage readers\", key: \"usage-readers\"}) { key } }",
            json!({}),
        )
        .await);
    ok(&server
        .graphql(
            "mutation { shareProject(idOrKey: \"u1\", input: {shares: [{team: \"usage-readers\", role: \"read-only\", isOwner: false}]}) { key } }",
            json!({}),
        )
        .await);
    let reader_key = server
        .service_account_key("usage-reader", "usage-readers", "read-only")
        .await;
    let second = services.pop().expect("u2");
    let first = services.pop().expect("u1");
    (first, second, reader_key)
}

fn record(
    service: &Service,
    user: &str,
    api_key: Option<&str>,
    stored: bool,
    tokens: (u64, u64),
    at: chrono::DateTime<Utc>,
) -> InteractionRecord {
    InteractionRecord {
        completion_id: uuid::Uuid::new_v4(),
        stored,
        session_id: uuid::Uuid::new_v4(),
        project_id: service.project_id.clone(),
        model_service_id: service.model_service_id.clone(),
        model_id: service.model_id.clone(),
        caller: Caller {
            user_id: Some(user.to_owned()),
            api_key_id: api_key.map(str::to_owned),
        },
        kind: "chat".into(),
        messages: if stored {
            JsonText::from_value(&json!([{"role": "user", "content": "hello"}]))
        } else {
            JsonText::null()
        },
        completion: if stored { "hi".into() } else { String::new() },
        finish_reason: Some("stop".into()),
        labels: Default::default(),
        tags: vec![],
        metadata: Value::Null,
        parameters: Value::Null,
        usage: Usage {
            prompt_tokens: tokens.0,
            completion_tokens: tokens.1,
        },
        ttft_ms: Some(1.0),
        total_ms: 2.0,
        replica_id: "r0".into(),
        created_at: at,
    }
}

#[tokio::test]
async fn usage_is_counted_once_and_queryable() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        usage_round_trip(backend).await;
    }
}

async fn usage_round_trip(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    let server = TestServer::start(store.clone()).await;
    let (u1, u2, reader_key) = setup(&server).await;

    // 2026-11-26 23:30 UTC is 2026-11-27 00:30 in Paris: a different day there.
    let late = Utc.with_ymd_and_hms(2026, 11, 26, 23, 30, 0).unwrap();
    let next_day = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
    let batch = vec![
        record(&u1, "alice", Some("key-a"), true, (10, 5), late),
        record(&u1, "alice", Some("key-a"), false, (20, 1), late),
        record(&u1, "bob", Some("key-b"), true, (3, 2), next_day),
        record(&u2, "bob", None, true, (100, 50), next_day),
    ];
    let sink = StoreInteractionSink::new(store.clone());
    sink.store_interactions(&batch).await.expect("stored");
    // A retried batch (the recorder could not see the first commit) counts nothing twice.
    sink.store_interactions(&batch).await.expect("retried");

    // The `store: false` call has usage but no interaction.
    let listed = server
        .graphql(
            "{ completions(filter: {project: \"u1\"}, page: {first: 10}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(ok(&listed)["completions"]["totalCount"], 2, "{listed}");

    let global = server
        .graphql(
            "{ globalUsage(filter: {interval: NO_GROUP_BY_DATE}) { total { promptTokens completionTokens totalTokens interactions } \
             adaptiveModels { totalTokens } externalModels { totalTokens } byModel { model { key } totalTokens } signature } }",
            json!({}),
        )
        .await;
    let global = &ok(&global)["globalUsage"];
    assert_eq!(
        global["total"],
        json!({"promptTokens": 133, "completionTokens": 58, "totalTokens": 191, "interactions": 4})
    );
    assert_eq!(global["adaptiveModels"]["totalTokens"], 191);
    assert_eq!(global["externalModels"]["totalTokens"], 0);
    assert_eq!(
        global["byModel"],
        json!([{"model": {"key": "usage-model"}, "totalTokens": 191}])
    );
    assert_eq!(global["signature"].as_str().map(str::len), Some(64));

    // Days in Paris: the late call falls on the 27th there, on the 26th in UTC.
    let query = "query($filter: UsageFilterInput!) { modelUsage(filter: $filter) { bucketTs promptTokens totalTokens interactions } }";
    let range = json!({"from": "2026-11-26T00:00:00Z", "to": "2026-11-28T00:00:00Z"});
    let utc_days = server
        .graphql(
            query,
            json!({"filter": {"modelId": "usage-model", "unit": "DAY", "timerange": range}}),
        )
        .await;
    let utc_days = &ok(&utc_days)["modelUsage"];
    assert_eq!(
        utc_days,
        &json!([
            {"bucketTs": Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap().timestamp_millis(), "promptTokens": 30, "totalTokens": 36, "interactions": 2},
            {"bucketTs": Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap().timestamp_millis(), "promptTokens": 103, "totalTokens": 155, "interactions": 2},
        ])
    );
    let paris_days = server
        .graphql(
            query,
            json!({"filter": {"modelId": "usage-model", "unit": "DAY", "timezone": "Europe/Paris", "timerange": range}}),
        )
        .await;
    let paris_days = &ok(&paris_days)["modelUsage"];
    let totals: Vec<i64> = paris_days
        .as_array()
        .expect("buckets")
        .iter()
        .map(|bucket| bucket["totalTokens"].as_i64().expect("tokens"))
        .collect();
    // Buckets of the Paris days overlapping the range: the 26th (empty), the 27th (all), 28th.
    assert_eq!(totals, vec![0, 191, 0], "{paris_days}");

    // Per project, per user, per API key, per project and model service; filters.
    let by_project = server
        .graphql(
            "{ modelUsageByProject(filter: {interval: NO_GROUP_BY_DATE}) { projectId totalTokens timeseries { totalTokens } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ok(&by_project)["modelUsageByProject"],
        json!([
            {"projectId": u2.project_id, "totalTokens": 150, "timeseries": [{"totalTokens": 150}]},
            {"projectId": u1.project_id, "totalTokens": 41, "timeseries": [{"totalTokens": 41}]},
        ])
    );
    let by_user = server
        .graphql(
            "{ modelUsageByUser(filter: {interval: NO_GROUP_BY_DATE, projectIds: [\"u1\"]}) { userId totalTokens interactions } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ok(&by_user)["modelUsageByUser"],
        json!([
            {"userId": "alice", "totalTokens": 36, "interactions": 2},
            {"userId": "bob", "totalTokens": 5, "interactions": 1},
        ])
    );
    let by_key = server
        .graphql(
            "{ modelUsageByApiKey(filter: {interval: NO_GROUP_BY_DATE, advancedFilter: {not: {project: {eq: \"u2\"}}}}) { apiKeyId totalTokens } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ok(&by_key)["modelUsageByApiKey"],
        json!([
            {"apiKeyId": "key-a", "totalTokens": 36},
            {"apiKeyId": "key-b", "totalTokens": 5},
        ])
    );
    let details = server
        .graphql(
            "{ modelUsageDetailsByProject(filter: {interval: NO_GROUP_BY_DATE, advancedFilter: {or: [{user: {eq: \"bob\"}}, {model: {in: [\"nonexistent\"]}}]}}) \
             { project { key } modelService { key } totalTokens } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ok(&details)["modelUsageDetailsByProject"],
        json!([
            {"project": {"key": "u2"}, "modelService": {"key": "usage-model"}, "totalTokens": 150},
            {"project": {"key": "u1"}, "modelService": {"key": "usage-model"}, "totalTokens": 5},
        ])
    );
    let options = server
        .graphql(
            "{ usageOptions(filter: {timerange: {from: \"2026-11-27T00:00:00Z\", to: \"2026-11-28T00:00:00Z\"}}) { projects { key } models { key } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ok(&options)["usageOptions"],
        json!({"projects": [{"key": "u1"}, {"key": "u2"}], "models": [{"key": "usage-model"}]}),
    );

    // A reader of u1 sees u1's usage only.
    let seen = server
        .graphql_as(
            &reader_key,
            "{ globalUsage(filter: {interval: NO_GROUP_BY_DATE}) { total { totalTokens } } }",
            json!({}),
        )
        .await;
    assert_eq!(ok(&seen)["globalUsage"]["total"]["totalTokens"], 41);

    // Bad input is a 4xx-style GraphQL error, not a failure.
    for filter in [
        json!({"modelId": "usage-model", "unit": "DAY", "timezone": "Mars/Olympus"}),
        json!({"modelId": "usage-model", "unit": "HOUR", "timerange": {"from": 0, "to": 4_000_000_000_000_i64}}),
        json!({"modelId": "usage-model", "unit": "DAY", "timerange": {"from": 10, "to": 5}}),
    ] {
        let refused = server.graphql(query, json!({"filter": filter})).await;
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "invalid_request",
            "{refused}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn scores_are_aggregated_per_metric_and_model() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        score_series(backend).await;
    }
}

async fn score_series(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = database.store().await;
    let server = TestServer::start(store.clone()).await;
    let (u1, _, _) = setup(&server).await;
    ok(&server
        .graphql(
            "mutation { createMetric(project: \"u1\", input: {name: \"quality\", key: \"quality\", kind: SCALAR}) { key } }",
            json!({}),
        )
        .await);
    let day = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
    let batch: Vec<InteractionRecord> = (0..3)
        .map(|_| record(&u1, "alice", None, true, (1, 1), day))
        .collect();
    StoreInteractionSink::new(store.clone())
        .store_interactions(&batch)
        .await
        .expect("stored");
    for (record, value) in batch.iter().zip([1.0, 0.5, 0.0]) {
        ok(&server
            .graphql(
                "mutation($completion: UUID!, $value: JSON!) { addDirectScore(completionId: $completion, metricId: \"quality\", input: {value: $value}) { id } }",
                json!({"completion": record.completion_id, "value": value}),
            )
            .await);
    }
    let now = Utc::now();
    let series = server
        .graphql(
            "query($input: TimeseriesInput!) { project(idOrKey: \"u1\") { metrics { key timeseries(input: $input) { model { key } timeBuckets count values aggregation } } } }",
            json!({"input": {"interval": "MILLENNIUM", "byModel": true,
                             "timerange": {"from": (now - chrono::Duration::hours(1)).timestamp_millis(), "to": (now + chrono::Duration::hours(1)).timestamp_millis()}}}),
        )
        .await;
    let metrics = ok(&series)["project"]["metrics"]
        .as_array()
        .expect("metrics")
        .clone();
    let quality = metrics
        .iter()
        .find(|metric| metric["key"] == "quality")
        .expect("quality");
    let timeseries = &quality["timeseries"];
    assert_eq!(timeseries.as_array().map(Vec::len), Some(1), "{series}");
    assert_eq!(timeseries[0]["model"]["key"], "usage-model");
    assert_eq!(timeseries[0]["count"], json!([3]));
    assert_eq!(timeseries[0]["values"], json!([0.5]));
    assert_eq!(timeseries[0]["aggregation"], "AVERAGE");
    server.stop().await;
}
