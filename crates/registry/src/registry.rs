//! Reading, listing and deleting models in a registry.
//!
//! A model is visible exactly when `<key>/manifest.json` exists. Deletion removes the manifest
//! first, so a model disappears atomically for readers even if removing its files is
//! interrupted; the leftover objects are then an unfinished model that a second delete (or a
//! re-import of the same key) deals with.
//!
//! Refusing to delete a deployed model is the control plane's job: it owns deployments, so it
//! checks them before calling [`Registry::delete_model`]. This crate has no view of them.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::error::{RegistryError, Result};
use crate::key::ModelKey;
use crate::location::RegistryStore;
use crate::manifest::Manifest;

/// A handle on one registry root. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    store: RegistryStore,
}

/// What [`Registry::delete_model`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedModel {
    pub key: ModelKey,
    pub objects_deleted: usize,
    /// False when only the objects of an unfinished import were found.
    pub had_manifest: bool,
}

impl Registry {
    pub fn new(store: RegistryStore) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &RegistryStore {
        &self.store
    }

    pub(crate) fn object_store(&self) -> &dyn ObjectStore {
        self.store.object_store().as_ref()
    }

    /// The manifest of `key`, or [`RegistryError::ModelNotFound`].
    pub async fn manifest(&self, key: &ModelKey) -> Result<Manifest> {
        let path = self.store.path(&Manifest::manifest_object(key));
        let bytes = match self.object_store().get(&path).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        };
        match bytes {
            Ok(bytes) => Manifest::from_json(key, &bytes),
            Err(object_store::Error::NotFound { .. }) => Err(RegistryError::ModelNotFound {
                key: key.to_string(),
            }),
            Err(error) => Err(RegistryError::store(format!("read manifest of {key}"))(
                error,
            )),
        }
    }

    pub async fn exists(&self, key: &ModelKey) -> Result<bool> {
        let path = self.store.path(&Manifest::manifest_object(key));
        match self.object_store().head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(RegistryError::store(format!("head manifest of {key}"))(
                error,
            )),
        }
    }

    /// Every complete model (one with a manifest), sorted by key. Directories whose name is not
    /// a valid key, and unfinished imports, are skipped.
    pub async fn list_models(&self) -> Result<Vec<Manifest>> {
        let mut manifests = Vec::new();
        for key in self.keys_with_objects().await? {
            match self.manifest(&key).await {
                Ok(manifest) => manifests.push(manifest),
                Err(RegistryError::ModelNotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(manifests)
    }

    /// Keys that hold objects but no manifest: imports that were interrupted (and may still
    /// be resumed) or abandoned. [`Registry::delete_model`] removes one.
    pub async fn list_unfinished_imports(&self) -> Result<Vec<ModelKey>> {
        let mut unfinished = Vec::new();
        for key in self.keys_with_objects().await? {
            if !self.exists(&key).await? {
                unfinished.push(key);
            }
        }
        Ok(unfinished)
    }

    /// The valid keys among the registry's top-level directories, sorted.
    async fn keys_with_objects(&self) -> Result<Vec<ModelKey>> {
        let root = self.store.path("");
        let listing = self
            .object_store()
            .list_with_delimiter(Some(&root))
            .await
            .map_err(RegistryError::store("list registry"))?;
        let mut keys: Vec<ModelKey> = listing
            .common_prefixes
            .iter()
            .filter_map(|directory| directory.filename())
            .filter_map(|name| ModelKey::parse(name).ok())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Removes the model's manifest, then every object under its key.
    ///
    /// The caller decides whether deletion is allowed (the control plane refuses while the
    /// model is deployed). Returns [`RegistryError::ModelNotFound`] when nothing exists under
    /// the key.
    pub async fn delete_model(&self, key: &ModelKey) -> Result<DeletedModel> {
        let manifest_path = self.store.path(&Manifest::manifest_object(key));
        // S3 acknowledges deleting a missing object, so existence is checked first.
        let had_manifest = self.exists(key).await?;
        if had_manifest {
            self.object_store()
                .delete(&manifest_path)
                .await
                .map_err(RegistryError::store(format!("delete manifest of {key}")))?;
        }
        let model_prefix = self.store.path(key.as_str());
        let objects: Vec<ObjectPath> = self
            .object_store()
            .list(Some(&model_prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(RegistryError::store(format!("list objects of {key}")))?;
        let deleted: Vec<ObjectPath> = self
            .object_store()
            .delete_stream(futures::stream::iter(objects.into_iter().map(Ok)).boxed())
            .try_collect()
            .await
            .map_err(RegistryError::store(format!("delete objects of {key}")))?;
        let objects_deleted = deleted.len();
        if !had_manifest && objects_deleted == 0 {
            return Err(RegistryError::ModelNotFound {
                key: key.to_string(),
            });
        }
        tracing::info!(%key, objects_deleted, "deleted model from registry");
        Ok(DeletedModel {
            key: key.clone(),
            objects_deleted: objects_deleted + usize::from(had_manifest),
            had_manifest,
        })
    }
}
