//! The model registry on object storage as the control plane sees it: deleting a model removes
//! the objects of its `model_registry://<key>` entry.
//!
//! Opened once from `model_registry` (`ADAPTIVE_MODEL_REGISTRY`, by default
//! `<data_dir>/model_registry`) with the process's `AWS_*` variables, the same location and
//! credential chain harmony reads it with (see `adaptive_registry::location`). A location that
//! cannot be opened is logged at startup; deleting a registry model then fails with
//! `unavailable` and everything else keeps working.
//!
//! [`delete_model`] orders the work so that every failure can be retried: refuse while the
//! model is deployed, remove the registry objects (a model already gone counts as removed), and
//! only then delete the database rows, again refusing if a deploy slipped in meanwhile.

use adaptive_api_types::ErrorCode;
use adaptive_registry::{
    ModelKey, Registry, RegistryError, RegistryStore, StoreEnv, MODEL_REGISTRY_SCHEME,
};

use crate::error::ApiError;
use crate::store::{MetadataStore, Model};

#[derive(Debug, thiserror::Error)]
pub enum ModelStorageError {
    #[error("the model registry at '{location}' cannot be used: {reason}")]
    Unusable { location: String, reason: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl ModelStorageError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ModelStorageError::Unusable { .. } => ErrorCode::Unavailable,
            ModelStorageError::Registry(error) => error.error_code(),
        }
    }
}

/// A handle on the model registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ModelStorage {
    location: String,
    registry: Result<Registry, String>,
}

impl ModelStorage {
    pub fn open(location: &str, env: &StoreEnv) -> Self {
        let registry = RegistryStore::from_url(location, env)
            .map(Registry::new)
            .map_err(|error| {
                tracing::error!(%location, %error, "cannot open the model registry: deleting registry models will fail");
                error.to_string()
            });
        Self {
            location: location.to_owned(),
            registry,
        }
    }

    /// The registry root's object store, also home to chunked uploads ([`crate::uploads`]).
    pub fn objects(&self) -> Result<RegistryStore, ModelStorageError> {
        self.registry
            .as_ref()
            .map(|registry| registry.store().clone())
            .map_err(|reason| ModelStorageError::Unusable {
                location: self.location.clone(),
                reason: reason.clone(),
            })
    }

    /// Removes every object of a `model_registry://<key>` model and returns how many there
    /// were (0 when the model was already gone). Other paths (local files and directories) are
    /// not the registry's and are left alone.
    pub async fn delete_objects(&self, model_path: &str) -> Result<usize, ModelStorageError> {
        let Some(key) = model_path.strip_prefix(MODEL_REGISTRY_SCHEME) else {
            return Ok(0);
        };
        let key = ModelKey::parse(key)?;
        let registry = self
            .registry
            .as_ref()
            .map_err(|reason| ModelStorageError::Unusable {
                location: self.location.clone(),
                reason: reason.clone(),
            })?;
        match registry.delete_model(&key).await {
            Ok(deleted) => Ok(deleted.objects_deleted),
            Err(RegistryError::ModelNotFound { .. }) => Ok(0),
            Err(error) => Err(error.into()),
        }
    }
}

/// Deletes a model: refused with `conflict` while a project has it deployed; otherwise its
/// registry objects (unless another model entry loads from the same path), then its project
/// attachments and its entry. See the module docs for the order.
pub async fn delete_model(
    store: &MetadataStore,
    storage: &ModelStorage,
    id_or_key: &str,
) -> Result<Model, ApiError> {
    let model = store.get_model(id_or_key).await?;
    store.ensure_model_not_deployed(&model).await?;
    let shares_its_path = store.count_models_with_path(&model.path).await? > 1;
    if !shares_its_path {
        let objects_deleted = storage.delete_objects(&model.path).await?;
        tracing::info!(model = %model.key, path = %model.path, objects_deleted, "model objects deleted");
    }
    let deleted = store.delete_model(&model.id).await?;
    tracing::info!(model = %deleted.key, "model deleted");
    Ok(deleted)
}
