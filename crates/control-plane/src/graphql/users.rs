//! Users: `me`, `users`. Teams and roles appear as a user's memberships and a project's shares.

use async_graphql::{Context, Object, ID};

use super::scalars::Timestamp;
use super::{store, viewer, GqlResult, OrGql};
use crate::store::{Role, Team, TeamMembership, User};

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
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    async fn teams(&self, context: &Context<'_>) -> GqlResult<Vec<TeamMembershipView>> {
        let memberships = store(context)?.user_memberships(&self.0.id).await.gql()?;
        Ok(memberships.into_iter().map(TeamMembershipView).collect())
    }
}

pub struct TeamMembershipView(pub TeamMembership);

#[Object(name = "TeamMember")]
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
        Ok(UserView(viewer(context)?.0.clone()))
    }

    async fn users(&self, context: &Context<'_>) -> GqlResult<Vec<UserView>> {
        let users = store(context)?.list_users().await.gql()?;
        Ok(users.into_iter().map(UserView).collect())
    }
}
