//! Users: `me`, `users`. Teams and roles appear as a user's memberships and a project's shares.

use async_graphql::{Context, Object, ID};

use super::scalars::Timestamp;
use super::{store, viewer, GqlResult, OrGql};
use crate::store::{Role, Team, TeamMembership, User, USER_TYPE_SYSTEM};

/// People log in through OIDC; service accounts (`SYSTEM`) use API keys only.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum UserType {
    Human,
    System,
}

pub struct UserView(pub User);

#[Object(name = "User")]
impl UserView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn email(&self) -> &str {
        &self.0.email
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn user_type(&self) -> UserType {
        if self.0.user_type == USER_TYPE_SYSTEM {
            UserType::System
        } else {
            UserType::Human
        }
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    async fn deleted(&self) -> bool {
        self.0.deleted_at.is_some()
    }
    async fn deleted_at(&self) -> Option<Timestamp> {
        self.0.deleted_at.map(Timestamp)
    }
    async fn teams(&self, context: &Context<'_>) -> GqlResult<Vec<TeamMembershipView>> {
        let memberships = store(context)?.user_memberships(&self.0.id).await.gql()?;
        Ok(memberships.into_iter().map(TeamMembershipView).collect())
    }
}

pub struct TeamMembershipView(pub TeamMembership);

#[Object(name = "TeamWithrole")]
impl TeamMembershipView {
    async fn team(&self) -> TeamView {
        TeamView(self.0.team.clone())
    }
    async fn role(&self) -> RoleView {
        RoleView(self.0.role.clone())
    }
}

pub struct TeamView(pub Team);

#[Object(name = "Team")]
impl TeamView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.key
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
}

pub struct RoleView(pub Role);

#[Object(name = "Role")]
impl RoleView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.key
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    async fn permissions(&self) -> &[String] {
        &self.0.permissions
    }
}

#[derive(Default)]
pub struct UserQueries;

#[Object]
impl UserQueries {
    /// The caller.
    async fn me(&self, context: &Context<'_>) -> GqlResult<UserView> {
        Ok(UserView(viewer(context)?.0.user.clone()))
    }

    async fn users(&self, context: &Context<'_>) -> GqlResult<Vec<UserView>> {
        let users = store(context)?.list_users().await.gql()?;
        Ok(users.into_iter().map(UserView).collect())
    }
}
