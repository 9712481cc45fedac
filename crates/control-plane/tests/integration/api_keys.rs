//! API keys through the management API: shown once, rotated (previous keys expire), expiring,
//! revoked, and dead with their user; only yourself or a user admin manages a user's keys.

use serde_json::json;

use crate::harness::{Backend, TestDatabase, TestServer};

async fn me_status(server: &TestServer, key: &str) -> u16 {
    reqwest::Client::new()
        .post(server.public_url("/api/graphql"))
        .bearer_auth(key)
        .json(&json!({"query": "{ me { email } }"}))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn service_account(server: &TestServer, name: &str, role: &str) -> String {
    let created = server
        .graphql(
            "mutation($input: UserCreate!) { createUser(input: $input) { user { email userType } generatedApiKey } }",
            json!({"input": {"name": name, "teams": [{"team": "default", "role": role}], "userType": "SYSTEM", "generateApiKey": true}}),
        )
        .await;
    assert_eq!(
        created["data"]["createUser"]["user"]["userType"], "SYSTEM",
        "{created}"
    );
    created["data"]["createUser"]["generatedApiKey"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned()
}

const CREATE_KEY: &str =
    "mutation($input: ApiKeyCreate!) { createApiKey(input: $input) { key createdAt expiresAt } }";

#[tokio::test]
async fn keys_rotate_expire_revoke_and_die_with_their_user() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let server = TestServer::start(database.store().await).await;
    let first = service_account(&server, "robot", "read-only").await;
    assert_eq!(me_status(&server, &first).await, 200);

    // Rotation by the account itself: the previous key stops working at once.
    let rotated = server
        .graphql_as(
            &first,
            CREATE_KEY,
            json!({"input": {"user": "robot@system.adaptive.local"}}),
        )
        .await;
    let second = rotated["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{rotated}"))
        .to_owned();
    assert_eq!(me_status(&server, &first).await, 401);
    assert_eq!(me_status(&server, &second).await, 200);

    // A grace period keeps the previous key until then.
    let later = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let graceful = server.graphql_as(&second, CREATE_KEY, json!({"input": {"user": "robot@system.adaptive.local", "expirationForPreviousKeys": later}})).await;
    let third = graceful["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{graceful}"))
        .to_owned();
    assert_eq!(me_status(&server, &second).await, 200);
    assert_eq!(me_status(&server, &third).await, 200);

    // A key that expired is refused.
    let past = chrono::Utc::now().timestamp_millis() - 1;
    let expired = server.graphql(CREATE_KEY, json!({"input": {"user": "robot@system.adaptive.local", "expiresAt": past, "expirationForPreviousKeys": later}})).await;
    let expired_key = expired["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{expired}"))
        .to_owned();
    assert_eq!(me_status(&server, &expired_key).await, 401);

    // Another non-admin may not touch robot's keys.
    let other = service_account(&server, "other", "power_user").await;
    let refused = server
        .graphql_as(
            &other,
            "mutation { revokeApiKeys(user: \"robot@system.adaptive.local\") }",
            json!({}),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "permission_denied",
        "{refused}"
    );
    assert_eq!(me_status(&server, &third).await, 200);

    // Revocation by an admin.
    let revoked = server
        .graphql(
            "mutation { revokeApiKeys(user: \"robot@system.adaptive.local\") }",
            json!({}),
        )
        .await;
    assert!(
        revoked["data"]["revokeApiKeys"].as_u64().unwrap_or(0) >= 2,
        "{revoked}"
    );
    assert_eq!(me_status(&server, &second).await, 401);
    assert_eq!(me_status(&server, &third).await, 401);

    // Deleting a user kills its keys.
    assert_eq!(me_status(&server, &other).await, 200);
    let deleted = server
        .graphql(
            "mutation { deleteUser(user: \"other@system.adaptive.local\") { deleted } }",
            json!({}),
        )
        .await;
    assert_eq!(deleted["data"]["deleteUser"]["deleted"], true, "{deleted}");
    assert_eq!(me_status(&server, &other).await, 401);
    let users = server.graphql("{ users { email } }", json!({})).await;
    assert!(!users.to_string().contains("other@system"), "{users}");
    server.stop().await;
}

#[tokio::test]
async fn custom_roles_take_effect_and_builtin_roles_are_fixed() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let server = TestServer::start(database.store().await).await;
    let created = server
        .graphql(
            "mutation { createRole(input: {key: \"viewer\", name: \"Viewer\", permissions: [\"project:read\"]}) { key permissions } }",
            json!({}),
        )
        .await;
    assert_eq!(
        created["data"]["createRole"]["permissions"],
        json!(["project:read"]),
        "{created}"
    );
    let unknown = server
        .graphql("mutation { createRole(input: {name: \"Bad\", permissions: [\"project:fly\"]}) { key } }", json!({}))
        .await;
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"], "invalid_request",
        "{unknown}"
    );
    let builtin = server
        .graphql(
            "mutation { updateRole(input: {role: \"admin\", permissions: []}) { key } }",
            json!({}),
        )
        .await;
    assert_eq!(
        builtin["errors"][0]["extensions"]["code"], "conflict",
        "{builtin}"
    );

    // A viewer in the default team sees the default-team projects but cannot create metrics.
    let key = service_account(&server, "viewer-bot", "viewer").await;
    server
        .graphql(
            "mutation { createProject(input: {key: \"shared\", name: \"Shared\"}) { key } }",
            json!({}),
        )
        .await;
    let projects = server
        .graphql_as(&key, "{ projects { key permissions } }", json!({}))
        .await;
    assert_eq!(
        projects["data"]["projects"],
        json!([{"key": "shared", "permissions": ["project:read"]}]),
        "{projects}"
    );
    let metric = server.graphql_as(&key, "mutation { createMetric(project: \"shared\", input: {name: \"m\", kind: SCALAR}) { key } }", json!({})).await;
    assert_eq!(
        metric["errors"][0]["extensions"]["code"], "permission_denied",
        "{metric}"
    );
    // Granting metric:create to the role takes effect on the next call.
    server
        .graphql("mutation { updateRole(input: {role: \"viewer\", permissions: [\"project:read\", \"metric:create\"]}) { key } }", json!({}))
        .await;
    let metric = server.graphql_as(&key, "mutation { createMetric(project: \"shared\", input: {name: \"m\", kind: SCALAR}) { key } }", json!({})).await;
    assert!(metric["errors"].is_null(), "{metric}");
    server.stop().await;
}
