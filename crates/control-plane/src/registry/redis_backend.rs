//! The Redis registry, shared by every control plane replica.
//!
//! Layout under the configured prefix: `<prefix>:replica:<id>` holds the record as JSON with a
//! `PX` expiry equal to the TTL (Redis does the expiring), and the set `<prefix>:replicas`
//! indexes the ids. Listing reads the set, fetches the records with `MGET`, and removes ids
//! whose record has expired from the set.

use std::time::Duration;

use adaptive_api_types::harmony::RegisterReplica;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::{now_ms, replica_id, RegistryError, ReplicaRecord, ReplicaRegistry};

#[derive(Clone)]
pub struct RedisRegistry {
    connection: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisRegistry")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn unavailable(error: redis::RedisError) -> RegistryError {
    RegistryError::Unavailable(anyhow::Error::new(error))
}

impl RedisRegistry {
    /// Connect (the connection manager reconnects by itself after a Redis restart).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RegistryError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection = ConnectionManager::new(client).await.map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}:replica:{id}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:replicas", self.prefix)
    }

    /// Delete every key this registry wrote (tests clean up with it).
    pub async fn clear(&self) -> Result<(), RegistryError> {
        let mut connection = self.connection.clone();
        let ids: Vec<String> = connection
            .smembers(self.index_key())
            .await
            .map_err(unavailable)?;
        for id in ids {
            let _: () = connection
                .del(self.record_key(&id))
                .await
                .map_err(unavailable)?;
        }
        let _: () = connection
            .del(self.index_key())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ReplicaRegistry for RedisRegistry {
    async fn heartbeat(
        &self,
        registration: RegisterReplica,
        ttl: Duration,
    ) -> Result<ReplicaRecord, RegistryError> {
        let id = replica_id(&registration.partition_key, registration.ordinal);
        let mut connection = self.connection.clone();
        let previous: Option<String> = connection
            .get(self.record_key(&id))
            .await
            .map_err(unavailable)?;
        let now = now_ms();
        let registered_at_ms = previous
            .and_then(|json| serde_json::from_str::<ReplicaRecord>(&json).ok())
            .map_or(now, |record| record.registered_at_ms);
        let record = ReplicaRecord {
            replica_id: id.clone(),
            registration,
            registered_at_ms,
            last_seen_ms: now,
        };
        let json = serde_json::to_string(&record)
            .map_err(|error| RegistryError::Internal(anyhow::Error::new(error)))?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.record_key(&id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(self.index_key())
            .arg(&id)
            .ignore()
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(record)
    }

    async fn deregister(&self, partition_key: &str, ordinal: u32) -> Result<bool, RegistryError> {
        let id = replica_id(partition_key, ordinal);
        let mut connection = self.connection.clone();
        let (deleted, _removed): (u64, u64) = redis::pipe()
            .atomic()
            .del(self.record_key(&id))
            .srem(self.index_key(), &id)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(deleted > 0)
    }

    async fn list(&self) -> Result<Vec<ReplicaRecord>, RegistryError> {
        let mut connection = self.connection.clone();
        let mut ids: Vec<String> = connection
            .smembers(self.index_key())
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| self.record_key(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut records = Vec::with_capacity(ids.len());
        for (id, value) in ids.iter().zip(values) {
            match value.and_then(|json| serde_json::from_str::<ReplicaRecord>(&json).ok()) {
                Some(record) => records.push(record),
                None => {
                    let _: () = connection
                        .srem(self.index_key(), id)
                        .await
                        .map_err(unavailable)?;
                }
            }
        }
        Ok(records)
    }
}
