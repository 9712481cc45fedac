//! Registration with the control plane, as an actor (one task owns the heartbeat loop; the
//! [`Registration`] handle sends it commands).
//!
//! Per the contract in `adaptive_api_types::harmony`: POST `RegisterReplica` to
//! `{CONTROL_PLANE_URL}/internal/harmony/register` at start and then every
//! `heartbeat_interval_ms` from the reply (retrying on failure), load any `desired_models` this
//! replica lacks, report `Draining` when asked, and POST `/internal/harmony/deregister` last.
//!
//! Which models the desired list may unload: only those this actor loaded *because* they were
//! desired. Once such a model is missing from a reply (its deployment was removed or moved), it
//! is deallocated; its in-flight requests end with "shutting down", as on `POST
//! /models/dealloc`. Models loaded any other way (`HARMONY_PRELOAD_MODELS`, `--model`, `POST
//! /models/spawn`, [`crate::HarmonyHandle::spawn_model`]) are never unloaded by the control
//! plane's list, and neither is a desired model that was already loaded that way: whoever loaded
//! it explicitly unloads it explicitly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use adaptive_api_types::harmony::{
    DeregisterReplica, RegisterReplica, RegisterReplicaResponse, ReplicaLoad, ReplicaStatus,
    SpawnModel,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::ReplicaIdentity;
use crate::models::ModelRegistry;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

enum Command {
    /// Report `Draining` now; the reply comes once the control plane was told (or failed).
    Drain(oneshot::Sender<()>),
    /// Deregister and stop.
    Deregister(oneshot::Sender<()>),
}

#[derive(Clone, Debug)]
pub struct Registration {
    commands: mpsc::Sender<Command>,
}

impl Registration {
    pub fn spawn(
        control_plane_url: String,
        identity: ReplicaIdentity,
        retry: Duration,
        models: Arc<ModelRegistry>,
        capacity_ends_at: Option<String>,
    ) -> Self {
        let (commands, receiver) = mpsc::channel(4);
        let actor = RegistrationActor {
            control_plane_url,
            identity,
            retry,
            models,
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
            status: ReplicaStatus::Online,
            capacity_ends_at,
            loaded_because_desired: HashSet::new(),
        };
        tokio::spawn(actor.run(receiver));
        Self { commands }
    }

    pub async fn drain(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Drain(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    pub async fn deregister(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Deregister(reply)).await.is_ok() {
            let _ = done.await;
        }
    }
}

struct RegistrationActor {
    control_plane_url: String,
    identity: ReplicaIdentity,
    retry: Duration,
    models: Arc<ModelRegistry>,
    client: reqwest::Client,
    status: ReplicaStatus,
    /// `CAPACITY_RESERVATION_END`, reported as `capacity_ends_at`.
    capacity_ends_at: Option<String>,
    /// Keys this actor started loading because the control plane listed them (see the module
    /// docs); the only models it unloads.
    loaded_because_desired: HashSet<String>,
}

impl RegistrationActor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut drain_reply: Option<oneshot::Sender<()>> = None;
        loop {
            let interval = match self.register().await {
                Ok(reply) => {
                    if self.status == ReplicaStatus::Online {
                        self.reconcile(&reply);
                        self.unload_undesired(&reply);
                    }
                    Duration::from_millis(reply.heartbeat_interval_ms.max(100))
                }
                Err(error) => {
                    tracing::warn!(url = %self.control_plane_url, %error, "registration with the control plane failed");
                    self.retry
                }
            };
            if let Some(reply) = drain_reply.take() {
                let _ = reply.send(());
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                command = commands.recv() => match command {
                    Some(Command::Drain(reply)) => {
                        self.status = ReplicaStatus::Draining;
                        drain_reply = Some(reply);
                    }
                    Some(Command::Deregister(reply)) => {
                        self.deregister().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    fn registration(&self) -> RegisterReplica {
        let models = self.models.list();
        let mut load = ReplicaLoad::default();
        for model in &models {
            let stats = model.engine.stats();
            let as_u32 = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
            load.running_sequences += as_u32(stats.running_sequences);
            load.queued_sequences += as_u32(stats.waiting_sequences);
            load.kv_blocks_used += as_u32(stats.kv_blocks_in_use);
            load.kv_blocks_total += as_u32(stats.kv_blocks_total);
        }
        RegisterReplica {
            group: self.identity.group.clone(),
            partition_key: self.identity.partition_key.clone(),
            ordinal: self.identity.ordinal,
            gpu_count: self.identity.gpu_count,
            gpu_types: Vec::new(),
            advertised_url: self.identity.advertised_url.clone(),
            capabilities: self.identity.capabilities.clone(),
            status: self.status,
            online_models: models.iter().map(|model| model.online_view()).collect(),
            load,
            capacity_ends_at: self.capacity_ends_at.clone(),
        }
    }

    async fn register(&self) -> Result<RegisterReplicaResponse, reqwest::Error> {
        self.client
            .post(format!(
                "{}/internal/harmony/register",
                self.control_plane_url
            ))
            .json(&self.registration())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// Starts loading the desired models this replica lacks (in the background, so heartbeats
    /// keep going during a long load).
    fn reconcile(&mut self, reply: &RegisterReplicaResponse) {
        for desired in &reply.desired_models {
            if self.models.is_loaded_or_loading(&desired.key) {
                continue;
            }
            self.loaded_because_desired.insert(desired.key.clone());
            let models = Arc::clone(&self.models);
            let request = SpawnModel {
                key: desired.key.clone(),
                path: desired.path.clone(),
                max_seq_len: desired.max_seq_len,
                kv_cache_len: desired.kv_cache_len,
            };
            tokio::spawn(async move {
                let key = request.key.clone();
                if let Err(error) = models.spawn(request).await {
                    tracing::warn!(model = %key, %error, "cannot load a desired model");
                }
            });
        }
    }

    /// Deallocates the models loaded because they were desired that the reply no longer lists.
    /// One still loading is kept track of and unloaded once it is online.
    fn unload_undesired(&mut self, reply: &RegisterReplicaResponse) {
        let desired: HashSet<&str> = reply
            .desired_models
            .iter()
            .map(|model| model.key.as_str())
            .collect();
        let models = &self.models;
        self.loaded_because_desired.retain(|key| {
            if desired.contains(key.as_str()) {
                return true;
            }
            if models.get(key).is_err() {
                // Still loading: unload it at a later heartbeat. Failed or gone: forget it.
                return models.is_loaded_or_loading(key);
            }
            tracing::info!(model = %key, "model no longer desired by the control plane; unloading");
            if let Err(error) = models.dealloc(key) {
                tracing::warn!(model = %key, %error, "cannot unload a model no longer desired");
            }
            false
        });
    }

    async fn deregister(&self) {
        let body = DeregisterReplica {
            partition_key: self.identity.partition_key.clone(),
            ordinal: self.identity.ordinal,
        };
        let outcome = self
            .client
            .post(format!(
                "{}/internal/harmony/deregister",
                self.control_plane_url
            ))
            .json(&body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(error) = outcome {
            tracing::warn!(%error, "deregistration failed; the control plane will expire this replica");
        }
    }
}
