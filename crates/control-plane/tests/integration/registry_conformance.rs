//! The replica registry conformance suite: every case runs against the in-process registry and
//! the real Redis (a unique key prefix per test, removed at the end).

use std::sync::Arc;
use std::time::Duration;

use adaptive_api_types::harmony::{OnlineModel, RegisterReplica, ReplicaLoad, ReplicaStatus};
use adaptive_control_plane::registry::{
    routable_replicas_for_model, RedisRegistry, ReplicaRegistry,
};

use crate::harness::{redis_url, unique_name, wait_for};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $case() {
                    let registry = std::sync::Arc::new(adaptive_control_plane::registry::InProcessRegistry::new());
                    super::$case(registry).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let registry = super::redis_registry().await;
                    super::$case(registry.clone()).await;
                    registry.clear().await.expect("clean up the test's keys");
                }
            )*
        }
    };
}

conformance!(
    heartbeats_upsert_one_record_per_replica,
    draining_replicas_are_listed_but_not_routable,
    deregistered_replicas_disappear,
    replicas_expire_without_heartbeat,
);

async fn redis_registry() -> Arc<RedisRegistry> {
    Arc::new(
        RedisRegistry::connect(&redis_url(), &unique_name("adaptive_test"))
            .await
            .expect("connect to the test Redis"),
    )
}

fn registration(
    partition: &str,
    ordinal: u32,
    status: ReplicaStatus,
    models: &[&str],
) -> RegisterReplica {
    RegisterReplica {
        group: "pool".to_owned(),
        partition_key: partition.to_owned(),
        ordinal,
        gpu_count: 1,
        gpu_types: vec!["NVIDIA H100".to_owned()],
        advertised_url: format!("http://replica-{ordinal}:50053"),
        capabilities: vec!["INFERENCE".to_owned()],
        status,
        online_models: models
            .iter()
            .map(|key| OnlineModel {
                key: (*key).to_owned(),
                path: format!("model_registry://{key}"),
                max_seq_len: 4096,
            })
            .collect(),
        load: ReplicaLoad::default(),
        capacity_ends_at: None,
    }
}

const LONG: Duration = Duration::from_secs(60);

async fn heartbeats_upsert_one_record_per_replica<R: ReplicaRegistry>(registry: Arc<R>) {
    let first = registry
        .heartbeat(registration("part", 0, ReplicaStatus::Online, &["m"]), LONG)
        .await
        .expect("register");
    let renewed = registry
        .heartbeat(
            registration("part", 0, ReplicaStatus::Online, &["m", "n"]),
            LONG,
        )
        .await
        .expect("heartbeat");
    assert_eq!(first.replica_id, renewed.replica_id, "the id is stable");
    assert_eq!(first.registered_at_ms, renewed.registered_at_ms);
    registry
        .heartbeat(registration("part", 1, ReplicaStatus::Online, &["n"]), LONG)
        .await
        .expect("second replica");
    let listed = registry.list().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0].registration.online_models.len(),
        2,
        "the latest heartbeat wins"
    );
    let serving_n = routable_replicas_for_model(registry.as_ref(), "n")
        .await
        .expect("route");
    assert_eq!(serving_n.len(), 2);
    let serving_m = routable_replicas_for_model(registry.as_ref(), "m")
        .await
        .expect("route");
    assert_eq!(serving_m.len(), 1);
}

async fn draining_replicas_are_listed_but_not_routable<R: ReplicaRegistry>(registry: Arc<R>) {
    registry
        .heartbeat(registration("part", 0, ReplicaStatus::Online, &["m"]), LONG)
        .await
        .expect("register");
    registry
        .heartbeat(
            registration("part", 1, ReplicaStatus::Draining, &["m"]),
            LONG,
        )
        .await
        .expect("draining");
    assert_eq!(registry.list().await.expect("list").len(), 2);
    let routable = routable_replicas_for_model(registry.as_ref(), "m")
        .await
        .expect("route");
    assert_eq!(routable.len(), 1);
    assert_eq!(routable[0].registration.ordinal, 0);
}

async fn deregistered_replicas_disappear<R: ReplicaRegistry>(registry: Arc<R>) {
    registry
        .heartbeat(registration("part", 0, ReplicaStatus::Online, &["m"]), LONG)
        .await
        .expect("register");
    assert!(registry.deregister("part", 0).await.expect("deregister"));
    assert!(!registry
        .deregister("part", 0)
        .await
        .expect("deregister again"));
    assert!(registry.list().await.expect("list").is_empty());
}

async fn replicas_expire_without_heartbeat<R: ReplicaRegistry>(registry: Arc<R>) {
    registry
        .heartbeat(
            registration("part", 0, ReplicaStatus::Online, &["m"]),
            Duration::from_millis(300),
        )
        .await
        .expect("register");
    registry
        .heartbeat(registration("part", 1, ReplicaStatus::Online, &["m"]), LONG)
        .await
        .expect("register");
    wait_for(
        "the short-lived replica to expire",
        Duration::from_secs(10),
        || {
            let registry = registry.clone();
            async move { registry.list().await.expect("list").len() == 1 }
        },
    )
    .await;
    let remaining = registry.list().await.expect("list");
    assert_eq!(
        remaining[0].registration.ordinal, 1,
        "only the expired one is gone"
    );
}
