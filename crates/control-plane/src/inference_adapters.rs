//! The control plane's side of the gateway seam: [`StoreDirectory`] resolves callers and models
//! from the metadata store and the replica registry, and [`StoreInteractionSink`] writes
//! recorded interactions into the store.
//!
//! Every inference call authenticates and resolves, so both are cached for a short time
//! (`CacheTtl`): an API key's owner for a few seconds, a model service and its replicas for well
//! under a second. Revoking a key or draining a replica therefore takes effect within that TTL;
//! a replica that vanished within it costs one retry in the gateway, never an error.

use std::sync::Arc;
use std::time::Duration;

use adaptive_api_types::ErrorCode;
use adaptive_gateway::{
    Caller, Directory, GatewayError, InteractionRecord, InteractionStore, ModelListing, Replica,
    ResolvedModel, StoreError as SinkError,
};
use async_trait::async_trait;

use crate::auth::policy::INFERENCE_PERMISSION;
use crate::auth::{Authenticator, Credential, Principal};
use crate::error::ApiError;
use crate::registry::{routable_replicas_for_model, SharedRegistry};
use crate::store::{ChatMessage, Label, MetadataStore, NewInteraction, NewUsage, StoreError};
use crate::ttl_cache::TtlCache;

/// How long resolved models are reused (callers are cached by the [`Authenticator`]).
#[derive(Debug, Clone, Copy)]
pub struct CacheTtl {
    pub model: Duration,
}

impl Default for CacheTtl {
    fn default() -> Self {
        Self {
            model: Duration::from_millis(500),
        }
    }
}

pub struct StoreDirectory {
    store: MetadataStore,
    registry: SharedRegistry,
    ttl: CacheTtl,
    /// API keys, sessions and permissions (its own short-lived caches).
    auth: Arc<Authenticator>,
    models: TtlCache<ResolvedModel>,
}

impl StoreDirectory {
    pub fn new(
        store: MetadataStore,
        registry: SharedRegistry,
        auth: Arc<Authenticator>,
        ttl: CacheTtl,
    ) -> Self {
        Self {
            store,
            registry,
            ttl,
            auth,
            models: TtlCache::default(),
        }
    }
}

#[async_trait]
impl Directory for StoreDirectory {
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, GatewayError> {
        // Inference changes state (it is logged), so a cookie session must carry its CSRF token.
        let caller = self
            .auth
            .authenticate(&http::Method::POST, headers)
            .await
            .map_err(api_error)?;
        let api_key_id = match caller.credential {
            Credential::ApiKey { key_id } => Some(key_id),
            Credential::Session { .. } => None,
        };
        Ok(Caller {
            user_id: Some(caller.principal.user.id.clone()),
            api_key_id,
        })
    }

    async fn resolve(&self, caller: &Caller, model: &str) -> Result<ResolvedModel, GatewayError> {
        let resolved = self.resolve_model(model).await?;
        let principal = self.principal(caller).await?;
        if !principal.can(INFERENCE_PERMISSION, Some(&resolved.project_id)) {
            return Err(GatewayError::PermissionDenied(format!(
                "calling models of project '{}' needs the permission {INFERENCE_PERMISSION}",
                resolved.project_key
            )));
        }
        Ok(resolved)
    }

    async fn list_models(&self, caller: &Caller) -> Result<Vec<ModelListing>, GatewayError> {
        let principal = self.principal(caller).await?;
        let mut listings = Vec::new();
        for project in self.store.list_projects().await.map_err(store_error)? {
            if project.archived || !principal.can(INFERENCE_PERMISSION, Some(&project.id)) {
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

impl StoreDirectory {
    async fn principal(&self, caller: &Caller) -> Result<Arc<Principal>, GatewayError> {
        let user_id = caller
            .user_id
            .as_deref()
            .ok_or_else(|| GatewayError::Unauthenticated("no user".into()))?;
        self.auth.principal(user_id).await.map_err(api_error)
    }

    async fn resolve_model(&self, model: &str) -> Result<ResolvedModel, GatewayError> {
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
}

fn api_error(error: ApiError) -> GatewayError {
    let message = error.public_message();
    match error.error_code() {
        ErrorCode::Unauthenticated => GatewayError::Unauthenticated(message),
        ErrorCode::PermissionDenied => GatewayError::PermissionDenied(message),
        ErrorCode::NotFound => GatewayError::NotFound(message),
        ErrorCode::InvalidRequest => GatewayError::InvalidRequest(message),
        ErrorCode::Unavailable => GatewayError::Unavailable(message),
        _ => GatewayError::internal("authentication", format!("{error:?}")),
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
        let interactions: Vec<NewInteraction> = batch
            .iter()
            .filter(|record| record.stored)
            .map(to_new_interaction)
            .collect();
        let usage: Vec<NewUsage> = batch.iter().map(to_new_usage).collect();
        self.store
            .insert_gateway_batch(&interactions, &usage)
            .await
            .map(|_| ())
            .map_err(|error| SinkError(error.to_string()))
    }
}

fn to_new_usage(record: &InteractionRecord) -> NewUsage {
    NewUsage {
        id: record.completion_id.to_string(),
        project_id: record.project_id.clone(),
        model_service_id: Some(record.model_service_id.clone()),
        model_id: Some(record.model_id.clone()),
        user_id: record.caller.user_id.clone(),
        api_key_id: record.caller.api_key_id.clone(),
        prompt_tokens: record.usage.prompt_tokens as i64,
        completion_tokens: record.usage.completion_tokens as i64,
        created_at: record.created_at.timestamp_millis(),
    }
}

fn to_new_interaction(record: &InteractionRecord) -> NewInteraction {
    let chat_messages = record
        .message_texts()
        .into_iter()
        .map(|message| ChatMessage {
            role: message.role,
            content: message.content,
        })
        .collect();
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

/// Shared ownership for the gateway state.
pub fn directory(
    store: MetadataStore,
    registry: SharedRegistry,
    auth: Arc<Authenticator>,
) -> Arc<dyn Directory> {
    Arc::new(StoreDirectory::new(
        store,
        registry,
        auth,
        CacheTtl::default(),
    ))
}
