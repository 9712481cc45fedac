//! Usage queries (`modelUsage`, `modelUsageByProject`, `modelUsageByUser`,
//! `modelUsageDetailsByProject`, `globalUsage`, `usageOptions`, as the SDK's generated client
//! names them, plus `modelUsageByApiKey`): tokens processed and generated and calls, per model,
//! project, user and API key, over calendar buckets in the caller's timezone.
//!
//! The store hands back 15-minute slot aggregates for the time range and the projects the
//! caller may read (`project:read`; everything for a global reader); the filters (ids, keys,
//! the `and`/`or`/`not` expression) and the bucketing run here over those rows.

mod selection;
mod types;

use async_graphql::{Context, Object, ID};
use sha2::{Digest, Sha256};

use super::models::{ModelServiceView, ModelView};
use super::projects::ProjectView;
use super::users::UserView;
use super::{store, GqlResult, OrGql};
use crate::store::UsageSlot;
use selection::{Totals, UsageRequest};
pub use types::*;

// === queries ===

#[derive(Default)]
pub struct UsageQueries;

#[Object]
impl UsageQueries {
    /// One model's usage over time.
    async fn model_usage(
        &self,
        context: &Context<'_>,
        filter: UsageFilterInput,
    ) -> GqlResult<Vec<UsageAggregateItem>> {
        let model_ids = Some(vec![filter.model_id]);
        let selection = UsageRequest {
            timerange: filter.timerange,
            unit: filter.unit,
            timezone: filter.timezone,
            model_ids,
            user_ids: filter.user_ids,
            project_ids: filter.project_ids,
            api_key_ids: filter.api_key_ids,
            expression: filter.advanced_filter,
        }
        .select(context)
        .await?;
        let slots: Vec<&UsageSlot> = selection.slots.iter().collect();
        selection.series(&slots)
    }

    async fn model_usage_by_project(
        &self,
        context: &Context<'_>,
        filter: UsagePerProjectFilterInput,
    ) -> GqlResult<Vec<UsageStatsByProject>> {
        let selection = filter.request().select(context).await?;
        selection
            .grouped(|slot| slot.project_id.clone())
            .into_iter()
            .map(|(project_id, slots)| {
                Ok(UsageStatsByProject {
                    project_id: ID(project_id),
                    stats: Totals::of(slots.iter().copied()).stats(),
                    timeseries: selection.series(&slots)?,
                })
            })
            .collect()
    }

    async fn model_usage_by_user(
        &self,
        context: &Context<'_>,
        filter: UsagePerUserFilterInput,
    ) -> GqlResult<Vec<UsageStatsByUser>> {
        let selection = filter.request().select(context).await?;
        selection
            .grouped(|slot| slot.user_id.clone())
            .into_iter()
            .map(|(user_id, slots)| {
                Ok(UsageStatsByUser {
                    user_id: user_id.map(ID),
                    stats: Totals::of(slots.iter().copied()).stats(),
                    timeseries: selection.series(&slots)?,
                })
            })
            .collect()
    }

    /// Usage per API key (calls made with a session cookie have no key).
    async fn model_usage_by_api_key(
        &self,
        context: &Context<'_>,
        filter: UsagePerUserFilterInput,
    ) -> GqlResult<Vec<UsageStatsByApiKey>> {
        let selection = filter.request().select(context).await?;
        selection
            .grouped(|slot| (slot.api_key_id.clone(), slot.user_id.clone()))
            .into_iter()
            .map(|((api_key_id, user_id), slots)| {
                Ok(UsageStatsByApiKey {
                    api_key_id: api_key_id.map(ID),
                    user_id: user_id.map(ID),
                    stats: Totals::of(slots.iter().copied()).stats(),
                    timeseries: selection.series(&slots)?,
                })
            })
            .collect()
    }

    /// Usage per project and model service, over the whole range.
    async fn model_usage_details_by_project(
        &self,
        context: &Context<'_>,
        filter: UsagePerProjectFilterInput,
    ) -> GqlResult<Vec<UsageAggregatePerProjectItem>> {
        let selection = filter.request().select(context).await?;
        let store = store(context)?;
        let mut items = Vec::new();
        let groups =
            selection.grouped(|slot| (slot.project_id.clone(), slot.model_service_id.clone()));
        for ((project_id, model_service_id), slots) in groups {
            let project = store.find_project(&project_id).await.gql()?;
            let model_service = match &model_service_id {
                Some(id) => super::optional(store.get_model_service_by_id(id).await)?,
                None => None,
            };
            items.push(UsageAggregatePerProjectItem {
                project: project.map(|project| ProjectItem {
                    id: ID(project.id),
                    key: project.key,
                    name: project.name,
                    description: project.description,
                }),
                model_service: model_service.map(ModelServiceView),
                stats: Totals::of(slots.iter().copied()).stats(),
            });
        }
        Ok(items)
    }

    /// Totals and per-model series over everything the caller may read.
    async fn global_usage(
        &self,
        context: &Context<'_>,
        filter: GlobalUsageFilterInput,
    ) -> GqlResult<GlobalUsage> {
        let selection = filter.request().select(context).await?;
        let store = store(context)?;
        let total = Totals::of(&selection.slots).stats();
        let mut by_model = Vec::new();
        let mut signature = Sha256::new();
        for (model_id, slots) in selection.grouped(|slot| slot.model_id.clone()) {
            let model = match &model_id {
                Some(id) => store.find_model(id).await.gql()?,
                None => None,
            };
            let stats = Totals::of(slots.iter().copied()).stats();
            signature.update(format!(
                "{}:{}:{}:{};",
                model_id.as_deref().unwrap_or_default(),
                stats.prompt_tokens,
                stats.completion_tokens,
                stats.interactions
            ));
            by_model.push(UsageStatsByModel {
                model: model.map(ModelView),
                stats,
                timeseries: selection.series(&slots)?,
            });
        }
        Ok(GlobalUsage {
            adaptive_models: total.clone(),
            external_models: UsageStats::default(),
            total,
            by_model,
            signature: hex::encode(signature.finalize()),
        })
    }

    /// The users, projects and models that have usage in the range (for the UI's filters).
    async fn usage_options(
        &self,
        context: &Context<'_>,
        filter: UsageOptionsInput,
    ) -> GqlResult<UsageOptionsResult> {
        let selection = UsageRequest {
            timerange: filter.timerange,
            unit: DateBucketUnit::NoGroupByDate,
            timezone: None,
            model_ids: None,
            user_ids: None,
            project_ids: None,
            api_key_ids: None,
            expression: None,
        }
        .select(context)
        .await?;
        let store = store(context)?;
        let distinct = |key: fn(&UsageSlot) -> Option<&str>| -> Vec<String> {
            let set: std::collections::BTreeSet<String> = selection
                .slots
                .iter()
                .filter_map(|slot| key(slot).map(str::to_owned))
                .collect();
            set.into_iter().collect()
        };
        let mut users = Vec::new();
        for id in distinct(|slot| slot.user_id.as_deref()) {
            if let Some(user) = store.find_user(&id).await.gql()? {
                users.push(UserView(user));
            }
        }
        let mut projects = Vec::new();
        for id in distinct(|slot| Some(slot.project_id.as_str())) {
            if let Some(project) = store.find_project(&id).await.gql()? {
                projects.push(ProjectView(project));
            }
        }
        let mut models = Vec::new();
        for id in distinct(|slot| slot.model_id.as_deref()) {
            if let Some(model) = store.find_model(&id).await.gql()? {
                models.push(ModelView(model));
            }
        }
        // Sorted as people read them, not by id.
        users.sort_by(|a, b| a.0.email.cmp(&b.0.email));
        projects.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        models.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        Ok(UsageOptionsResult {
            users,
            projects,
            models,
        })
    }
}
