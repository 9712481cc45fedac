//! PostgreSQL outages and credential rotation, against the real server.

use std::net::SocketAddr;
use std::time::Duration;

use adaptive_control_plane::config::SecretSource;
use adaptive_control_plane::store::{DatabaseTarget, MetadataStore};

use crate::harness::{
    admin_execute, store_options, unique_name, wait_for, Backend, TcpProxy, TestDatabase,
    TestServer,
};

fn postgres_address() -> SocketAddr {
    let url = crate::harness::postgres_server_url();
    let host_port = url
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .trim_end_matches('/');
    host_port
        .parse()
        .expect("the test PostgreSQL URL names host:port")
}

async fn ready_status(client: &reqwest::Client, server: &TestServer) -> (u16, serde_json::Value) {
    let response = client
        .get(server.public_url("/ready"))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn unreachable_database_fails_with_503_and_recovers() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let name = database.postgres_name().expect("postgres").to_owned();
    let mut proxy = TcpProxy::start(postgres_address()).await;
    let target = DatabaseTarget::from_url(
        &format!("postgres://postgres@{}/{name}", proxy.address),
        None,
    )
    .expect("url");
    let store = MetadataStore::connect(target, store_options())
        .await
        .expect("connect");
    let server = TestServer::start(store).await;
    let client = reqwest::Client::new();
    assert_eq!(ready_status(&client, &server).await.0, 200);

    proxy.stop();
    wait_for(
        "/ready to fail while the database is away",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let server = &server;
            async move { ready_status(&client, server).await.0 == 503 }
        },
    )
    .await;
    let (status, outage_body) = ready_status(&client, &server).await;
    assert_eq!(status, 503);
    assert_eq!(outage_body["error"]["code"], "unavailable", "{outage_body}");
    let message = outage_body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("database is unavailable"), "{message}");
    assert!(
        !message.contains(&name),
        "no connection details leak: {message}"
    );
    let api = client
        .post(server.public_url("/api/graphql"))
        .bearer_auth(&server.api_key)
        .json(&serde_json::json!({"query": "{ projects { key } }"}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        api.status().as_u16(),
        503,
        "API requests fail with 503 during the outage"
    );

    proxy.resume().await;
    wait_for(
        "/ready to recover by itself",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let server = &server;
            async move { ready_status(&client, server).await.0 == 200 }
        },
    )
    .await;
    let body = server
        .graphql("{ projects { key } }", serde_json::json!({}))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    server.stop().await;
}

/// The password changes in the database and in the secret file while the store runs; the next
/// connection uses the new one. (The test server trusts local connections, so PostgreSQL does
/// not reject the old password here; the test checks the password the pool connects with and
/// that fresh connections work after every old one was terminated.)
#[tokio::test]
async fn rotated_password_is_used_by_the_next_connection() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let name = database.postgres_name().expect("postgres").to_owned();
    let role = unique_name("cp_role");
    admin_execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'first-password'"
    ))
    .await;
    admin_execute(&format!("ALTER DATABASE {name} OWNER TO {role}")).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let password_file = directory.path().join("db-password");
    std::fs::write(&password_file, "first-password\n").expect("write");
    let target = DatabaseTarget::from_url(
        &format!("postgres://{role}@{}/{name}", postgres_address()),
        Some(SecretSource::File(password_file.clone())),
    )
    .expect("url");
    let store = MetadataStore::connect(target, store_options())
        .await
        .expect("connect");
    assert_eq!(
        store.current_connect_password().as_deref(),
        Some("first-password")
    );
    store.ping().await.expect("connected");

    admin_execute(&format!("ALTER ROLE {role} PASSWORD 'second-password'")).await;
    std::fs::write(&password_file, "second-password\n").expect("rotate the secret file");
    wait_for(
        "the pool to pick up the rotated password",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { store.current_connect_password().as_deref() == Some("second-password") }
        },
    )
    .await;
    admin_execute(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await;
    wait_for(
        "a new connection with the new password",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { store.ping().await.is_ok() }
        },
    )
    .await;
    store.close().await;
    drop(database);
    admin_execute(&format!("DROP ROLE IF EXISTS {role}")).await;
}

/// A control plane that starts before its database keeps retrying (with backoff) instead of
/// exiting, and migrates once the database answers.
#[tokio::test]
async fn start_waits_for_a_database_that_comes_up_later() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let name = database.postgres_name().expect("postgres").to_owned();
    let mut proxy = TcpProxy::start(postgres_address()).await;
    proxy.stop();
    let target = DatabaseTarget::from_url(
        &format!("postgres://postgres@{}/{name}", proxy.address),
        None,
    )
    .expect("url");
    let connecting = tokio::spawn(MetadataStore::connect(target, store_options()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!connecting.is_finished(), "still waiting for the database");
    proxy.resume().await;
    let store = tokio::time::timeout(Duration::from_secs(20), connecting)
        .await
        .expect("connects once the database is up")
        .expect("task")
        .expect("migrated");
    assert_eq!(store.count_users().await.expect("schema exists"), 0);
}

/// `sslmode` in `db.url` decides whether the connection is encrypted (the test server has TLS
/// enabled).
#[tokio::test]
async fn sslmode_in_the_url_decides_tls() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let name = database.postgres_name().expect("postgres").to_owned();
    let server = crate::harness::postgres_server_url();
    let connect = |mode: &'static str| {
        let url = format!("{server}/{name}?sslmode={mode}");
        async move {
            let target = DatabaseTarget::from_url(&url, None).expect("url");
            let store = MetadataStore::connect(target, store_options())
                .await
                .expect("connect");
            store.tls_in_use().await.expect("query")
        }
    };
    assert_eq!(connect("disable").await, Some(false));
    // A PostgreSQL started by scripts/test.sh on a bare machine may have TLS off: then
    // `require` must refuse to connect rather than silently fall back to plaintext.
    let pool = sqlx::PgPool::connect(&format!("{server}/{name}?sslmode=disable"))
        .await
        .expect("plain connection");
    let server_tls: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&pool)
        .await
        .expect("SHOW ssl");
    pool.close().await;
    if server_tls == "on" {
        assert_eq!(connect("require").await, Some(true));
    } else {
        let target = DatabaseTarget::from_url(&format!("{server}/{name}?sslmode=require"), None)
            .expect("url");
        let mut options = store_options();
        options.startup_retry = Duration::ZERO;
        assert!(MetadataStore::connect(target, options).await.is_err());
    }
}
