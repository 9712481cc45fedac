//! The usage queries' input and output types, named as the SDK's generated client names them.

use async_graphql::{Enum, InputObject, SimpleObject, ID};

use super::super::completions::{IdOrKeyCondition, TimeRange};
use super::super::models::{ModelServiceView, ModelView};
use super::super::projects::ProjectView;
use super::super::users::UserView;
use super::super::Timestamp;
use super::selection::UsageRequest;
use crate::time_buckets::BucketUnit;

// === inputs ===

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum DateBucketUnit {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
    NoGroupByDate,
}

impl From<DateBucketUnit> for BucketUnit {
    fn from(unit: DateBucketUnit) -> Self {
        match unit {
            DateBucketUnit::Hour => BucketUnit::Hour,
            DateBucketUnit::Day => BucketUnit::Day,
            DateBucketUnit::Week => BucketUnit::Week,
            DateBucketUnit::Month => BucketUnit::Month,
            DateBucketUnit::Quarter => BucketUnit::Quarter,
            DateBucketUnit::Year => BucketUnit::Year,
            DateBucketUnit::NoGroupByDate => BucketUnit::All,
        }
    }
}

/// Conditions on the dimensions of usage; the fields of one node are and-ed.
#[derive(InputObject, Default)]
pub struct UsageFilterExpression {
    pub and: Option<Vec<UsageFilterExpression>>,
    pub or: Option<Vec<UsageFilterExpression>>,
    pub not: Option<Box<UsageFilterExpression>>,
    pub model: Option<IdOrKeyCondition>,
    pub user: Option<IdOrKeyCondition>,
    pub project: Option<IdOrKeyCondition>,
}

/// `modelUsage`: one model's usage over time.
#[derive(InputObject)]
pub struct UsageFilterInput {
    pub model_id: String,
    pub timerange: Option<TimeRange>,
    pub unit: DateBucketUnit,
    pub timezone: Option<String>,
    pub user_ids: Option<Vec<String>>,
    pub project_ids: Option<Vec<String>>,
    pub api_key_ids: Option<Vec<String>>,
    pub advanced_filter: Option<UsageFilterExpression>,
}

macro_rules! usage_group_input {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(InputObject)]
        pub struct $name {
            pub timerange: Option<TimeRange>,
            pub interval: DateBucketUnit,
            pub timezone: Option<String>,
            pub model_ids: Option<Vec<String>>,
            pub user_ids: Option<Vec<String>>,
            pub project_ids: Option<Vec<String>>,
            pub api_key_ids: Option<Vec<String>>,
            pub advanced_filter: Option<UsageFilterExpression>,
        }

        impl $name {
            pub(super) fn request(self) -> UsageRequest {
                UsageRequest {
                    timerange: self.timerange,
                    unit: self.interval,
                    timezone: self.timezone,
                    model_ids: self.model_ids,
                    user_ids: self.user_ids,
                    project_ids: self.project_ids,
                    api_key_ids: self.api_key_ids,
                    expression: self.advanced_filter,
                }
            }
        }
    };
}

usage_group_input!(
    /// `modelUsageByProject`, `modelUsageDetailsByProject`.
    UsagePerProjectFilterInput
);
usage_group_input!(
    /// `modelUsageByUser`, `modelUsageByApiKey`.
    UsagePerUserFilterInput
);
usage_group_input!(
    /// `globalUsage`; no time range means all time.
    GlobalUsageFilterInput
);

#[derive(InputObject)]
pub struct UsageOptionsInput {
    pub timerange: Option<TimeRange>,
}

// === outputs ===

/// Usage in one time bucket (`bucketTs` is null when the query does not group by date).
#[derive(SimpleObject, Clone, Debug, PartialEq, Eq)]
pub struct UsageAggregateItem {
    pub bucket_ts: Option<Timestamp>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub interactions: i64,
}

#[derive(SimpleObject, Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageStats {
    pub total_tokens: i64,
    pub interactions: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

#[derive(SimpleObject)]
pub struct UsageStatsByProject {
    pub project_id: ID,
    #[graphql(flatten)]
    pub stats: UsageStats,
    pub timeseries: Vec<UsageAggregateItem>,
}

#[derive(SimpleObject)]
pub struct UsageStatsByUser {
    /// Null for calls without a user (none today: every API key belongs to a user).
    pub user_id: Option<ID>,
    #[graphql(flatten)]
    pub stats: UsageStats,
    pub timeseries: Vec<UsageAggregateItem>,
}

#[derive(SimpleObject)]
pub struct UsageStatsByApiKey {
    /// Null for calls made with a session cookie rather than an API key.
    pub api_key_id: Option<ID>,
    pub user_id: Option<ID>,
    #[graphql(flatten)]
    pub stats: UsageStats,
    pub timeseries: Vec<UsageAggregateItem>,
}

#[derive(SimpleObject)]
pub struct UsageStatsByModel {
    /// Null when the model was deleted since.
    pub model: Option<ModelView>,
    #[graphql(flatten)]
    pub stats: UsageStats,
    pub timeseries: Vec<UsageAggregateItem>,
}

#[derive(SimpleObject)]
#[graphql(name = "ProjectItem")]
pub struct ProjectItem {
    pub id: ID,
    pub key: String,
    pub name: String,
    pub description: String,
}

#[derive(SimpleObject)]
pub struct UsageAggregatePerProjectItem {
    pub project: Option<ProjectItem>,
    pub model_service: Option<ModelServiceView>,
    #[graphql(flatten)]
    pub stats: UsageStats,
}

#[derive(SimpleObject)]
pub struct GlobalUsage {
    pub total: UsageStats,
    /// Models served by harmony: every model of this platform.
    pub adaptive_models: UsageStats,
    /// Models of external providers. This build does not proxy external providers, so this
    /// is always zero; the field is kept for the SDK.
    pub external_models: UsageStats,
    pub by_model: Vec<UsageStatsByModel>,
    /// Changes whenever the totals change: clients compare it to skip re-rendering.
    pub signature: String,
}

#[derive(SimpleObject)]
pub struct UsageOptionsResult {
    pub users: Vec<UserView>,
    pub projects: Vec<ProjectView>,
    pub models: Vec<ModelView>,
}
