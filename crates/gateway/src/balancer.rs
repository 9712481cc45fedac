//! Replica choice: fewest outstanding tokens, with session and prefix affinity.
//!
//! Every request in flight holds a [`Lease`] on its replica for its estimated token cost (prompt
//! plus max_tokens); the lease is released when the response ends, however it ends. A request
//! goes to the replica with the fewest outstanding tokens, unless:
//! - its `session_id` was last served by a replica that is still routable and not much busier
//!   than the least-loaded one (within `affinity_slack_tokens`): the session's KV cache is there;
//! - failing that, its prompt prefix (a hash of the first `prefix_bytes` of the prompt, for
//!   prompts at least that long) was last served by such a replica: the prefix cache is there.
//!
//! Affinity is advisory state local to this control-plane replica: losing it costs cache hits,
//! never correctness. Both maps are bounded; the oldest entries go first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Replica;

#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// How much busier (in outstanding tokens) than the least-loaded replica an affine replica
    /// may be and still get the request.
    pub affinity_slack_tokens: u64,
    /// Prompts shorter than this have no prefix affinity; longer ones hash this many bytes.
    pub prefix_bytes: usize,
    /// Entries kept per affinity map.
    pub affinity_capacity: usize,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            affinity_slack_tokens: 8192,
            prefix_bytes: 1024,
            affinity_capacity: 100_000,
        }
    }
}

#[derive(Clone)]
pub struct Balancer {
    inner: Arc<BalancerInner>,
}

struct BalancerInner {
    config: BalancerConfig,
    outstanding: Mutex<HashMap<String, Arc<AtomicU64>>>,
    sessions: Mutex<BoundedMap>,
    prefixes: Mutex<BoundedMap>,
}

/// What the caller knows about a request when choosing a replica.
#[derive(Debug, Clone, Default)]
pub struct RouteHints {
    pub session_key: Option<String>,
    pub prefix_hash: Option<u64>,
    pub estimated_tokens: u64,
}

/// A reservation of `tokens` on a replica; released on drop.
#[derive(Debug)]
pub struct Lease {
    pub replica: Replica,
    counter: Arc<AtomicU64>,
    tokens: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.tokens, Ordering::Relaxed);
    }
}

impl Balancer {
    pub fn new(config: BalancerConfig) -> Self {
        let capacity = config.affinity_capacity;
        Self {
            inner: Arc::new(BalancerInner {
                config,
                outstanding: Mutex::new(HashMap::new()),
                sessions: Mutex::new(BoundedMap::new(capacity)),
                prefixes: Mutex::new(BoundedMap::new(capacity)),
            }),
        }
    }

    /// The prefix-affinity key of a prompt, if it is long enough to have one.
    pub fn prefix_hash(&self, prompt: &str) -> Option<u64> {
        let prefix_bytes = self.inner.config.prefix_bytes;
        if prompt.len() < prefix_bytes {
            return None;
        }
        // FNV-1a: stable across processes, so every control-plane replica agrees.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in &prompt.as_bytes()[..prefix_bytes] {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Some(hash)
    }

    /// Outstanding tokens currently leased on a replica.
    pub fn outstanding_tokens(&self, replica_id: &str) -> u64 {
        self.counter(replica_id).load(Ordering::Relaxed)
    }

    /// Chooses among `replicas` minus `excluded` and leases the estimated tokens on the choice.
    pub fn pick(
        &self,
        replicas: &[Replica],
        excluded: &HashSet<String>,
        hints: &RouteHints,
    ) -> Option<Lease> {
        let candidates: Vec<(&Replica, Arc<AtomicU64>)> = replicas
            .iter()
            .filter(|replica| !excluded.contains(&replica.id))
            .map(|replica| (replica, self.counter(&replica.id)))
            .collect();
        let least_loaded = candidates
            .iter()
            .map(|(_, counter)| counter.load(Ordering::Relaxed))
            .min()?;
        let within_slack = |replica_id: &str| {
            candidates
                .iter()
                .find(|(replica, _)| replica.id == replica_id)
                .filter(|(_, counter)| {
                    counter.load(Ordering::Relaxed)
                        <= least_loaded + self.inner.config.affinity_slack_tokens
                })
        };

        let session_choice = hints
            .session_key
            .as_ref()
            .and_then(|key| lock(&self.inner.sessions).get(key))
            .and_then(|replica_id| within_slack(&replica_id));
        let prefix_choice = || {
            hints
                .prefix_hash
                .and_then(|hash| lock(&self.inner.prefixes).get(&hash.to_string()))
                .and_then(|replica_id| within_slack(&replica_id))
        };
        let least_loaded_choice = || {
            candidates
                .iter()
                .min_by(|(replica, counter), (other, other_counter)| {
                    counter
                        .load(Ordering::Relaxed)
                        .cmp(&other_counter.load(Ordering::Relaxed))
                        .then_with(|| replica.id.cmp(&other.id))
                })
        };
        let (replica, counter) = session_choice
            .or_else(prefix_choice)
            .or_else(least_loaded_choice)?;

        if let Some(key) = &hints.session_key {
            lock(&self.inner.sessions).insert(key.clone(), replica.id.clone());
        }
        if let Some(hash) = hints.prefix_hash {
            lock(&self.inner.prefixes).insert(hash.to_string(), replica.id.clone());
        }
        counter.fetch_add(hints.estimated_tokens, Ordering::Relaxed);
        Some(Lease {
            replica: (*replica).clone(),
            counter: counter.clone(),
            tokens: hints.estimated_tokens,
        })
    }

    fn counter(&self, replica_id: &str) -> Arc<AtomicU64> {
        let mut outstanding = lock(&self.inner.outstanding);
        if let Some(counter) = outstanding.get(replica_id) {
            return counter.clone();
        }
        outstanding
            .entry(replica_id.to_owned())
            .or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold advisory data; a panic elsewhere while holding the lock leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A map that forgets its oldest insertions beyond a capacity.
struct BoundedMap {
    capacity: usize,
    entries: HashMap<String, String>,
    order: VecDeque<String>,
}

impl BoundedMap {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: String, value: String) {
        if self.entries.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(count: usize) -> Vec<Replica> {
        (0..count)
            .map(|index| Replica {
                id: format!("r{index}"),
                url: format!("http://r{index}"),
            })
            .collect()
    }

    fn hints(tokens: u64) -> RouteHints {
        RouteHints {
            estimated_tokens: tokens,
            ..RouteHints::default()
        }
    }

    #[test]
    fn spreads_by_outstanding_tokens() {
        let balancer = Balancer::new(BalancerConfig::default());
        let pool = replicas(3);
        let heavy = balancer
            .pick(&pool, &HashSet::new(), &hints(1000))
            .expect("a replica");
        let light = balancer
            .pick(&pool, &HashSet::new(), &hints(10))
            .expect("a replica");
        let third = balancer
            .pick(&pool, &HashSet::new(), &hints(10))
            .expect("a replica");
        let distinct: HashSet<_> = [&heavy.replica.id, &light.replica.id, &third.replica.id]
            .into_iter()
            .collect();
        assert_eq!(
            distinct.len(),
            3,
            "each new request goes to an idle replica"
        );
        let fourth = balancer
            .pick(&pool, &HashSet::new(), &hints(10))
            .expect("a replica");
        assert_ne!(
            fourth.replica.id, heavy.replica.id,
            "the busiest replica is avoided"
        );
        drop(heavy);
        assert_eq!(
            balancer.outstanding_tokens("r0")
                + balancer.outstanding_tokens("r1")
                + balancer.outstanding_tokens("r2"),
            30
        );
    }

    #[test]
    fn session_affinity_holds_until_the_replica_is_overloaded_or_gone() {
        let balancer = Balancer::new(BalancerConfig {
            affinity_slack_tokens: 100,
            ..BalancerConfig::default()
        });
        let pool = replicas(2);
        let session = RouteHints {
            session_key: Some("s1".into()),
            estimated_tokens: 10,
            ..RouteHints::default()
        };
        let first = balancer
            .pick(&pool, &HashSet::new(), &session)
            .expect("a replica");
        let affine_id = first.replica.id.clone();
        drop(first);
        for _ in 0..5 {
            let again = balancer
                .pick(&pool, &HashSet::new(), &session)
                .expect("a replica");
            assert_eq!(again.replica.id, affine_id);
        }
        let _load = balancer.pick(
            &[pool
                .iter()
                .find(|r| r.id == affine_id)
                .cloned()
                .expect("exists")],
            &HashSet::new(),
            &hints(500),
        );
        let moved = balancer
            .pick(&pool, &HashSet::new(), &session)
            .expect("a replica");
        assert_ne!(
            moved.replica.id, affine_id,
            "an overloaded affine replica is skipped"
        );
        drop(moved);
        let without_it: Vec<_> = pool.iter().filter(|r| r.id != affine_id).cloned().collect();
        let excluded: HashSet<String> = HashSet::new();
        assert_ne!(
            balancer
                .pick(&without_it, &excluded, &session)
                .expect("a replica")
                .replica
                .id,
            affine_id
        );
    }

    #[test]
    fn prefix_affinity_sends_a_shared_long_prefix_to_the_same_replica() {
        let balancer = Balancer::new(BalancerConfig {
            prefix_bytes: 16,
            ..BalancerConfig::default()
        });
        let pool = replicas(4);
        let prefix = balancer.prefix_hash("a long shared system prompt, then question one");
        assert_eq!(
            prefix,
            balancer.prefix_hash("a long shared system prompt, then another question")
        );
        assert_eq!(balancer.prefix_hash("short"), None);
        let first = balancer
            .pick(
                &pool,
                &HashSet::new(),
                &RouteHints {
                    prefix_hash: prefix,
                    estimated_tokens: 1,
                    ..RouteHints::default()
                },
            )
            .expect("a replica");
        let second = balancer
            .pick(
                &pool,
                &HashSet::new(),
                &RouteHints {
                    prefix_hash: prefix,
                    estimated_tokens: 1,
                    ..RouteHints::default()
                },
            )
            .expect("a replica");
        assert_eq!(first.replica.id, second.replica.id);
    }

    #[test]
    fn excluded_replicas_are_never_chosen() {
        let balancer = Balancer::new(BalancerConfig::default());
        let pool = replicas(2);
        let excluded: HashSet<String> = ["r0".to_owned()].into_iter().collect();
        for _ in 0..10 {
            assert_eq!(
                balancer
                    .pick(&pool, &excluded, &hints(1))
                    .expect("a replica")
                    .replica
                    .id,
                "r1"
            );
        }
        let all: HashSet<String> = ["r0".to_owned(), "r1".to_owned()].into_iter().collect();
        assert!(balancer.pick(&pool, &all, &hints(1)).is_none());
    }

    #[test]
    fn bounded_map_forgets_the_oldest() {
        let mut map = BoundedMap::new(2);
        map.insert("a".into(), "1".into());
        map.insert("b".into(), "2".into());
        map.insert("c".into(), "3".into());
        assert_eq!(map.get("a"), None);
        assert_eq!(map.get("c").as_deref(), Some("3"));
    }
}
