//! Who may log in, and what a new person gets: the sign-in rules of `auth.*` and each
//! provider (`allow_sign_up`, `allowed_domains`, `require_email_verified`, `auth.admins`,
//! `auth.default_team`, `auth.default_role`), and the built-in roles every install has.

use super::oidc::{OidcProviderConfig, VerifiedIdentity};
use super::permissions::{ADMIN_TEAM, BUILTIN_ROLES};
use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::store::{MetadataStore, NewUser, StoreError, User, USER_TYPE_HUMAN};

/// Create or refresh the built-in roles and the admin team (idempotent; every start).
pub async fn ensure_builtin_roles(store: &MetadataStore) -> Result<(), StoreError> {
    for role in BUILTIN_ROLES {
        store
            .ensure_role(role.key, role.name, &role.permissions.names())
            .await?;
    }
    store.ensure_team(ADMIN_TEAM, "Admin").await?;
    Ok(())
}

/// Make `user` an admin: the `admin` role in the admin team.
pub async fn make_admin(store: &MetadataStore, user: &User) -> Result<(), StoreError> {
    let team = store.get_team(ADMIN_TEAM).await?;
    let role = store.get_role("admin").await?;
    store.set_team_member(&user.id, &team.id, &role.id).await
}

/// The user a verified identity logs in as, created when the rules allow it.
pub async fn sign_in(
    store: &MetadataStore,
    auth: &AuthConfig,
    provider: &OidcProviderConfig,
    identity: &VerifiedIdentity,
) -> Result<User, ApiError> {
    let email = identity.email.clone().ok_or_else(|| {
        ApiError::LoginFailed(
            "the identity provider did not share an email address: request the email scope"
                .to_owned(),
        )
    })?;
    if provider.require_email_verified && !identity.email_verified {
        return Err(ApiError::Forbidden(format!(
            "the email address {email} is not verified with '{}'",
            provider.key
        )));
    }
    if !provider.domain_allowed(&email) {
        return Err(ApiError::Forbidden(format!(
            "accounts of this email domain may not log in through '{}'",
            provider.key
        )));
    }
    if let Some(user) = store
        .user_for_identity(&provider.key, &identity.subject)
        .await?
    {
        return Ok(user);
    }
    let is_admin = auth
        .admins
        .iter()
        .any(|admin| admin.eq_ignore_ascii_case(&email));
    let user = match store.find_user(&email).await? {
        Some(user) if user.user_type != USER_TYPE_HUMAN => {
            return Err(ApiError::Forbidden(
                "service accounts log in with API keys only".to_owned(),
            ))
        }
        Some(user) => user,
        None if provider.allow_sign_up || is_admin => {
            let user = store
                .create_user(NewUser {
                    email: email.clone(),
                    name: identity.name.clone().unwrap_or_else(|| email.clone()),
                    user_type: USER_TYPE_HUMAN.to_owned(),
                })
                .await?;
            let team = store
                .ensure_team(&auth.default_team, &auth.default_team)
                .await?;
            let role = store.get_role(&auth.default_role).await?;
            store.set_team_member(&user.id, &team.id, &role.id).await?;
            if is_admin {
                make_admin(store, &user).await?;
            }
            tracing::info!(user = %user.id, provider = %provider.key, "new user signed up");
            user
        }
        None => {
            return Err(ApiError::Forbidden(format!(
                "{email} has no account and '{}' does not allow sign-up: ask an admin to add you",
                provider.key
            )))
        }
    };
    store
        .link_identity(&provider.key, &identity.subject, &user.id)
        .await?;
    Ok(user)
}
