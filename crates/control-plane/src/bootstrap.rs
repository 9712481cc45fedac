//! First-start steps: the bootstrap admin with its API key, the default project, and models
//! given on the command line (`adaptive serve --model PATH`).
//!
//! Each step is idempotent, so calling them on every start is safe: the admin is created only
//! when there is no user at all (its key is returned once, to be printed once), the default
//! project only when there is no project.

use crate::config::{SecretString, Secrets};
use crate::store::{
    DeployRequest, MetadataStore, Model, ModelService, NewModel, NewProject, Project, StoreError,
    ADMIN_PERMISSIONS,
};

/// The key of the project created on the first start of an empty install.
pub const DEFAULT_PROJECT_KEY: &str = "default";
/// The bootstrap admin's email.
pub const BOOTSTRAP_ADMIN_EMAIL: &str = "admin@localhost";

/// The bootstrap admin created by [`ensure_bootstrap_admin`]. Its `api_key` exists only here:
/// print it once; it cannot be recovered later.
#[derive(Debug)]
pub struct BootstrapAdmin {
    pub email: String,
    pub api_key: SecretString,
}

/// Create the `default` team, the `admin` role and, when no user exists, an admin user with an
/// API key (`auth.bootstrap_api_key` if configured, random otherwise). Returns the admin only
/// when it was created now.
pub async fn ensure_bootstrap_admin(
    store: &MetadataStore,
    default_team: &str,
    secrets: &Secrets,
) -> Result<Option<BootstrapAdmin>, StoreError> {
    let team = store.ensure_team(default_team, default_team).await?;
    let role = store
        .ensure_role("admin", "Admin", ADMIN_PERMISSIONS)
        .await?;
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let configured_key = match &secrets.bootstrap_api_key {
        Some(source) => Some(
            source
                .read("auth.bootstrap_api_key")
                .map_err(|error| StoreError::Invalid(error.to_string()))?,
        ),
        None => None,
    };
    let user = match store.create_user(BOOTSTRAP_ADMIN_EMAIL, "Admin").await {
        Ok(user) => user,
        // Another control plane replica bootstrapped concurrently.
        Err(StoreError::AlreadyExists { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    store.set_team_member(&user.id, &team.id, &role.id).await?;
    let api_key = store.create_api_key(&user.id, configured_key).await?;
    Ok(Some(BootstrapAdmin {
        email: user.email,
        api_key,
    }))
}

/// Create the `default` project when the install has no project. Returns it when created now.
pub async fn ensure_default_project(store: &MetadataStore) -> Result<Option<Project>, StoreError> {
    if store.count_projects().await? > 0 {
        return Ok(None);
    }
    match store
        .create_project(NewProject {
            key: Some(DEFAULT_PROJECT_KEY.to_owned()),
            name: "Default".to_owned(),
            description: Some("Created at first start".to_owned()),
        })
        .await
    {
        Ok(project) => Ok(Some(project)),
        Err(StoreError::AlreadyExists { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Register a local model (directory or `.gguf`) under `key` if no model has that key, and
/// deploy it to `project` on every pool. Returns the model and its service. Registering the
/// same key again with another path is a conflict, so a typo cannot silently reuse an old model.
pub async fn register_and_deploy_local_model(
    store: &MetadataStore,
    project: &str,
    key: &str,
    path: &str,
) -> Result<(Model, ModelService), StoreError> {
    let model = match store.find_model(key).await? {
        Some(existing) if existing.path == path => existing,
        Some(existing) => {
            return Err(StoreError::Conflict(format!(
                "model '{key}' is already registered with path '{}'",
                existing.path
            )))
        }
        None => {
            store
                .add_model(NewModel {
                    path: path.to_owned(),
                    name: key.to_owned(),
                    key: Some(key.to_owned()),
                    ..NewModel::default()
                })
                .await?
        }
    };
    let service = store
        .deploy_model(DeployRequest {
            project: project.to_owned(),
            model: model.key.clone(),
            placement: None,
        })
        .await?;
    Ok((model, service))
}
