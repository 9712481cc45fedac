//! A small expiring map for the caches on the request path (API keys, principals, model
//! resolution): short TTLs bound how stale an answer may be, across replicas too.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A small map whose entries expire. Bounded: when full, expired entries are swept, and if
/// still full, everything is dropped (a cache miss is only a store query).
pub(crate) struct TtlCache<V> {
    entries: Mutex<HashMap<String, (V, Instant)>>,
}

const TTL_CACHE_CAPACITY: usize = 10_000;

impl<V> Default for TtlCache<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone())
    }

    pub(crate) fn insert(&self, key: String, value: V, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= TTL_CACHE_CAPACITY {
            let now = Instant::now();
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= TTL_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (value, Instant::now() + ttl));
    }

    /// Forget everything: after a change that may grant or revoke access on this replica.
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
