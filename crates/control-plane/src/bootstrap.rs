//! First-start steps: the bootstrap admin with its API key, the default project, and models
//! given on the command line (`adaptive serve --model PATH`).
//!
//! Each step is idempotent, so calling them on every start is safe: the admin is created only
//! when there is no user at all (its key is returned once, to be printed once), the default
//! project only when there is no project.

use crate::config::{SecretString, Secrets};
use crate::store::{
    DeployRequest, MetadataStore, Model, ModelService, NewModel, NewProject, NewUser, Project,
    StoreError, USER_TYPE_HUMAN,
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
    /// The key came from `auth.bootstrap_api_key`: the operator has it, so it is not printed.
    pub key_from_configuration: bool,
}

/// Create the `default` team, the `admin` role and, when no user exists, an admin user with an
/// API key (`auth.bootstrap_api_key` if configured, random otherwise). Returns the admin only
/// when it was created now.
pub async fn ensure_bootstrap_admin(
    store: &MetadataStore,
    default_team: &str,
    secrets: &Secrets,
) -> Result<Option<BootstrapAdmin>, StoreError> {
    crate::auth::login::ensure_builtin_roles(store).await?;
    let team = store.ensure_team(default_team, default_team).await?;
    let role = store.get_role("admin").await?;
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
    let new_user = NewUser {
        email: BOOTSTRAP_ADMIN_EMAIL.to_owned(),
        name: "Admin".to_owned(),
        user_type: USER_TYPE_HUMAN.to_owned(),
    };
    let user = match store.create_user(new_user).await {
        Ok(user) => user,
        // Another control plane replica bootstrapped concurrently.
        Err(StoreError::AlreadyExists { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    store.set_team_member(&user.id, &team.id, &role.id).await?;
    crate::auth::login::make_admin(store, &user).await?;
    let key_from_configuration = configured_key.is_some();
    let api_key = store.create_api_key(&user.id, configured_key).await?;
    Ok(Some(BootstrapAdmin {
        email: user.email,
        api_key,
        key_from_configuration,
    }))
}

/// Create the `default` project when the install has no project. Returns it when created now.
pub async fn ensure_default_project(
    store: &MetadataStore,
    default_team: &str,
) -> Result<Option<Project>, StoreError> {
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
        Ok(project) => {
            // Shared with the default team, so people who sign up see it with their role.
            store.ensure_team(default_team, default_team).await?;
            store
                .share_project(
                    &project.id,
                    &[(default_team.to_owned(), "admin".to_owned(), true)],
                )
                .await?;
            Ok(Some(project))
        }
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

/// The embedded install's cookies secret: `<data_dir>/cookies-secret`, created once with 64
/// random bytes (readable by the owner only), so sessions survive restarts without the user
/// configuring a secret. A cluster sets `app.secret` instead (identical on every replica).
pub fn ensure_cookies_secret_file(
    data_dir: &std::path::Path,
) -> std::io::Result<crate::config::SecretSource> {
    use rand::RngCore;
    use std::io::Write;
    let path = data_dir.join("cookies-secret");
    if !path.exists() {
        let mut bytes = [0u8; 64];
        rand::rng().fill_bytes(&mut bytes);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => file.write_all(hex::encode(bytes).as_bytes())?,
            // Another process created it first: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    Ok(crate::config::SecretSource::File(path))
}
