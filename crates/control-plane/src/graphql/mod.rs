//! The management API: GraphQL at `POST /api/graphql` (async-graphql).
//!
//! The schema implements, with the exact names, arguments, types and selected fields, the
//! operations the `adaptive-sdk` 0.14 Python package sends (its generated `graphql_client`
//! holds the documents) for projects, models and deployment, compute pools and harmony groups,
//! metrics, completions (interactions), datasets and users. Resolvers are split by domain, one
//! module each, merged into [`QueryRoot`] and [`MutationRoot`]. Each resolver calls the store
//! and wraps the record in a `*View` whose fields are resolved lazily (relations load only when
//! selected).
//!
//! Errors are GraphQL errors whose `extensions.code` is the [`adaptive_api_types::ErrorCode`]
//! string (`not_found`, `invalid_request`, `unavailable`, ...), built in one place
//! ([`crate::error::ApiError::into_graphql`]).

mod access;
mod completions;
mod compute;
mod datasets;
mod metrics;
mod models;
mod multipart;
mod projects;
mod scalars;
mod score_series;
mod usage;
mod users;

use std::sync::Arc;

use async_graphql::{Context, EmptySubscription, MergedObject, Schema};
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::oidc::OidcProviders;
use crate::auth::{Authenticator, Principal};
use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::http::AppState;
use crate::model_storage::ModelStorage;
use crate::registry::SharedRegistry;
use crate::store::MetadataStore;

pub use scalars::{IdOrKey, Timestamp};

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    projects::ProjectQueries,
    models::ModelQueries,
    compute::ComputeQueries,
    metrics::MetricQueries,
    datasets::DatasetQueries,
    completions::CompletionQueries,
    users::UserQueries,
    access::AccessQueries,
    usage::UsageQueries,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    projects::ProjectMutations,
    models::ModelMutations,
    compute::ComputeMutations,
    metrics::MetricMutations,
    datasets::DatasetMutations,
    completions::CompletionMutations,
    access::AccessMutations,
);

pub type ApiSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// The authenticated caller of the current operation.
#[derive(Debug, Clone)]
pub struct Viewer(pub Arc<Principal>);

/// What the schema's resolvers share.
pub struct SchemaParts {
    pub store: MetadataStore,
    pub registry: SharedRegistry,
    pub model_storage: ModelStorage,
    pub datasets: crate::datasets::Datasets,
    pub authenticator: Arc<Authenticator>,
    pub oidc: Arc<OidcProviders>,
    pub auth_config: Arc<AuthConfig>,
    pub enable_introspection: bool,
}

pub fn build_schema(parts: SchemaParts) -> ApiSchema {
    let builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .data(parts.store)
    .data(parts.registry)
    .data(parts.model_storage)
    .data(parts.datasets)
    .data(parts.authenticator)
    .data(parts.oidc)
    .data(parts.auth_config)
    .extension(crate::auth::policy::PolicyExtension)
    .limit_depth(24);
    if parts.enable_introspection {
        return builder.finish();
    }
    builder.disable_introspection().finish()
}

/// `POST /api/graphql`: authenticate, then execute with the caller in the context; the policy
/// extension checks every root field. A request without credentials runs only public fields
/// (`meta`, for the login page) and gets 401 otherwise. A body that is not a GraphQL request
/// (JSON, or multipart with files: [`multipart`]) gets our 400 error body, like every other
/// route.
pub async fn handler(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    multipart::GraphqlRequest(request): multipart::GraphqlRequest,
) -> Result<Response, ApiError> {
    let caller = state
        .auth
        .authenticate_if_present(&method, &headers)
        .await?;
    let anonymous = caller.is_none();
    let request = match caller {
        Some(caller) => request.data(Viewer(caller.principal)),
        None => request,
    };
    let response = state.schema.execute(request).await;
    let unauthenticated = anonymous
        && response.data == async_graphql::Value::Null
        && response.errors.iter().any(|error| {
            crate::auth::policy::error_code(error)
                == Some(adaptive_api_types::ErrorCode::Unauthenticated.as_str())
        });
    if unauthenticated {
        // The same 401 body as every other route.
        return Err(ApiError::Unauthenticated(
            "missing credentials: send Authorization: Bearer <api key>, or log in",
        ));
    }
    Ok(Json(response).into_response())
}

pub(crate) type GqlResult<T> = Result<T, async_graphql::Error>;

pub(crate) fn store<'a>(context: &Context<'a>) -> GqlResult<&'a MetadataStore> {
    context.data::<MetadataStore>()
}

pub(crate) fn registry<'a>(context: &Context<'a>) -> GqlResult<&'a SharedRegistry> {
    context.data::<SharedRegistry>()
}

pub(crate) fn model_storage<'a>(context: &Context<'a>) -> GqlResult<&'a ModelStorage> {
    context.data::<ModelStorage>()
}

pub(crate) fn viewer<'a>(context: &Context<'a>) -> GqlResult<&'a Viewer> {
    context.data::<Viewer>()
}

pub(crate) fn authenticator<'a>(context: &Context<'a>) -> GqlResult<&'a Arc<Authenticator>> {
    context.data::<Arc<Authenticator>>()
}

/// `?`-friendly conversion of domain errors into GraphQL errors with a code.
pub(crate) trait OrGql<T> {
    fn gql(self) -> GqlResult<T>;
}

impl<T, E: Into<ApiError>> OrGql<T> for Result<T, E> {
    fn gql(self) -> GqlResult<T> {
        self.map_err(|error| error.into().into_graphql())
    }
}

/// `Option` for "describe" queries: a NotFound becomes `null`, other errors stay errors.
pub(crate) fn optional<T>(result: Result<T, crate::store::StoreError>) -> GqlResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(crate::store::StoreError::NotFound { .. }) => Ok(None),
        Err(error) => Err(ApiError::from(error).into_graphql()),
    }
}
