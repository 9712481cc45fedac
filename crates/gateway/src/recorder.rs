//! Interaction recording off the hot path.
//!
//! Handlers hand finished interactions to a bounded queue and return; one writer task takes
//! whatever is queued (up to `max_batch`) and inserts it in one call. When the queue is full the
//! handler waits for room instead of dropping the record: losing an acknowledged interaction is
//! worse than a slower response. A failed insert is retried with backoff; inserts are idempotent
//! on the completion id, so a retry after an unobserved success stores nothing twice.
//!
//! Shutdown: the server first stops accepting requests and waits for in-flight ones (whose
//! records are then queued), then [`Recorder::shutdown`] drains the queue and waits for the last
//! insert, within a grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::{InteractionRecord, InteractionStore};

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            max_batch: 256,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// The sending side, held by the handlers.
#[derive(Clone)]
pub struct RecorderHandle {
    sender: mpsc::Sender<InteractionRecord>,
}

impl RecorderHandle {
    /// Queues a record, waiting for room when the queue is full. Fails only after shutdown.
    pub async fn record(&self, record: InteractionRecord) -> Result<(), InteractionRecord> {
        self.sender.send(record).await.map_err(|error| error.0)
    }

    /// Records waiting to be written.
    pub fn queued(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

/// The writer task.
pub struct Recorder {
    stop: watch::Sender<bool>,
    writer: tokio::task::JoinHandle<u64>,
}

impl Recorder {
    pub fn spawn(
        store: Arc<dyn InteractionStore>,
        config: RecorderConfig,
    ) -> (Recorder, RecorderHandle) {
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let (stop, stop_signal) = watch::channel(false);
        let writer = tokio::spawn(write_loop(store, config, receiver, stop_signal));
        (Recorder { stop, writer }, RecorderHandle { sender })
    }

    /// Writes everything already queued, then stops. Returns how many records this recorder
    /// wrote in its life. Call it after the HTTP server has finished its in-flight requests.
    pub async fn shutdown(self, grace: Duration) -> u64 {
        let _ = self.stop.send(true);
        let abort = self.writer.abort_handle();
        match tokio::time::timeout(grace, self.writer).await {
            Ok(Ok(written)) => written,
            Ok(Err(join_error)) => {
                tracing::error!(%join_error, "interaction writer failed");
                0
            }
            Err(_) => {
                abort.abort();
                tracing::error!(
                    grace_ms = grace.as_millis() as u64,
                    "interaction writer did not finish within the grace period"
                );
                0
            }
        }
    }
}

async fn write_loop(
    store: Arc<dyn InteractionStore>,
    config: RecorderConfig,
    mut receiver: mpsc::Receiver<InteractionRecord>,
    mut stop_signal: watch::Receiver<bool>,
) -> u64 {
    let mut written: u64 = 0;
    let mut batch = Vec::with_capacity(config.max_batch);
    loop {
        let stopping = *stop_signal.borrow();
        if stopping {
            while batch.len() < config.max_batch {
                match receiver.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return written;
            }
        } else {
            tokio::select! {
                received = receiver.recv_many(&mut batch, config.max_batch) => {
                    if received == 0 {
                        return written;
                    }
                }
                _ = stop_signal.changed() => continue,
            }
        }
        written += insert_with_retry(store.as_ref(), &config, &batch).await;
        batch.clear();
    }
}

async fn insert_with_retry(
    store: &dyn InteractionStore,
    config: &RecorderConfig,
    batch: &[InteractionRecord],
) -> u64 {
    let mut backoff = config.initial_backoff;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match store.store_interactions(batch).await {
            Ok(()) => return batch.len() as u64,
            Err(error) => {
                tracing::warn!(%error, attempt, batch_len = batch.len(), "storing interactions failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Caller, StoreError, Usage};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Fails the first `failures` calls, then stores into a vector keyed by completion id.
    struct FlakyStore {
        failures: AtomicUsize,
        stored: Mutex<std::collections::BTreeMap<uuid::Uuid, InteractionRecord>>,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl InteractionStore for FlakyStore {
        async fn store_interactions(&self, batch: &[InteractionRecord]) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError("database unreachable".into()));
            }
            let mut stored = self.stored.lock().expect("not poisoned");
            for record in batch {
                stored
                    .entry(record.completion_id)
                    .or_insert_with(|| record.clone());
            }
            Ok(())
        }
    }

    fn record(index: usize) -> InteractionRecord {
        InteractionRecord {
            completion_id: uuid::Uuid::new_v4(),
            stored: true,
            session_id: uuid::Uuid::new_v4(),
            project_id: "p".into(),
            model_service_id: "ms".into(),
            model_id: "m".into(),
            caller: Caller {
                user_id: None,
                api_key_id: Some("k".into()),
            },
            kind: "chat".into(),
            messages: crate::JsonText::from_value(
                &serde_json::json!([{"role": "user", "content": format!("hello {index}")}]),
            ),
            completion: "hi".into(),
            finish_reason: Some("stop".into()),
            labels: Default::default(),
            tags: vec![],
            metadata: serde_json::Value::Null,
            parameters: serde_json::Value::Null,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
            },
            ttft_ms: Some(1.0),
            total_ms: 2.0,
            replica_id: "r0".into(),
            created_at: chrono::Utc::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_queued_record_is_stored_once_despite_failures_and_a_tiny_queue() {
        let store = Arc::new(FlakyStore {
            failures: AtomicUsize::new(3),
            stored: Mutex::default(),
            calls: AtomicUsize::new(0),
        });
        let config = RecorderConfig {
            queue_capacity: 2,
            max_batch: 4,
            ..RecorderConfig::default()
        };
        let (recorder, handle) = Recorder::spawn(store.clone(), config);
        let mut ids = Vec::new();
        for index in 0..25 {
            let record = record(index);
            ids.push(record.completion_id);
            handle.record(record).await.expect("recorder running");
        }
        let written = recorder.shutdown(Duration::from_secs(600)).await;
        assert_eq!(written, 25);
        let stored = store.stored.lock().expect("not poisoned");
        assert_eq!(stored.len(), 25);
        assert!(ids.iter().all(|id| stored.contains_key(id)));
        assert!(
            store.calls.load(Ordering::SeqCst) > 3,
            "failed batches were retried"
        );
    }

    #[tokio::test]
    async fn records_after_shutdown_are_refused_not_silently_dropped() {
        let store = Arc::new(FlakyStore {
            failures: AtomicUsize::new(0),
            stored: Mutex::default(),
            calls: AtomicUsize::new(0),
        });
        let (recorder, handle) = Recorder::spawn(store, RecorderConfig::default());
        recorder.shutdown(Duration::from_secs(5)).await;
        assert!(handle.record(record(0)).await.is_err());
    }
}
