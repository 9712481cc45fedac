//! The control plane's side of the gateway seam: [`StoreDirectory`] resolves callers and models
//! from the metadata store and the replica registry, and [`StoreInteractionSink`] writes
//! recorded interactions into the store.
//!
//! Every inference call authenticates and resolves, so both are cached for a short time
//! (`CacheTtl`): an API key's owner for a few seconds, a model service and its replicas for well
//! under a second. Revoking a key or draining a replica therefore takes effect within that TTL;
//! a replica that vanished within it costs one retry in the gateway, never an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adaptive_api_types::ErrorCode;
use adaptive_gateway::{
    Caller, Directory, GatewayError, InteractionRecord, InteractionStore, ModelListing, Replica,
    ResolvedModel, StoreError as SinkError,
};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::registry::{routable_replicas_for_model, SharedRegistry};
use crate::store::{ChatMessage, Label, MetadataStore, NewInteraction, StoreError};

/// How long resolved answers are reused.
#[derive(Debug, Clone, Copy)]
pub struct CacheTtl {
    pub api_key: Duration,
    pub model: Duration,
}

impl Default for CacheTtl {
    fn default() -> Self {
        Self {
            api_key: Duration::from_secs(5),
            model: Duration::from_millis(500),
        }
    }
}

pub struct StoreDirectory {
    store: MetadataStore,
    registry: SharedRegistry,
    ttl: CacheTtl,
    callers: TtlCache<Caller>,
    models: TtlCache<ResolvedModel>,
}

impl StoreDirectory {
    pub fn new(store: MetadataStore, registry: SharedRegistry, ttl: CacheTtl) -> Self {
        Self {
            store,
            registry,
            ttl,
            callers: TtlCache::default(),
            models: TtlCache::default(),
        }
    }
}

#[async_trait]
impl Directory for StoreDirectory {
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, GatewayError> {
        let token = crate::auth::bearer_token(headers)
            .map_err(|reason| GatewayError::Unauthenticated(reason.to_owned()))?;
        // The cache is keyed by a digest so plaintext keys never sit in memory longer than the request.
        let cache_key = hex::encode(Sha256::digest(token.as_bytes()));
        if let Some(caller) = self.callers.get(&cache_key) {
            return Ok(caller);
        }
        let user = self
            .store
            .user_for_api_key(token)
            .await
            .map_err(store_error)?
            .ok_or_else(|| GatewayError::Unauthenticated("invalid API key".into()))?;
        let caller = Caller {
            user_id: Some(user.id),
            api_key_id: Some(cache_key[..16].to_owned()),
        };
        self.callers
            .insert(cache_key, caller.clone(), self.ttl.api_key);
        Ok(caller)
    }

    async fn resolve(&self, _caller: &Caller, model: &str) -> Result<ResolvedModel, GatewayError> {
        if let Some(resolved) = self.models.get(model) {
            return Ok(resolved);
        }
        let service = self
            .store
            .resolve_model_service(model)
            .await
            .map_err(store_error)?;
        let replicas = if service.desired_online {
            routable_replicas_for_model(self.registry.as_ref(), &service.model_key)
                .await
                .map_err(|error| GatewayError::Unavailable(format!("replica registry: {error}")))?
                .into_iter()
                .map(|record| Replica {
                    id: record.replica_id,
                    url: record.registration.advertised_url,
                })
                .collect()
        } else {
            Vec::new()
        };
        let resolved = ResolvedModel {
            project_id: service.project_id,
            project_key: service.project_key,
            model_service_id: service.model_service_id,
            model_service_key: service.model_service_key,
            model_id: service.model_id,
            model_key: service.model_key,
            replicas,
        };
        self.models
            .insert(model.to_owned(), resolved.clone(), self.ttl.model);
        Ok(resolved)
    }

    async fn list_models(&self, _caller: &Caller) -> Result<Vec<ModelListing>, GatewayError> {
        let mut listings = Vec::new();
        for project in self.store.list_projects().await.map_err(store_error)? {
            if project.archived {
                continue;
            }
            for service in self
                .store
                .list_model_services(&project.id)
                .await
                .map_err(store_error)?
            {
                listings.push(ModelListing {
                    id: format!("{}/{}", project.key, service.key),
                    created_unix: service.created_at / 1000,
                    owned_by: project.key.clone(),
                });
            }
        }
        Ok(listings)
    }
}

fn store_error(error: StoreError) -> GatewayError {
    let message = error.to_string();
    match error.error_code() {
        ErrorCode::NotFound => GatewayError::NotFound(message),
        ErrorCode::InvalidRequest => GatewayError::InvalidRequest(message),
        ErrorCode::Unavailable => GatewayError::Unavailable(message),
        _ => GatewayError::internal("metadata store", format!("{error:?}")),
    }
}

pub struct StoreInteractionSink {
    store: MetadataStore,
}

impl StoreInteractionSink {
    pub fn new(store: MetadataStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl InteractionStore for StoreInteractionSink {
    async fn store_interactions(&self, batch: &[InteractionRecord]) -> Result<(), SinkError> {
        let rows: Vec<NewInteraction> = batch.iter().map(to_new_interaction).collect();
        self.store
            .insert_interactions(&rows)
            .await
            .map(|_| ())
            .map_err(|error| SinkError(error.to_string()))
    }
}

fn to_new_interaction(record: &InteractionRecord) -> NewInteraction {
    let chat_messages = record
        .messages
        .as_array()
        .map(|messages| messages.iter().map(message_text).collect())
        .unwrap_or_default();
    let mut labels: Vec<Label> = record
        .labels
        .iter()
        .map(|(key, value)| Label {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    labels.extend(record.tags.iter().map(|tag| Label {
        key: "tag".into(),
        value: tag.clone(),
    }));
    NewInteraction {
        id: record.completion_id.to_string(),
        project_id: record.project_id.clone(),
        model_service_id: Some(record.model_service_id.clone()),
        model_id: Some(record.model_id.clone()),
        chat_messages,
        completion: Some(record.completion.clone()),
        source: "LIVE".into(),
        session_id: Some(record.session_id.to_string()),
        created_by: record.caller.user_id.clone(),
        labels,
        metadata: serde_json::json!({
            "parameters": record.parameters,
            "timings": {"ttft_ms": record.ttft_ms, "total_ms": record.total_ms},
            "system": {"replica": record.replica_id, "kind": record.kind, "finish_reason": record.finish_reason},
            "user": record.metadata,
        }),
        prompt_tokens: record.usage.prompt_tokens as i64,
        completion_tokens: record.usage.completion_tokens as i64,
        created_at: record.created_at.timestamp_millis(),
    }
}

/// Chat content may be a string or an array of parts; the store keeps the text.
fn message_text(message: &serde_json::Value) -> ChatMessage {
    let role = message
        .get("role")
        .and_then(|role| role.as_str())
        .unwrap_or("user")
        .to_owned();
    let content = match message.get("content") {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(|text| text.as_str()))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    ChatMessage { role, content }
}

/// A small map whose entries expire. Bounded: when full, expired entries are swept, and if
/// still full, everything is dropped (a cache miss is only a store query).
struct TtlCache<V> {
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
    fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone())
    }

    fn insert(&self, key: String, value: V, ttl: Duration) {
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
}

/// Shared ownership for the gateway state.
pub fn directory(store: MetadataStore, registry: SharedRegistry) -> Arc<dyn Directory> {
    Arc::new(StoreDirectory::new(store, registry, CacheTtl::default()))
}
