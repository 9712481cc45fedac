//! The permission matrix, generated from the policy tables: every built-in role against every
//! GraphQL root field and the inference route, in both placements a role can have (in the admin
//! team: everywhere; in a team the project is shared with: that project only). Each call is
//! allowed exactly when the table says so; "allowed" means the answer is anything but 403 /
//! `permission_denied` (an allowed call may still fail validation or find nothing).
//!
//! Also: every root field of the schema has a rule (the policy fails closed, and this names the
//! missing one), and every rule has a sample call here.

use std::collections::{BTreeMap, BTreeSet};

use adaptive_control_plane::auth::policy::{Scope, GRAPHQL_RULES, REST_RULES};
use adaptive_control_plane::auth::BUILTIN_ROLES;
use serde_json::{json, Value};

use crate::harness::{Backend, TestDatabase, TestServer};

const PROJECT: &str = "matrix";

/// One call per root field; `$project` is the shared project's key.
fn samples() -> BTreeMap<&'static str, (&'static str, Value)> {
    let p = json!({ "project": PROJECT });
    BTreeMap::from([
        ("meta", ("{ meta { authProviders { providers { key } } } }", json!({}))),
        ("me", ("{ me { id } }", json!({}))),
        ("permissions", ("{ permissions }", json!({}))),
        ("roles", ("{ roles { key } }", json!({}))),
        ("teams", ("{ teams { key } }", json!({}))),
        ("users", ("{ users { id } }", json!({}))),
        ("createUser", ("mutation { createUser(input: {name: \"svc-new\", teams: [], userType: SYSTEM}) { user { id } } }", json!({}))),
        ("deleteUser", ("mutation { deleteUser(user: \"nobody@example.com\") { id } }", json!({}))),
        ("setTeamMember", ("mutation { setTeamMember(input: {user: \"nobody@example.com\", team: \"t\", role: \"admin\"}) { role { key } } }", json!({}))),
        ("removeTeamMember", ("mutation { removeTeamMember(input: {user: \"nobody@example.com\", team: \"t\"}) { id } }", json!({}))),
        ("createTeam", ("mutation { createTeam(input: {name: \"New team\"}) { key } }", json!({}))),
        ("createRole", ("mutation { createRole(input: {name: \"New role\", permissions: [\"project:read\"]}) { key } }", json!({}))),
        ("updateRole", ("mutation { updateRole(input: {role: \"nonexistent-role\", name: \"x\"}) { key } }", json!({}))),
        ("createApiKey", ("mutation { createApiKey(input: {user: \"nobody@example.com\"}) { key } }", json!({}))),
        ("revokeApiKeys", ("mutation { revokeApiKeys(user: \"nobody@example.com\") }", json!({}))),
        ("projects", ("{ projects { key } }", json!({}))),
        ("project", ("query($project: IdOrKey!) { project(idOrKey: $project) { key } }", p.clone())),
        ("createProject", ("mutation { createProject(input: {name: \"Created in the matrix\"}) { key } }", json!({}))),
        ("shareProject", ("mutation($project: IdOrKey!) { shareProject(idOrKey: $project, input: {shares: [{team: \"t\", role: \"admin\", isOwner: true}]}) { key } }", p.clone())),
        ("models", ("{ models(filter: {}) { key } }", json!({}))),
        ("model", ("{ model(idOrKey: \"fake-model\") { key } }", json!({}))),
        ("addModel", ("mutation { addModel(input: {path: \"fake://other\", name: \"other\"}) { key } }", json!({}))),
        ("deleteModel", ("mutation { deleteModel(input: {model: \"nonexistent-model\"}) }", json!({}))),
        ("updateModelComputeConfig", ("mutation { updateModelComputeConfig(idOrKey: \"nonexistent-model\", input: {tp: 1}) { key } }", json!({}))),
        ("terminateModel", ("mutation { terminateModel(idOrKey: \"nonexistent-model\", force: false) }", json!({}))),
        ("addModelsToProject", ("mutation($input: AddModelsToProjectInput!) { addModelsToProject(input: $input) { success } }", json!({"input": {"project": PROJECT, "models": ["nonexistent-model"]}}))),
        ("removeModelFromProject", ("mutation($project: String!) { removeModelFromProject(input: {project: $project, model: \"nonexistent-model\"}) }", p.clone())),
        ("deployModel", ("mutation($input: DeployModelInput!) { deployModel(input: $input) { modelService { key } } }", json!({"input": {"project": PROJECT, "model": "nonexistent-model"}}))),
        ("updateModelService", ("mutation($project: String!) { updateModelService(input: {project: $project, modelService: \"nonexistent\"}) { key } }", p.clone())),
        ("computePools", ("{ computePools { key } }", json!({}))),
        ("harmonyGroups", ("{ harmonyGroups { key } }", json!({}))),
        ("resizeInferencePartition", ("mutation { resizeInferencePartition(input: {computePool: \"nonexistent\", size: 1}) }", json!({}))),
        ("metrics", ("{ metrics { key } }", json!({}))),
        ("metric", ("query($project: IdOrKey!) { metric(metricIdOrKey: \"nonexistent\", projectIdOrKey: $project) { key } }", p.clone())),
        ("createMetric", ("mutation($project: IdOrKey!) { createMetric(project: $project, input: {name: \"Matrix metric\", kind: SCALAR}) { key } }", p.clone())),
        ("datasets", ("query($project: IdOrKey!) { datasets(project: $project) { key } }", p.clone())),
        ("dataset", ("query($project: IdOrKey!) { dataset(idOrKey: \"nonexistent\", project: $project) { key } }", p.clone())),
        ("datasetUploadProcessingStatus", ("query($project: String!) { datasetUploadProcessingStatus(input: {project: $project, datasetId: \"nonexistent\"}) { status } }", p.clone())),
        // Allowed callers get past the policy to "no file in this request" (400).
        ("createDataset", ("mutation($project: String!, $file: Upload!) { createDataset(input: {project: $project, name: \"Matrix dataset\"}, file: $file) { id } }", json!({"project": PROJECT, "file": "#__graphql_file__:0"}))),
        ("createDatasetFromMultipartUpload", ("mutation($project: String!) { createDatasetFromMultipartUpload(input: {project: $project, name: \"Matrix dataset\", uploadSessionId: \"00000000-0000-0000-0000-000000000000\"}) { status } }", p.clone())),
        ("deleteDataset", ("mutation($project: IdOrKey!) { deleteDataset(idOrKey: \"nonexistent\", project: $project) }", p.clone())),
        ("completions", ("query($project: String!) { completions(filter: {project: $project}, page: {first: 1}) { totalCount } }", p.clone())),
        ("completionsGrouped", ("query($project: String!) { completionsGrouped(groupBy: MODEL, filter: {project: $project}, page: {first: 1}) { totalCount } }", p.clone())),
        ("completion", ("query($project: IdOrKey!) { completion(project: $project, id: \"00000000-0000-0000-0000-000000000000\") { id } }", p)),
        ("addDirectScore", ("mutation { addDirectScore(completionId: \"00000000-0000-0000-0000-000000000000\", metricId: \"nonexistent\", input: {value: 1}) { id } }", json!({}))),
        ("modelUsage", ("{ modelUsage(filter: {modelId: \"fake-model\", unit: DAY}) { bucketTs totalTokens } }", json!({}))),
        ("modelUsageByProject", ("{ modelUsageByProject(filter: {interval: DAY}) { projectId totalTokens } }", json!({}))),
        ("modelUsageByUser", ("{ modelUsageByUser(filter: {interval: DAY}) { userId totalTokens } }", json!({}))),
        ("modelUsageByApiKey", ("{ modelUsageByApiKey(filter: {interval: DAY}) { apiKeyId totalTokens } }", json!({}))),
        ("modelUsageDetailsByProject", ("{ modelUsageDetailsByProject(filter: {interval: NO_GROUP_BY_DATE}) { totalTokens } }", json!({}))),
        ("globalUsage", ("{ globalUsage(filter: {interval: NO_GROUP_BY_DATE}) { total { totalTokens } signature } }", json!({}))),
        ("usageOptions", ("{ usageOptions(filter: {}) { projects { key } } }", json!({}))),
    ])
}

/// A body for each feedback route that an allowed caller gets past authorization with (to a
/// 201 or a 404 for the unknown metric), naming the shared project where the rule says.
/// One POST per REST route whose rule names a project or a permission (the rest are public
/// or need only authentication). Chunked uploads share one rule; opening a session samples it.
fn rest_samples() -> BTreeMap<&'static str, Value> {
    let nil = "00000000-0000-0000-0000-000000000000";
    BTreeMap::from([
        // Allowed calls reach routing and find no replica (503); denied ones get 403 before.
        (
            "/api/v1/chat/completions",
            json!({"model": PROJECT, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/api/v1/upload/init", json!({"total_parts_count": 1})),
        (
            "/api/v1/interactions",
            json!({"project": PROJECT, "completion": "c", "messages": [{"role": "user", "content": "q"}]}),
        ),
        (
            "/api/v1/comparison",
            json!({"project": PROJECT, "metric": "nonexistent", "preferred_completion": nil, "other_completion": "00000000-0000-0000-0000-000000000001"}),
        ),
        (
            "/api/v1/outcome",
            json!({"project_id": PROJECT, "metric": "nonexistent", "value": 1, "session_id": nil}),
        ),
    ])
}

/// Whether a role with `permissions`, placed in the admin team (`global`) or in a team the
/// project is shared with, may call an operation of `scope`.
fn expected(
    scope: Scope,
    role_has: impl Fn(adaptive_control_plane::auth::Permission) -> bool,
    global: bool,
) -> bool {
    match scope {
        Scope::Public | Scope::Authenticated => true,
        Scope::Global(permission) => global && role_has(permission),
        Scope::Project(permission, _) | Scope::Anywhere(permission) => role_has(permission),
    }
}

fn denied(body: &Value) -> bool {
    body["errors"].as_array().is_some_and(|errors| {
        errors
            .iter()
            .any(|error| error["extensions"]["code"] == "permission_denied")
    })
}

#[test]
fn every_rule_has_a_sample_call() {
    let samples = samples();
    let rules: BTreeSet<&str> = GRAPHQL_RULES.iter().map(|rule| rule.field).collect();
    let sampled: BTreeSet<&str> = samples.keys().copied().collect();
    assert_eq!(rules, sampled, "rules and samples differ");
}

#[test]
fn every_public_rest_route_has_a_rule() {
    use adaptive_control_plane::auth::policy::REST_RULES;
    use adaptive_control_plane::http::openapi::REST_ROUTES;
    let public: BTreeSet<String> = REST_ROUTES
        .iter()
        .filter(|(_, _, port)| *port == "public")
        .map(|(method, path, _)| format!("{} {path}", method.to_uppercase()))
        .collect();
    let ruled: BTreeSet<String> = REST_RULES
        .iter()
        .map(|rule| format!("{} {}", rule.method, rule.path))
        .collect();
    assert_eq!(public, ruled, "every public route has exactly one rule");
}

#[tokio::test]
async fn every_root_field_has_a_rule() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let server = TestServer::start(database.store().await).await;
    let sdl = server.graphql_sdl();
    let rules: BTreeSet<&str> = GRAPHQL_RULES.iter().map(|rule| rule.field).collect();
    let mut fields = BTreeSet::new();
    for root in ["QueryRoot", "MutationRoot"] {
        let start = sdl
            .find(&format!("type {root} {{"))
            .unwrap_or_else(|| panic!("{root} in the SDL"));
        let body = &sdl[start..];
        let body = &body[..body.find("\n}").expect("closing brace")];
        // Field lines are indented by two spaces; descriptions are """blocks""" (skipped).
        let mut in_description = false;
        for line in body.lines().skip(1) {
            if line.trim_start().starts_with("\"\"\"") {
                let once = line.trim().len() > 3 && line.trim().ends_with("\"\"\"");
                if !once {
                    in_description = !in_description;
                }
                continue;
            }
            if in_description || !line.starts_with("  ") || line.starts_with("   ") {
                continue;
            }
            let name: String = line
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                fields.insert(name);
            }
        }
    }
    let missing: Vec<&String> = fields
        .iter()
        .filter(|field| !rules.contains(field.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "root fields without a permission rule: {missing:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_builtin_role_gets_exactly_what_the_table_says() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        matrix(backend).await;
    }
}

async fn matrix(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let server = TestServer::start(database.store().await).await;
    let ok = |body: &Value| assert!(body["errors"].is_null(), "{body}");
    ok(&server
        .graphql(
            "mutation { createTeam(input: {key: \"t\", name: \"T\"}) { key } }",
            json!({}),
        )
        .await);
    ok(&server
        .graphql(
            "mutation($key: String) { createProject(input: {key: $key, name: \"Matrix\", team: \"t\"}) { key } }",
            json!({"key": PROJECT}),
        )
        .await);
    ok(&server.graphql("mutation { addModel(input: {path: \"fake://matrix\", name: \"fake-model\", key: \"fake-model\"}) { key } }", json!({})).await);
    ok(&server
        .graphql(
            "mutation($input: DeployModelInput!) { deployModel(input: $input) { modelService { key } } }",
            json!({"input": {"project": PROJECT, "model": "fake-model"}}),
        )
        .await);

    let samples = samples();
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    for role in BUILTIN_ROLES {
        for (placement, team, global) in
            [("admin team", "admin", true), ("project team", "t", false)]
        {
            let name = format!(
                "m-{}-{}",
                role.key.replace('-', "_"),
                if global { "g" } else { "p" }
            );
            let created = server
                .graphql(
                    "mutation($input: UserCreate!) { createUser(input: $input) { generatedApiKey } }",
                    json!({"input": {"name": name, "teams": [{"team": team, "role": role.key}], "userType": "SYSTEM", "generateApiKey": true}}),
                )
                .await;
            let key = created["data"]["createUser"]["generatedApiKey"]
                .as_str()
                .unwrap_or_else(|| panic!("{created}"))
                .to_owned();
            for rule in GRAPHQL_RULES {
                let (query, variables) = &samples[rule.field];
                let body = server.graphql_as(&key, query, variables.clone()).await;
                let want = expected(rule.scope, |p| role.permissions.contains(p), global);
                if want == denied(&body) {
                    failures.push(format!(
                        "{backend:?} {} in {placement}: {} expected {} got {body}",
                        role.key,
                        rule.field,
                        if want { "allowed" } else { "403" }
                    ));
                }
            }
            for (path, body) in rest_samples() {
                let rule = REST_RULES
                    .iter()
                    .find(|rule| rule.path == path)
                    .unwrap_or_else(|| panic!("a rule for {path}"));
                let response = client
                    .post(server.public_url(path))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let want = expected(rule.scope, |p| role.permissions.contains(p), global);
                if want == (response.status() == 403) {
                    failures.push(format!(
                        "{backend:?} {} in {placement}: {path} expected {} got {}",
                        role.key,
                        if want { "allowed" } else { "403" },
                        response.status()
                    ));
                }
            }
        }
    }
    server.stop().await;
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
