//! The in-process registry: a map guarded by a mutex, with expiry checked on read against
//! tokio's clock (so tests can pause time).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use adaptive_api_types::harmony::RegisterReplica;
use tokio::time::Instant;

use super::{now_ms, replica_id, RegistryError, ReplicaRecord, ReplicaRegistry};

/// Records by replica id, with the instant each expires.
type Replicas = HashMap<String, (ReplicaRecord, Instant)>;

#[derive(Debug, Default)]
pub struct InProcessRegistry {
    replicas: Mutex<Replicas>,
}

impl InProcessRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Replicas>, RegistryError> {
        self.replicas
            .lock()
            .map_err(|_| RegistryError::Internal(anyhow::anyhow!("registry lock poisoned")))
    }
}

#[async_trait::async_trait]
impl ReplicaRegistry for InProcessRegistry {
    async fn heartbeat(
        &self,
        registration: RegisterReplica,
        ttl: Duration,
    ) -> Result<ReplicaRecord, RegistryError> {
        let id = replica_id(&registration.partition_key, registration.ordinal);
        let now = now_ms();
        let mut replicas = self.lock()?;
        let registered_at_ms = match replicas.get(&id) {
            Some((previous, expires_at)) if *expires_at > Instant::now() => {
                previous.registered_at_ms
            }
            _ => now,
        };
        let record = ReplicaRecord {
            replica_id: id.clone(),
            registration,
            registered_at_ms,
            last_seen_ms: now,
        };
        replicas.insert(id, (record.clone(), Instant::now() + ttl));
        Ok(record)
    }

    async fn deregister(&self, partition_key: &str, ordinal: u32) -> Result<bool, RegistryError> {
        let id = replica_id(partition_key, ordinal);
        let mut replicas = self.lock()?;
        Ok(matches!(replicas.remove(&id), Some((_, expires_at)) if expires_at > Instant::now()))
    }

    async fn list(&self) -> Result<Vec<ReplicaRecord>, RegistryError> {
        let now = Instant::now();
        let mut replicas = self.lock()?;
        replicas.retain(|_, (_, expires_at)| *expires_at > now);
        let mut records: Vec<ReplicaRecord> = replicas
            .values()
            .map(|(record, _)| record.clone())
            .collect();
        records.sort_by(|left, right| left.replica_id.cmp(&right.replica_id));
        Ok(records)
    }
}
