//! What every operation requires: one table for the GraphQL root fields and one for the REST
//! routes. The GraphQL schema enforces [`GRAPHQL_RULES`] for every root field through
//! [`PolicyExtension`] (resolvers do not repeat the check, and a root field missing from the
//! table is refused: fail closed); the inference gateway checks [`INFERENCE_PERMISSION`] on the
//! resolved project. The permission matrix test is generated from these tables.

use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextResolve, ResolveInfo,
};
use async_graphql::{ServerError, ServerResult, Value, Variables};

use super::permissions::Permission::{self, *};
use crate::error::ApiError;
use crate::graphql::Viewer;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Anyone, logged in or not (the login page's provider list).
    Public,
    /// Any authenticated caller (the resolver may check more, e.g. "yourself or an admin").
    Authenticated,
    /// The permission must hold everywhere (a role in the admin team).
    Global(Permission),
    /// The permission must hold on the project named by the argument at this path
    /// (`"idOrKey"`, `"input.project"`).
    Project(Permission, &'static str),
    /// The permission must hold somewhere; list resolvers show only what the caller may see.
    Anywhere(Permission),
}

/// A GraphQL root field and what it requires.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub field: &'static str,
    pub scope: Scope,
}

const fn rule(field: &'static str, scope: Scope) -> Rule {
    Rule { field, scope }
}

use Scope::{Anywhere, Authenticated, Global, Project, Public};

/// Every GraphQL root field (queries and mutations).
pub const GRAPHQL_RULES: &[Rule] = &[
    // access
    rule("meta", Public),
    rule("me", Authenticated),
    rule("permissions", Authenticated),
    rule("roles", Authenticated),
    rule("teams", Authenticated),
    rule("users", Global(ManageUsers)),
    rule("createUser", Global(ManageUsers)),
    rule("deleteUser", Global(ManageUsers)),
    rule("setTeamMember", Global(ManageUsers)),
    rule("removeTeamMember", Global(ManageUsers)),
    rule("createTeam", Global(ManageTeams)),
    rule("createRole", Global(ManageRoles)),
    rule("updateRole", Global(ManageRoles)),
    // yourself, or anyone with admin:manage_users (checked by the resolver)
    rule("createApiKey", Authenticated),
    rule("revokeApiKeys", Authenticated),
    // projects
    rule("projects", Authenticated),
    rule("project", Project(ProjectRead, "idOrKey")),
    rule("createProject", Anywhere(ProjectCreate)),
    rule("shareProject", Project(ProjectUpdate, "idOrKey")),
    // models
    rule("models", Anywhere(ModelRead)),
    rule("model", Anywhere(ModelRead)),
    rule("addModel", Global(ModelManage)),
    rule("deleteModel", Global(ModelManage)),
    rule("updateModelComputeConfig", Global(ModelManage)),
    rule("terminateModel", Global(ModelDeploy)),
    rule("addModelsToProject", Project(ModelDeploy, "input.project")),
    rule(
        "removeModelFromProject",
        Project(ModelDeploy, "input.project"),
    ),
    rule("deployModel", Project(ModelDeploy, "input.project")),
    rule("updateModelService", Project(ModelDeploy, "input.project")),
    // compute
    rule("computePools", Anywhere(ComputeRead)),
    rule("harmonyGroups", Anywhere(ComputeRead)),
    rule("resizeInferencePartition", Global(ComputeManage)),
    // metrics
    rule("metrics", Anywhere(MetricRead)),
    rule("metric", Project(MetricRead, "projectIdOrKey")),
    rule("createMetric", Project(MetricCreate, "project")),
    // datasets
    rule("datasets", Project(DatasetRead, "project")),
    rule("dataset", Project(DatasetRead, "project")),
    rule(
        "datasetUploadProcessingStatus",
        Project(DatasetRead, "input.project"),
    ),
    rule("createDataset", Project(DatasetCreate, "input.project")),
    rule(
        "createDatasetFromMultipartUpload",
        Project(DatasetCreate, "input.project"),
    ),
    rule("deleteDataset", Project(DatasetCreate, "project")),
    // interactions
    rule("completions", Project(ProjectRead, "filter.project")),
    rule("completionsGrouped", Project(ProjectRead, "filter.project")),
    rule("completion", Project(ProjectRead, "project")),
    // names a completion, not a project: the resolver checks the completion's project
    rule("addDirectScore", Anywhere(MetricScore)),
    // usage: resolvers count only the projects the caller may read
    rule("modelUsage", Anywhere(ProjectRead)),
    rule("modelUsageByProject", Anywhere(ProjectRead)),
    rule("modelUsageByUser", Anywhere(ProjectRead)),
    rule("modelUsageByApiKey", Anywhere(ProjectRead)),
    rule("modelUsageDetailsByProject", Anywhere(ProjectRead)),
    rule("globalUsage", Anywhere(ProjectRead)),
    rule("usageOptions", Anywhere(ProjectRead)),
];

/// What calling a project's model (chat, completions) requires, on that project.
pub const INFERENCE_PERMISSION: Permission = ModelUse;

/// A REST route and what it requires.
#[derive(Debug, Clone, Copy)]
pub struct RestRule {
    pub method: &'static str,
    pub path: &'static str,
    pub scope: Scope,
}

/// The public port's REST routes (those under `/api/v1` are also under `/v1`). Inference routes
/// name their project in the body's `model` (`"project"` or `"project/model"`), checked by the
/// gateway's directory; the feedback routes name it in the body field given here.
pub const REST_RULES: &[RestRule] = &[
    RestRule {
        method: "GET",
        path: "/health",
        scope: Public,
    },
    RestRule {
        method: "GET",
        path: "/ready",
        scope: Public,
    },
    RestRule {
        method: "GET",
        path: "/api/openapi.json",
        scope: Public,
    },
    RestRule {
        method: "GET",
        path: "/api/v1/auth/login/{provider}",
        scope: Public,
    },
    RestRule {
        method: "GET",
        path: "/api/v1/auth/login/{provider}/callback",
        scope: Public,
    },
    RestRule {
        method: "POST",
        path: "/api/v1/auth/logout",
        scope: Public,
    },
    RestRule {
        method: "POST",
        path: "/api/graphql",
        scope: Authenticated,
    },
    RestRule {
        method: "GET",
        path: "/api/v1/models",
        scope: Authenticated,
    },
    RestRule {
        method: "POST",
        path: "/api/v1/chat/completions",
        scope: Project(INFERENCE_PERMISSION, "model"),
    },
    RestRule {
        method: "POST",
        path: "/api/v1/completions",
        scope: Project(INFERENCE_PERMISSION, "model"),
    },
    // Importing a logged interaction is what the gateway does for each inference call; with
    // `feedbacks` it also needs metric:score on the project.
    RestRule {
        method: "POST",
        path: "/api/v1/interactions",
        scope: Project(ModelUse, "project"),
    },
    RestRule {
        method: "POST",
        path: "/api/v1/comparison",
        scope: Project(MetricScore, "project"),
    },
    RestRule {
        method: "POST",
        path: "/api/v1/outcome",
        scope: Project(MetricScore, "project_id"),
    },
    // Chunked uploads: the SDK uploads datasets this way, so dataset:create on something; the
    // import that consumes a session checks its own permission. A session is its creator's
    // alone (404 for anyone else).
    RestRule {
        method: "GET",
        path: "/api/v1/projects/{project}/datasets/{dataset}/download",
        scope: Project(DatasetRead, "project"),
    },
    RestRule {
        method: "POST",
        path: "/api/v1/upload/init",
        scope: Anywhere(DatasetCreate),
    },
    RestRule {
        method: "POST",
        path: "/api/v1/upload/part",
        scope: Anywhere(DatasetCreate),
    },
    RestRule {
        method: "POST",
        path: "/api/v1/upload/status",
        scope: Anywhere(DatasetCreate),
    },
    RestRule {
        method: "DELETE",
        path: "/api/v1/upload/abort",
        scope: Anywhere(DatasetCreate),
    },
];

pub fn graphql_rule(field: &str) -> Option<&'static Rule> {
    GRAPHQL_RULES.iter().find(|rule| rule.field == field)
}

/// Enforces [`GRAPHQL_RULES`] on every root field.
pub struct PolicyExtension;

impl ExtensionFactory for PolicyExtension {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PolicyCheck {
            variables: Mutex::new(Variables::default()),
        })
    }
}

struct PolicyCheck {
    /// The request's variables, to read arguments passed as `$input`.
    variables: Mutex<Variables>,
}

#[async_trait::async_trait]
impl Extension for PolicyCheck {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        *self
            .variables
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = request.variables.clone();
        next.run(ctx, request).await
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if info.path_node.parent.is_none()
            && !info.is_for_introspection
            && info.name != "__typename"
        {
            self.check(ctx, &info)
                .map_err(|error| error.into_graphql().into_server_error(info.field.name.pos))?;
        }
        next.run(ctx, info).await
    }
}

impl PolicyCheck {
    fn check(&self, ctx: &ExtensionContext<'_>, info: &ResolveInfo<'_>) -> Result<(), ApiError> {
        let rule = graphql_rule(info.name).ok_or_else(|| {
            ApiError::Forbidden(format!("operation '{}' has no permission rule", info.name))
        })?;
        if rule.scope == Public {
            return Ok(());
        }
        let viewer = ctx.data_opt::<Viewer>().ok_or(ApiError::Unauthenticated(
            "missing credentials: send Authorization: Bearer <api key>, or log in",
        ))?;
        let principal = &viewer.0;
        let allowed = match rule.scope {
            Public | Authenticated => true,
            Global(permission) => principal.can(permission, None),
            Anywhere(permission) => principal.can_anywhere(permission),
            Project(permission, path) => {
                let project = self.argument(info, path).ok_or_else(|| {
                    ApiError::InvalidRequest(format!("'{}' needs the argument {path}", info.name))
                })?;
                principal.can(permission, Some(&project))
            }
        };
        if allowed {
            return Ok(());
        }
        Err(ApiError::Forbidden(denied_message(info.name, rule.scope)))
    }

    /// The string at `path` (`name` or `name.field`) among the field's arguments, with
    /// variables substituted.
    fn argument(&self, info: &ResolveInfo<'_>, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let name = parts.next()?;
        let (_, value) = info
            .field
            .arguments
            .iter()
            .find(|(argument, _)| argument.node.as_str() == name)?;
        let variables = self
            .variables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut value = value
            .node
            .clone()
            .into_const_with(|variable| variables.get(&variable).cloned().ok_or(()))
            .ok()?;
        for part in parts {
            value = match value {
                Value::Object(mut object) => object.swap_remove(part)?,
                _ => return None,
            };
        }
        match value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }
}

fn denied_message(operation: &str, scope: Scope) -> String {
    match scope {
        Global(permission) => {
            format!("'{operation}' needs the permission {permission} in the admin team")
        }
        Project(permission, _) => {
            format!("'{operation}' needs the permission {permission} on this project")
        }
        Anywhere(permission) => format!("'{operation}' needs the permission {permission}"),
        Public | Authenticated => format!("'{operation}' is not allowed"),
    }
}

/// Turn a server error built by the policy back into a code for the HTTP status.
pub fn error_code(error: &ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        Value::String(code) => Some(code.as_str()),
        _ => None,
    }
}
