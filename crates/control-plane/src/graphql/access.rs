//! Access management: `permissions`, `roles`, `teams`, `meta`, and the mutations on users,
//! teams, roles and API keys (`createUser`, `deleteUser`, `setTeamMember`, `removeTeamMember`,
//! `createTeam`, `createRole`, `updateRole`, `createApiKey`, `revokeApiKeys`), with the exact
//! names and shapes of the adaptive-sdk 0.14 documents. What each requires is in
//! [`crate::auth::policy::GRAPHQL_RULES`]; resolvers here only add the "yourself or an admin"
//! rule for API keys. Every mutation clears this replica's permission cache.

use std::sync::Arc;

use async_graphql::{Context, InputObject, Object, SimpleObject};

use super::scalars::{IdOrKey, InputDatetime, Timestamp};
use super::users::{RoleView, TeamView, UserType, UserView};
use super::{authenticator, store, viewer, GqlResult, OrGql};
use crate::auth::oidc::OidcProviders;
use crate::auth::{Permission, PermissionSet, BUILTIN_ROLES};
use crate::error::ApiError;
use crate::store::{NewUser, StoreError, USER_TYPE_HUMAN, USER_TYPE_SYSTEM};

#[derive(Default)]
pub struct AccessQueries;

#[Object]
impl AccessQueries {
    /// Every permission a role may hold.
    async fn permissions(&self) -> Vec<&'static str> {
        Permission::ALL
            .iter()
            .map(|permission| permission.as_str())
            .collect()
    }

    async fn roles(&self, context: &Context<'_>) -> GqlResult<Vec<RoleView>> {
        let roles = store(context)?.list_roles().await.gql()?;
        Ok(roles.into_iter().map(RoleView).collect())
    }

    async fn teams(&self, context: &Context<'_>) -> GqlResult<Vec<TeamView>> {
        let teams = store(context)?.list_teams().await.gql()?;
        Ok(teams.into_iter().map(TeamView).collect())
    }

    /// What the UI needs before login.
    async fn meta(&self, context: &Context<'_>) -> GqlResult<MetaObject> {
        let oidc = context.data::<Arc<OidcProviders>>()?;
        let providers = oidc
            .list()
            .map(|provider| AuthProvider {
                name: provider.name.clone(),
                key: provider.key.clone(),
                kind: AuthProviderKind::Oidc,
                login_url: oidc.login_url(&provider.key),
            })
            .collect();
        Ok(MetaObject {
            auth_providers: ProviderList { providers },
            allow_custom_image_tag: false,
        })
    }
}

#[derive(SimpleObject)]
pub struct MetaObject {
    auth_providers: ProviderList,
    allow_custom_image_tag: bool,
}

#[derive(SimpleObject)]
pub struct ProviderList {
    providers: Vec<AuthProvider>,
}

#[derive(SimpleObject)]
pub struct AuthProvider {
    name: String,
    key: String,
    kind: AuthProviderKind,
    login_url: String,
}

#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuthProviderKind {
    #[graphql(name = "OIDC")]
    Oidc,
}

#[derive(InputObject)]
pub struct UserCreateTeamWithRole {
    team: String,
    role: String,
}

#[derive(InputObject)]
pub struct UserCreate {
    email: Option<String>,
    name: String,
    teams: Vec<UserCreateTeamWithRole>,
    #[graphql(default_with = "UserType::Human")]
    user_type: UserType,
    generate_api_key: Option<bool>,
}

#[derive(SimpleObject)]
pub struct UserCreateResult {
    user: UserView,
    /// Shown once; only its hash is stored.
    generated_api_key: Option<String>,
}

#[derive(InputObject)]
pub struct TeamMemberSet {
    user: String,
    team: String,
    role: String,
}

#[derive(InputObject)]
pub struct TeamMemberRemove {
    user: String,
    team: String,
}

#[derive(SimpleObject)]
pub struct TeamMember {
    user: UserView,
    team: TeamView,
    role: RoleView,
}

#[derive(InputObject)]
pub struct TeamCreate {
    key: Option<String>,
    name: String,
}

#[derive(InputObject)]
pub struct RoleCreate {
    key: Option<String>,
    name: String,
    permissions: Vec<String>,
}

#[derive(InputObject)]
pub struct RoleUpdate {
    role: String,
    name: Option<String>,
    permissions: Option<Vec<String>>,
}

#[derive(InputObject)]
pub struct ApiKeyCreate {
    user: String,
    /// When the caller's previous keys stop working: a timestamp in ms (or an RFC 3339 string).
    /// Absent: they expire now.
    expiration_for_previous_keys: Option<InputDatetime>,
    /// When the new key itself expires (ms since the epoch); absent: never.
    expires_at: Option<Timestamp>,
}

#[derive(SimpleObject)]
pub struct ApiKey {
    /// The key itself, shown once.
    key: String,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
}

#[derive(Default)]
pub struct AccessMutations;

#[Object]
impl AccessMutations {
    /// A person (HUMAN, logs in through OIDC) or a service account (SYSTEM, API keys only;
    /// its email defaults to `<name>@system.adaptive.local`).
    async fn create_user(
        &self,
        context: &Context<'_>,
        input: UserCreate,
    ) -> GqlResult<UserCreateResult> {
        let store = store(context)?;
        let email = match (input.user_type, input.email) {
            (_, Some(email)) => email,
            (UserType::System, None) => {
                let valid = !input.name.is_empty()
                    && input.name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    });
                if !valid {
                    return Err(ApiError::InvalidRequest(
                        "a service account's name must be lowercase letters, digits, '-' or '_'"
                            .to_owned(),
                    )
                    .into_graphql());
                }
                format!("{}@system.adaptive.local", input.name)
            }
            (UserType::Human, None) => {
                return Err(
                    ApiError::InvalidRequest("a person needs an email".to_owned()).into_graphql(),
                )
            }
        };
        // Resolve every team and role before creating anything.
        let mut memberships = Vec::new();
        for membership in &input.teams {
            let team = store.get_team(&membership.team).await.gql()?;
            let role = store.get_role(&membership.role).await.gql()?;
            memberships.push((team, role));
        }
        let user_type = match input.user_type {
            UserType::Human => USER_TYPE_HUMAN,
            UserType::System => USER_TYPE_SYSTEM,
        };
        let user = store
            .create_user(NewUser {
                email,
                name: input.name,
                user_type: user_type.to_owned(),
            })
            .await
            .gql()?;
        for (team, role) in memberships {
            store
                .set_team_member(&user.id, &team.id, &role.id)
                .await
                .gql()?;
        }
        let generated_api_key = if input.generate_api_key.unwrap_or(false) {
            let key = store.issue_api_key(&user.id, None, None).await.gql()?;
            Some(key.plaintext.expose().to_owned())
        } else {
            None
        };
        authenticator(context)?.invalidate();
        Ok(UserCreateResult {
            user: UserView(user),
            generated_api_key,
        })
    }

    /// Soft-deletes: the user can no longer log in or use keys; its interactions stay.
    async fn delete_user(&self, context: &Context<'_>, user: IdOrKey) -> GqlResult<UserView> {
        let deleted = store(context)?.delete_user(user.as_str()).await.gql()?;
        authenticator(context)?.invalidate();
        Ok(UserView(deleted))
    }

    async fn set_team_member(
        &self,
        context: &Context<'_>,
        input: TeamMemberSet,
    ) -> GqlResult<TeamMember> {
        let store = store(context)?;
        let user = store.get_active_user(&input.user).await.gql()?;
        let team = store.get_team(&input.team).await.gql()?;
        let role = store.get_role(&input.role).await.gql()?;
        store
            .set_team_member(&user.id, &team.id, &role.id)
            .await
            .gql()?;
        authenticator(context)?.invalidate();
        Ok(TeamMember {
            user: UserView(user),
            team: TeamView(team),
            role: RoleView(role),
        })
    }

    async fn remove_team_member(
        &self,
        context: &Context<'_>,
        input: TeamMemberRemove,
    ) -> GqlResult<UserView> {
        let store = store(context)?;
        let user = store.get_active_user(&input.user).await.gql()?;
        let team = store.get_team(&input.team).await.gql()?;
        store.remove_team_member(&user.id, &team.id).await.gql()?;
        authenticator(context)?.invalidate();
        Ok(UserView(user))
    }

    async fn create_team(&self, context: &Context<'_>, input: TeamCreate) -> GqlResult<TeamView> {
        let key = input.key.unwrap_or_else(|| slug(&input.name));
        let team = store(context)?.create_team(&key, &input.name).await.gql()?;
        Ok(TeamView(team))
    }

    async fn create_role(&self, context: &Context<'_>, input: RoleCreate) -> GqlResult<RoleView> {
        let permissions = PermissionSet::parse_all(&input.permissions)
            .map_err(|error| ApiError::InvalidRequest(error).into_graphql())?;
        let key = input.key.unwrap_or_else(|| slug(&input.name));
        let role = store(context)?
            .create_role(&key, &input.name, &permissions.names())
            .await
            .gql()?;
        Ok(RoleView(role))
    }

    async fn update_role(&self, context: &Context<'_>, input: RoleUpdate) -> GqlResult<RoleView> {
        let store = store(context)?;
        let role = store.get_role(&input.role).await.gql()?;
        if BUILTIN_ROLES.iter().any(|builtin| builtin.key == role.key) {
            return Err(ApiError::Store(StoreError::Conflict(format!(
                "'{}' is a built-in role and cannot be changed; create a custom role",
                role.key
            )))
            .into_graphql());
        }
        let permissions = input
            .permissions
            .as_deref()
            .map(PermissionSet::parse_all)
            .transpose()
            .map_err(|error| ApiError::InvalidRequest(error).into_graphql())?
            .map(PermissionSet::names);
        let role = store
            .update_role(&role.id, input.name.as_deref(), permissions.as_deref())
            .await
            .gql()?;
        authenticator(context)?.invalidate();
        Ok(RoleView(role))
    }

    /// A new API key for `user` (yourself, or anyone with admin:manage_users). The user's
    /// previous keys expire at `expirationForPreviousKeys`, or now when it is absent.
    async fn create_api_key(
        &self,
        context: &Context<'_>,
        input: ApiKeyCreate,
    ) -> GqlResult<ApiKey> {
        let store = store(context)?;
        let user = self_or_user_admin(context, &input.user).await?;
        let previous_expire_at = input
            .expiration_for_previous_keys
            .map(|at| at.0)
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        store
            .expire_api_keys(&user.id, previous_expire_at)
            .await
            .gql()?;
        let issued = store
            .issue_api_key(&user.id, None, input.expires_at.map(|at| at.0))
            .await
            .gql()?;
        authenticator(context)?.invalidate();
        Ok(ApiKey {
            key: issued.plaintext.expose().to_owned(),
            created_at: Timestamp(issued.created_at),
            expires_at: issued.expires_at.map(Timestamp),
        })
    }

    /// Revoke every key of `user` (yourself, or anyone with admin:manage_users) now; returns
    /// how many were revoked.
    async fn revoke_api_keys(&self, context: &Context<'_>, user: IdOrKey) -> GqlResult<u64> {
        let user = self_or_user_admin(context, user.as_str()).await?;
        let revoked = store(context)?.revoke_api_keys(&user.id).await.gql()?;
        authenticator(context)?.invalidate();
        Ok(revoked)
    }
}

async fn self_or_user_admin(context: &Context<'_>, user: &str) -> GqlResult<crate::store::User> {
    let principal = &viewer(context)?.0;
    let target = store(context)?.get_active_user(user).await.gql()?;
    if target.id != principal.user.id && !principal.can(Permission::ManageUsers, None) {
        return Err(ApiError::Forbidden(
            "managing another user's API keys needs admin:manage_users in the admin team"
                .to_owned(),
        )
        .into_graphql());
    }
    Ok(target)
}

fn slug(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
