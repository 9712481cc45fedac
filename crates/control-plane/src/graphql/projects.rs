//! Projects: `projects`, `project(idOrKey)`, `createProject`, `shareProject`.

use async_graphql::{Context, InputObject, Object, ID};

use super::metrics::MetricWithContextView;
use super::models::ModelServiceView;
use super::scalars::{IdOrKey, Timestamp};
use super::users::{RoleView, TeamView};
use super::{authenticator, optional, store, viewer, GqlResult, OrGql};
use crate::auth::Permission;
use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::store::{NewProject, Project, ProjectShare};

pub struct ProjectView(pub Project);

#[Object(name = "Project")]
impl ProjectView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.key
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    async fn is_archived(&self) -> bool {
        self.0.archived
    }
    async fn metrics(&self, context: &Context<'_>) -> GqlResult<Vec<MetricWithContextView>> {
        let metrics = store(context)?
            .list_project_metrics(&self.0.id)
            .await
            .gql()?;
        Ok(metrics
            .into_iter()
            .map(|metric| MetricWithContextView(metric, self.0.id.clone()))
            .collect())
    }
    async fn model_services(&self, context: &Context<'_>) -> GqlResult<Vec<ModelServiceView>> {
        let services = store(context)?
            .list_model_services(&self.0.id)
            .await
            .gql()?;
        Ok(services.into_iter().map(ModelServiceView).collect())
    }
    async fn default_model_service(
        &self,
        context: &Context<'_>,
    ) -> GqlResult<Option<ModelServiceView>> {
        let services = store(context)?
            .list_model_services(&self.0.id)
            .await
            .gql()?;
        Ok(services
            .into_iter()
            .find(|service| service.is_default)
            .map(ModelServiceView))
    }
    /// What the caller may do in this project.
    async fn permissions(&self, context: &Context<'_>) -> GqlResult<Vec<String>> {
        Ok(viewer(context)?.0.project_permissions(&self.0.id).names())
    }
    async fn shares(&self, context: &Context<'_>) -> GqlResult<Vec<ProjectShareView>> {
        let shares = store(context)?
            .list_project_shares(&self.0.id)
            .await
            .gql()?;
        Ok(shares.into_iter().map(ProjectShareView).collect())
    }
}

pub struct ProjectShareView(pub ProjectShare);

#[Object(name = "ProjectShare")]
impl ProjectShareView {
    async fn team(&self) -> TeamView {
        TeamView(self.0.team.clone())
    }
    async fn role(&self) -> RoleView {
        RoleView(self.0.role.clone())
    }
    async fn is_owner(&self) -> bool {
        self.0.is_owner
    }
}

#[derive(InputObject)]
pub struct EmojiInput {
    pub native: String,
}

#[derive(InputObject)]
pub struct ProjectMetadataInput {
    pub emoji: Option<EmojiInput>,
    pub image_key: Option<String>,
}

#[derive(InputObject)]
pub struct ProjectSettingsInput {
    pub default_metric: Option<String>,
}

#[derive(InputObject)]
pub struct ProjectCreate {
    pub name: String,
    pub team: Option<String>,
    pub key: Option<String>,
    pub description: Option<String>,
    pub gradient_color: Option<String>,
    pub metadata: Option<ProjectMetadataInput>,
    pub settings: Option<ProjectSettingsInput>,
}

#[derive(InputObject)]
pub struct ProjectShareInput {
    pub team: String,
    pub role: String,
    pub is_owner: bool,
}

#[derive(InputObject)]
pub struct ProjectShares {
    pub shares: Vec<ProjectShareInput>,
}

#[derive(Default)]
pub struct ProjectQueries;

#[Object]
impl ProjectQueries {
    async fn projects(&self, context: &Context<'_>) -> GqlResult<Vec<ProjectView>> {
        let principal = &viewer(context)?.0;
        let projects = store(context)?.list_projects().await.gql()?;
        Ok(projects
            .into_iter()
            .filter(|project| principal.can(Permission::ProjectRead, Some(&project.id)))
            .map(ProjectView)
            .collect())
    }

    async fn project(
        &self,
        context: &Context<'_>,
        id_or_key: IdOrKey,
    ) -> GqlResult<Option<ProjectView>> {
        let project = optional(store(context)?.get_project(id_or_key.as_str()).await)?;
        Ok(project.map(ProjectView))
    }
}

#[derive(Default)]
pub struct ProjectMutations;

#[Object]
impl ProjectMutations {
    async fn create_project(
        &self,
        context: &Context<'_>,
        input: ProjectCreate,
    ) -> GqlResult<ProjectView> {
        let store = store(context)?;
        let principal = &viewer(context)?.0;
        // The team that will see the project: the one asked for, else the default team for
        // admins, else the caller's first team whose role may create projects.
        let team = match input.team {
            Some(team) => team,
            None if principal.can(Permission::ProjectCreate, None) => context
                .data::<std::sync::Arc<AuthConfig>>()?
                .default_team
                .clone(),
            None => principal
                .teams
                .iter()
                .find(|(_, permissions)| permissions.contains(Permission::ProjectCreate))
                .map(|(team, _)| team.clone())
                .ok_or_else(|| {
                    ApiError::Forbidden("no team of yours may create projects".to_owned())
                        .into_graphql()
                })?,
        };
        let member = principal.teams.iter().any(|(key, _)| *key == team);
        if !member && !principal.can(Permission::ProjectCreate, None) {
            return Err(
                ApiError::Forbidden(format!("you are not a member of the team '{team}'"))
                    .into_graphql(),
            );
        }
        let team = store.get_team(&team).await.gql()?.key;
        let project = store
            .create_project(NewProject {
                key: input.key,
                name: input.name,
                description: input.description,
            })
            .await
            .gql()?;
        store
            .share_project(&project.id, &[(team, "admin".to_owned(), true)])
            .await
            .gql()?;
        authenticator(context)?.invalidate();
        Ok(ProjectView(project))
    }

    async fn share_project(
        &self,
        context: &Context<'_>,
        id_or_key: IdOrKey,
        input: ProjectShares,
    ) -> GqlResult<ProjectView> {
        let store = store(context)?;
        let project = store.get_project(id_or_key.as_str()).await.gql()?;
        let shares: Vec<(String, String, bool)> = input
            .shares
            .into_iter()
            .map(|share| (share.team, share.role, share.is_owner))
            .collect();
        store.share_project(&project.id, &shares).await.gql()?;
        authenticator(context)?.invalidate();
        Ok(ProjectView(project))
    }
}
