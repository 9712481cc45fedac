//! Metrics (feedback keys): `metrics`, `metric(metricIdOrKey, projectIdOrKey)`, `createMetric`.

use async_graphql::{Context, Enum, InputObject, Object, ID};

use super::scalars::{IdOrKey, Timestamp};
use super::{optional, store, GqlResult, OrGql};
use crate::store::{Metric, NewMetric};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MetricKind {
    Scalar,
    Bool,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MetricScoringType {
    HigherIsBetter,
    LowerIsBetter,
}

fn kind_of(metric: &Metric) -> MetricKind {
    if metric.kind == "BOOL" {
        return MetricKind::Bool;
    }
    MetricKind::Scalar
}

fn scoring_type_of(metric: &Metric) -> MetricScoringType {
    if metric.scoring_type == "LOWER_IS_BETTER" {
        return MetricScoringType::LowerIsBetter;
    }
    MetricScoringType::HigherIsBetter
}

pub struct MetricView(pub Metric);

#[Object(name = "Metric")]
impl MetricView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.key
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn kind(&self) -> MetricKind {
        kind_of(&self.0)
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn scoring_type(&self) -> MetricScoringType {
        scoring_type_of(&self.0)
    }
    async fn unit(&self) -> Option<&str> {
        self.0.unit.as_deref()
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    async fn has_direct_scores(&self, context: &Context<'_>) -> GqlResult<bool> {
        store(context)?.metric_has_scores(&self.0.id).await.gql()
    }
    async fn has_comparison_scores(&self, context: &Context<'_>) -> GqlResult<bool> {
        store(context)?
            .metric_has_comparisons(&self.0.id)
            .await
            .gql()
    }
    async fn projects(&self, context: &Context<'_>) -> GqlResult<Vec<MetricProjectView>> {
        let projects = store(context)?.metric_projects(&self.0.id).await.gql()?;
        Ok(projects
            .into_iter()
            .map(|project| MetricProjectView {
                id: project.id,
                key: project.key,
                name: project.name,
                description: project.description,
            })
            .collect())
    }
}

/// The project fields a metric lists.
#[derive(async_graphql::SimpleObject)]
#[graphql(name = "MetricProject")]
pub struct MetricProjectView {
    pub id: String,
    pub key: String,
    pub name: String,
    pub description: String,
}

/// A metric as seen from one project (the second field: the project's id).
pub struct MetricWithContextView(pub Metric, pub String);

#[Object(name = "MetricWithContext")]
impl MetricWithContextView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.key
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn kind(&self) -> MetricKind {
        kind_of(&self.0)
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn scoring_type(&self) -> MetricScoringType {
        scoring_type_of(&self.0)
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    /// The metric's scores on this project's completions, aggregated per time bucket (and per
    /// model with `byModel`).
    async fn timeseries(
        &self,
        context: &Context<'_>,
        input: TimeseriesInput,
    ) -> GqlResult<Vec<super::score_series::Timeseries>> {
        super::score_series::timeseries(context, &self.1, &self.0.id, input).await
    }
}

pub use super::score_series::TimeseriesInput;

#[derive(InputObject)]
pub struct MetricCreate {
    pub name: String,
    pub key: Option<String>,
    pub kind: MetricKind,
    #[graphql(default_with = "MetricScoringType::HigherIsBetter")]
    pub scoring_type: MetricScoringType,
    pub description: Option<String>,
    pub unit: Option<String>,
}

#[derive(Default)]
pub struct MetricQueries;

#[Object]
impl MetricQueries {
    async fn metrics(&self, context: &Context<'_>) -> GqlResult<Vec<MetricView>> {
        let metrics = store(context)?.list_metrics().await.gql()?;
        Ok(metrics.into_iter().map(MetricView).collect())
    }

    async fn metric(
        &self,
        context: &Context<'_>,
        metric_id_or_key: IdOrKey,
        project_id_or_key: IdOrKey,
    ) -> GqlResult<Option<MetricView>> {
        let metric = optional(
            store(context)?
                .get_project_metric(metric_id_or_key.as_str(), project_id_or_key.as_str())
                .await,
        )?;
        Ok(metric.map(MetricView))
    }
}

#[derive(Default)]
pub struct MetricMutations;

#[Object]
impl MetricMutations {
    async fn create_metric(
        &self,
        context: &Context<'_>,
        project: IdOrKey,
        input: MetricCreate,
    ) -> GqlResult<MetricView> {
        let kind = match input.kind {
            MetricKind::Scalar => "SCALAR",
            MetricKind::Bool => "BOOL",
        };
        let scoring_type = match input.scoring_type {
            MetricScoringType::HigherIsBetter => "HIGHER_IS_BETTER",
            MetricScoringType::LowerIsBetter => "LOWER_IS_BETTER",
        };
        let metric = store(context)?
            .create_metric(
                project.as_str(),
                NewMetric {
                    key: input.key,
                    name: input.name,
                    kind: kind.to_owned(),
                    scoring_type: scoring_type.to_owned(),
                    description: input.description,
                    unit: input.unit,
                },
            )
            .await
            .gql()?;
        Ok(MetricView(metric))
    }
}
