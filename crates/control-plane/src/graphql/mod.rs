//! The management API: GraphQL at `POST /api/graphql` (async-graphql).
//!
//! The schema implements, with the exact names, arguments, types and selected fields, the
//! operations the `adaptive-sdk` 0.14 Python package sends (its generated `graphql_client`
//! holds the documents) for projects, models and deployment, compute pools and harmony groups,
//! metrics, completions (interactions) and users. Resolvers are split by domain, one module
//! each, merged into [`QueryRoot`] and [`MutationRoot`]. Each resolver calls the store and
//! wraps the record in a `*View` whose fields are resolved lazily (relations load only when
//! selected).
//!
//! Errors are GraphQL errors whose `extensions.code` is the [`adaptive_api_types::ErrorCode`]
//! string (`not_found`, `invalid_request`, `unavailable`, ...), built in one place
//! ([`crate::error::ApiError::into_graphql`]).

mod completions;
mod compute;
mod metrics;
mod models;
mod projects;
mod scalars;
mod users;

use async_graphql::{Context, EmptySubscription, MergedObject, Schema};
use axum::extract::State;
use axum::Json;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::http::AppJson;
use crate::registry::SharedRegistry;
use crate::store::{MetadataStore, User};

pub use scalars::{IdOrKey, Timestamp};

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    projects::ProjectQueries,
    models::ModelQueries,
    compute::ComputeQueries,
    metrics::MetricQueries,
    completions::CompletionQueries,
    users::UserQueries,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    projects::ProjectMutations,
    models::ModelMutations,
    compute::ComputeMutations,
    metrics::MetricMutations,
);

pub type ApiSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// The authenticated caller of the current operation.
#[derive(Debug, Clone)]
pub struct Viewer(pub User);

pub fn build_schema(
    store: MetadataStore,
    registry: SharedRegistry,
    enable_introspection: bool,
) -> ApiSchema {
    let builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .data(store)
    .data(registry)
    .limit_depth(24);
    if enable_introspection {
        return builder.finish();
    }
    builder.disable_introspection().finish()
}

/// `POST /api/graphql`: authenticate, then execute with the caller in the context. A body that
/// is not a GraphQL request gets our 400 error body, like every other route.
pub async fn handler(
    State(schema): State<ApiSchema>,
    caller: Authenticated,
    AppJson(request): AppJson<async_graphql::Request>,
) -> Json<async_graphql::Response> {
    let request = request.data(Viewer(caller.user));
    Json(schema.execute(request).await)
}

pub(crate) type GqlResult<T> = Result<T, async_graphql::Error>;

pub(crate) fn store<'a>(context: &Context<'a>) -> GqlResult<&'a MetadataStore> {
    context.data::<MetadataStore>()
}

pub(crate) fn registry<'a>(context: &Context<'a>) -> GqlResult<&'a SharedRegistry> {
    context.data::<SharedRegistry>()
}

pub(crate) fn viewer<'a>(context: &Context<'a>) -> GqlResult<&'a Viewer> {
    context.data::<Viewer>()
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
