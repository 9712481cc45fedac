//! Interactions: `completions(filter, page, order)`, `completionsGrouped(groupBy, ...)`,
//! `completion(project, id)`, and `addDirectScore(completionId, metricId, input)` (the SDK's
//! `feedback.log_metric`).
//!
//! The SDK sends its filters as `advancedFilter: {and: [...]}`. The top-level fields of
//! `ListCompletionsFilterInput` and the advanced filter expression (`and` / `or` / `not` over
//! model, time range, session, completion id, label, score, prompt hash, source, created by,
//! completion and prompt text) all map onto one store [`CompletionCondition`] tree. Only
//! comparison conditions answer `not_supported`.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};

use super::metrics::MetricView;
use super::scalars::{IdOrKey, InputDatetime, Timestamp};
use super::{optional, store, viewer, GqlResult, OrGql};
use crate::auth::Permission;
use crate::error::ApiError;
use crate::store::{
    Comparison, Completion, CompletionCondition, CompletionFilter,
    CompletionGroupBy as StoreGroupBy, MetadataStore, NewScore, NumericComparison, PagePosition,
    PageRequest, Score, ScoreStats, ScoreValue, TextField, TextPredicate,
};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CompletionSource {
    Live,
    Offline,
    Automation,
    Dataset,
    Evaluation,
}

impl CompletionSource {
    fn as_str(self) -> &'static str {
        match self {
            CompletionSource::Live => "LIVE",
            CompletionSource::Offline => "OFFLINE",
            CompletionSource::Automation => "AUTOMATION",
            CompletionSource::Dataset => "DATASET",
            CompletionSource::Evaluation => "EVALUATION",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "OFFLINE" => CompletionSource::Offline,
            "AUTOMATION" => CompletionSource::Automation,
            "DATASET" => CompletionSource::Dataset,
            "EVALUATION" => CompletionSource::Evaluation,
            _ => CompletionSource::Live,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CompletionGroupBy {
    Model,
    Prompt,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SortDirection {
    Asc,
    Desc,
}

// === inputs ===

#[derive(InputObject)]
pub struct CursorPageInput {
    pub first: Option<i64>,
    pub after: Option<String>,
    pub before: Option<String>,
    pub last: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(InputObject)]
pub struct OrderPair {
    pub field: String,
    pub order: SortDirection,
}

#[derive(InputObject)]
pub struct TimeRange {
    pub from: InputDatetime,
    pub to: InputDatetime,
}

#[derive(InputObject)]
pub struct LabelFilter {
    pub key: String,
    pub value: Option<Vec<String>>,
}

#[derive(InputObject)]
pub struct CompletionScoreFilterInput {
    pub metric: String,
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub eq: Option<f64>,
    pub neq: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
    pub reasons: Option<Vec<String>>,
}

#[derive(InputObject)]
pub struct CompletionComparisonFilterInput {
    pub metric: String,
}

#[derive(InputObject)]
pub struct IdOrKeyCondition {
    pub eq: Option<String>,
    #[graphql(name = "in")]
    pub in_: Option<Vec<String>>,
    pub neq: Option<String>,
}

#[derive(InputObject)]
pub struct StringCondition {
    pub eq: Option<String>,
    #[graphql(name = "in")]
    pub in_: Option<Vec<String>>,
    pub neq: Option<String>,
}

#[derive(InputObject)]
pub struct TextCondition {
    pub eq: Option<String>,
    pub contains: Option<String>,
}

#[derive(InputObject)]
pub struct FloatNumericCondition {
    pub eq: Option<f64>,
    pub neq: Option<f64>,
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

#[derive(InputObject)]
pub struct LabelCondition {
    pub key: String,
    pub value: Option<StringCondition>,
}

#[derive(InputObject)]
pub struct ScoreCondition {
    pub metric: String,
    pub value: Option<FloatNumericCondition>,
    pub reasons: Option<Vec<String>>,
}

#[derive(InputObject)]
pub struct CompletionFilterExpression {
    pub and: Option<Vec<CompletionFilterExpression>>,
    pub or: Option<Vec<CompletionFilterExpression>>,
    pub not: Option<Box<CompletionFilterExpression>>,
    pub timerange: Option<TimeRange>,
    pub model: Option<IdOrKeyCondition>,
    pub label: Option<LabelCondition>,
    pub scores: Option<ScoreCondition>,
    pub source: Option<CompletionSource>,
    pub prompt_hash: Option<StringCondition>,
    pub session_id: Option<String>,
    pub created_by: Option<IdOrKeyCondition>,
    pub completion_id: Option<String>,
    pub completion: Option<TextCondition>,
    pub prompt: Option<TextCondition>,
}

#[derive(InputObject)]
pub struct ListCompletionsFilterInput {
    pub project: String,
    pub models: Option<Vec<String>>,
    pub timerange: Option<TimeRange>,
    pub session_id: Option<String>,
    pub created_by: Option<String>,
    pub scores: Option<Vec<CompletionScoreFilterInput>>,
    pub comparisons: Option<Vec<CompletionComparisonFilterInput>>,
    pub labels: Option<Vec<LabelFilter>>,
    pub prompt_hash: Option<String>,
    pub completion_id: Option<String>,
    pub source: Option<Vec<CompletionSource>>,
    pub completion: Option<String>,
    pub prompt: Option<String>,
    pub advanced_filter: Option<CompletionFilterExpression>,
}

async fn model_ids(store: &MetadataStore, ids_or_keys: &[String]) -> GqlResult<Vec<String>> {
    let mut ids = Vec::with_capacity(ids_or_keys.len());
    for id_or_key in ids_or_keys {
        // An unknown model matches nothing rather than failing the query.
        match store.find_model(id_or_key).await.gql()? {
            Some(model) => ids.push(model.id),
            None => ids.push(String::new()),
        }
    }
    Ok(ids)
}

/// A score condition on a metric id or key. Like an unknown model, an unknown metric matches
/// nothing rather than failing the query.
async fn score_condition(
    store: &MetadataStore,
    metric: &str,
    comparisons: Vec<(NumericComparison, f64)>,
    reasons: &Option<Vec<String>>,
) -> GqlResult<CompletionCondition> {
    let metric_id = match store.find_metric(metric).await.gql()? {
        Some(metric) => metric.id,
        None => String::new(),
    };
    Ok(CompletionCondition::Score {
        metric_id,
        comparisons,
        reasons: reasons.clone().unwrap_or_default(),
    })
}

/// The set bounds of a numeric condition, in a fixed order.
fn numeric_comparisons(
    bounds: [(NumericComparison, Option<f64>); 6],
) -> Vec<(NumericComparison, f64)> {
    bounds
        .into_iter()
        .filter_map(|(comparison, value)| Some((comparison, value?)))
        .collect()
}

fn float_comparisons(condition: &FloatNumericCondition) -> Vec<(NumericComparison, f64)> {
    numeric_comparisons([
        (NumericComparison::Eq, condition.eq),
        (NumericComparison::Neq, condition.neq),
        (NumericComparison::Gt, condition.gt),
        (NumericComparison::Gte, condition.gte),
        (NumericComparison::Lt, condition.lt),
        (NumericComparison::Lte, condition.lte),
    ])
}

/// `eq` / `in` / `neq` of a string condition as conditions built by `matches_one_of`; all must
/// hold.
fn string_conditions(
    eq: &Option<String>,
    in_: &Option<Vec<String>>,
    neq: &Option<String>,
    matches_one_of: impl Fn(Vec<String>) -> CompletionCondition,
) -> Vec<CompletionCondition> {
    let mut conditions = Vec::new();
    if let Some(value) = eq {
        conditions.push(matches_one_of(vec![value.clone()]));
    }
    if let Some(values) = in_ {
        conditions.push(matches_one_of(values.clone()));
    }
    if let Some(value) = neq {
        conditions.push(CompletionCondition::Not(Box::new(matches_one_of(vec![
            value.clone(),
        ]))));
    }
    conditions
}

fn text_conditions(field: TextField, condition: &TextCondition) -> Vec<CompletionCondition> {
    let equals = condition
        .eq
        .iter()
        .map(|text| TextPredicate::Equals(text.clone()));
    let contains = condition
        .contains
        .iter()
        .map(|text| TextPredicate::Contains(text.clone()));
    equals
        .chain(contains)
        .map(|predicate| CompletionCondition::Text { field, predicate })
        .collect()
}

/// A label condition: no value condition means "has the label"; `neq` means "has the label
/// with another value".
fn label_conditions(label: &LabelCondition) -> Vec<CompletionCondition> {
    let present = CompletionCondition::LabelPresent {
        key: label.key.clone(),
    };
    let Some(value) = &label.value else {
        return vec![present];
    };
    let with_values = |values: Vec<String>| CompletionCondition::Label {
        key: label.key.clone(),
        values,
    };
    let mut conditions = string_conditions(&value.eq, &value.in_, &None, with_values);
    if let Some(excluded) = &value.neq {
        conditions.push(present.clone());
        conditions.push(CompletionCondition::Not(Box::new(with_values(vec![
            excluded.clone(),
        ]))));
    }
    if conditions.is_empty() {
        conditions.push(present);
    }
    conditions
}

/// Completions record their creator's user id; filters may name the user by id or email. A
/// name that is no active user is kept as given (a deleted user's id still matches).
async fn user_id(store: &MetadataStore, id_or_email: &str) -> GqlResult<String> {
    Ok(store
        .find_user(id_or_email)
        .await
        .gql()?
        .map_or_else(|| id_or_email.to_owned(), |user| user.id))
}

async fn user_ids(store: &MetadataStore, ids_or_emails: &[String]) -> GqlResult<Vec<String>> {
    let mut ids = Vec::with_capacity(ids_or_emails.len());
    for id_or_email in ids_or_emails {
        ids.push(user_id(store, id_or_email).await?);
    }
    Ok(ids)
}

/// The condition of one advanced filter expression: every field it sets must hold.
async fn expression_condition(
    store: &MetadataStore,
    expression: &CompletionFilterExpression,
) -> GqlResult<CompletionCondition> {
    let mut conditions = Vec::new();
    if let Some(conjuncts) = &expression.and {
        let mut all = Vec::with_capacity(conjuncts.len());
        for conjunct in conjuncts {
            all.push(Box::pin(expression_condition(store, conjunct)).await?);
        }
        conditions.push(CompletionCondition::All(all));
    }
    if let Some(disjuncts) = &expression.or {
        let mut any = Vec::with_capacity(disjuncts.len());
        for disjunct in disjuncts {
            any.push(Box::pin(expression_condition(store, disjunct)).await?);
        }
        conditions.push(CompletionCondition::Any(any));
    }
    if let Some(negated) = &expression.not {
        let inner = Box::pin(expression_condition(store, negated)).await?;
        conditions.push(CompletionCondition::Not(Box::new(inner)));
    }
    if let Some(range) = &expression.timerange {
        conditions.push(CompletionCondition::CreatedAt {
            from_ms: Some(range.from.0),
            to_ms: Some(range.to.0),
        });
    }
    if let Some(model) = &expression.model {
        let mut wanted = model.in_.clone().unwrap_or_default();
        wanted.extend(model.eq.clone());
        if model.eq.is_some() || model.in_.is_some() {
            conditions.push(CompletionCondition::Model(model_ids(store, &wanted).await?));
        }
        if let Some(excluded) = &model.neq {
            let excluded_ids = model_ids(store, std::slice::from_ref(excluded)).await?;
            conditions.push(CompletionCondition::Not(Box::new(
                CompletionCondition::Model(excluded_ids),
            )));
        }
    }
    if let Some(label) = &expression.label {
        conditions.extend(label_conditions(label));
    }
    if let Some(score) = &expression.scores {
        let comparisons = score
            .value
            .as_ref()
            .map(float_comparisons)
            .unwrap_or_default();
        conditions.push(score_condition(store, &score.metric, comparisons, &score.reasons).await?);
    }
    if let Some(source) = expression.source {
        conditions.push(CompletionCondition::Source(vec![source
            .as_str()
            .to_owned()]));
    }
    if let Some(prompt_hash) = &expression.prompt_hash {
        conditions.extend(string_conditions(
            &prompt_hash.eq,
            &prompt_hash.in_,
            &prompt_hash.neq,
            CompletionCondition::PromptHash,
        ));
    }
    if let Some(session_id) = &expression.session_id {
        conditions.push(CompletionCondition::SessionId(session_id.clone()));
    }
    if let Some(created_by) = &expression.created_by {
        let eq = match &created_by.eq {
            Some(user) => Some(user_id(store, user).await?),
            None => None,
        };
        let in_ = match &created_by.in_ {
            Some(users) => Some(user_ids(store, users).await?),
            None => None,
        };
        let neq = match &created_by.neq {
            Some(user) => Some(user_id(store, user).await?),
            None => None,
        };
        conditions.extend(string_conditions(
            &eq,
            &in_,
            &neq,
            CompletionCondition::CreatedBy,
        ));
    }
    if let Some(completion_id) = &expression.completion_id {
        conditions.push(CompletionCondition::CompletionId(completion_id.clone()));
    }
    if let Some(completion) = &expression.completion {
        conditions.extend(text_conditions(TextField::Completion, completion));
    }
    if let Some(prompt) = &expression.prompt {
        conditions.extend(text_conditions(TextField::Prompt, prompt));
    }
    Ok(CompletionCondition::All(conditions))
}

async fn to_store_filter(
    store: &MetadataStore,
    input: &ListCompletionsFilterInput,
) -> GqlResult<CompletionFilter> {
    let project = store.get_project(&input.project).await.gql()?;
    let mut conditions = Vec::new();
    for comparison in input.comparisons.iter().flatten() {
        // An unknown metric matches nothing, as unknown models do.
        let metric_id = store
            .find_metric(&comparison.metric)
            .await
            .gql()?
            .map_or_else(String::new, |metric| metric.id);
        conditions.push(CompletionCondition::Compared { metric_id });
    }
    if let Some(models) = &input.models {
        conditions.push(CompletionCondition::Model(model_ids(store, models).await?));
    }
    if let Some(range) = &input.timerange {
        conditions.push(CompletionCondition::CreatedAt {
            from_ms: Some(range.from.0),
            to_ms: Some(range.to.0),
        });
    }
    if let Some(session_id) = &input.session_id {
        conditions.push(CompletionCondition::SessionId(session_id.clone()));
    }
    if let Some(created_by) = &input.created_by {
        conditions.push(CompletionCondition::CreatedBy(vec![
            user_id(store, created_by).await?,
        ]));
    }
    for score in input.scores.iter().flatten() {
        let comparisons = numeric_comparisons([
            (NumericComparison::Eq, score.eq),
            (NumericComparison::Neq, score.neq),
            (NumericComparison::Gt, score.gt),
            (NumericComparison::Gte, score.gte),
            (NumericComparison::Lt, score.lt),
            (NumericComparison::Lte, score.lte),
        ]);
        conditions.push(score_condition(store, &score.metric, comparisons, &score.reasons).await?);
    }
    for label in input.labels.iter().flatten() {
        conditions.push(match &label.value {
            None => CompletionCondition::LabelPresent {
                key: label.key.clone(),
            },
            Some(values) => CompletionCondition::Label {
                key: label.key.clone(),
                values: values.clone(),
            },
        });
    }
    if let Some(prompt_hash) = &input.prompt_hash {
        conditions.push(CompletionCondition::PromptHash(vec![prompt_hash.clone()]));
    }
    if let Some(completion_id) = &input.completion_id {
        conditions.push(CompletionCondition::CompletionId(completion_id.clone()));
    }
    if let Some(sources) = &input.source {
        let sources = sources
            .iter()
            .map(|source| source.as_str().to_owned())
            .collect();
        conditions.push(CompletionCondition::Source(sources));
    }
    if let Some(completion) = &input.completion {
        conditions.push(CompletionCondition::Text {
            field: TextField::Completion,
            predicate: TextPredicate::Contains(completion.clone()),
        });
    }
    if let Some(prompt) = &input.prompt {
        conditions.push(CompletionCondition::Text {
            field: TextField::Prompt,
            predicate: TextPredicate::Contains(prompt.clone()),
        });
    }
    if let Some(expression) = &input.advanced_filter {
        conditions.push(expression_condition(store, expression).await?);
    }
    Ok(CompletionFilter {
        project_id: project.id,
        condition: CompletionCondition::All(conditions),
    })
}

fn to_page(page: &CursorPageInput) -> GqlResult<PageRequest> {
    Ok(PageRequest {
        first: page.first,
        after: page.after.clone(),
        offset: page.offset,
        last: page.last,
        before: page.before.clone(),
    })
}

/// Ascending only when the first order pair asks for it on `created_at`.
fn ascending(order: &Option<Vec<OrderPair>>) -> GqlResult<bool> {
    let Some(first) = order.as_ref().and_then(|pairs| pairs.first()) else {
        return Ok(false);
    };
    if first.field != "created_at" {
        return Err(ApiError::InvalidRequest(format!(
            "completions can be ordered by 'created_at' only, not '{}'",
            first.field
        ))
        .into_graphql());
    }
    Ok(first.order == SortDirection::Asc)
}

// === outputs ===

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

impl From<PagePosition> for PageInfo {
    fn from(position: PagePosition) -> Self {
        PageInfo {
            has_next_page: position.has_next_page,
            has_previous_page: position.has_previous_page,
            start_cursor: position.start_cursor,
            end_cursor: position.end_cursor,
        }
    }
}

#[derive(SimpleObject)]
pub struct ChatMessageView {
    pub role: String,
    pub content: String,
}

#[derive(SimpleObject)]
#[graphql(name = "CompletionLabel")]
pub struct LabelView {
    pub key: String,
    pub value: String,
}

#[derive(SimpleObject)]
pub struct Usage {
    pub completion_tokens: i64,
    pub prompt_tokens: i64,
    pub total_tokens: i64,
}

#[derive(SimpleObject)]
pub struct CompletionMetadata {
    pub parameters: Option<async_graphql::Json<serde_json::Value>>,
    pub timings: Option<async_graphql::Json<serde_json::Value>>,
    pub usage: Option<Usage>,
    pub system: Option<async_graphql::Json<serde_json::Value>>,
}

#[derive(SimpleObject)]
#[graphql(name = "CompletionModel")]
pub struct CompletionModelView {
    pub id: ID,
    pub key: String,
    pub name: String,
}

#[derive(SimpleObject)]
#[graphql(name = "CompletionProject")]
pub struct CompletionProjectView {
    pub id: ID,
    pub key: String,
    pub name: String,
}

pub struct DirectScoreView(pub Score);

#[Object(name = "DirectScore")]
impl DirectScoreView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn value(&self) -> f64 {
        self.0.value
    }
    async fn metric(&self, context: &Context<'_>) -> GqlResult<Option<MetricView>> {
        let metric = store(context)?.find_metric(&self.0.metric_id).await.gql()?;
        Ok(metric.map(MetricView))
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn details(&self) -> Option<&str> {
        self.0.details.as_deref()
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
}

/// A preference between two completions (`POST /api/v1/comparison`).
pub struct ComparisonScoreView(pub Comparison);

#[Object(name = "ComparisonScore")]
impl ComparisonScoreView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    async fn project(&self, context: &Context<'_>) -> GqlResult<Option<CompletionProjectView>> {
        let project = optional(store(context)?.get_project(&self.0.project_id).await)?;
        Ok(project.map(|project| CompletionProjectView {
            id: ID(project.id),
            key: project.key,
            name: project.name,
        }))
    }
    async fn metric(&self, context: &Context<'_>) -> GqlResult<Option<CompletionModelView>> {
        let metric = store(context)?.find_metric(&self.0.metric_id).await.gql()?;
        Ok(metric.map(|metric| CompletionModelView {
            id: ID(metric.id),
            key: metric.key,
            name: metric.name,
        }))
    }
    /// (sic: the SDK's spelling)
    async fn prefered_completion(
        &self,
        context: &Context<'_>,
    ) -> GqlResult<Option<CompletionView>> {
        compared_completion(context, &self.0.project_id, &self.0.preferred_completion_id).await
    }
    async fn other_completion(&self, context: &Context<'_>) -> GqlResult<Option<CompletionView>> {
        compared_completion(context, &self.0.project_id, &self.0.other_completion_id).await
    }
}

async fn compared_completion(
    context: &Context<'_>,
    project_id: &str,
    completion_id: &str,
) -> GqlResult<Option<CompletionView>> {
    let completion = optional(
        store(context)?
            .get_completion(project_id, completion_id)
            .await,
    )?;
    Ok(completion.map(CompletionView))
}

pub struct CompletionView(pub Completion);

#[Object(name = "Completion")]
impl CompletionView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn prompt_hash(&self) -> &str {
        &self.0.prompt_hash
    }
    async fn chat_messages(&self) -> Vec<ChatMessageView> {
        self.0
            .chat_messages
            .iter()
            .map(|message| ChatMessageView {
                role: message.role.clone(),
                content: message.content.clone(),
            })
            .collect()
    }
    async fn completion(&self) -> Option<&str> {
        self.0.completion.as_deref()
    }
    async fn source(&self) -> CompletionSource {
        CompletionSource::parse(&self.0.source)
    }
    async fn session_id(&self) -> Option<&str> {
        self.0.session_id.as_deref()
    }
    async fn model(&self, context: &Context<'_>) -> GqlResult<Option<CompletionModelView>> {
        let Some(model_id) = &self.0.model_id else {
            return Ok(None);
        };
        let model = store(context)?.find_model(model_id).await.gql()?;
        Ok(model.map(|model| CompletionModelView {
            id: ID(model.id),
            key: model.key,
            name: model.name,
        }))
    }
    async fn direct_scores(&self, context: &Context<'_>) -> GqlResult<Vec<DirectScoreView>> {
        let scores = store(context)?
            .scores_for_completion(&self.0.id)
            .await
            .gql()?;
        Ok(scores.into_iter().map(DirectScoreView).collect())
    }
    async fn comparison_scores(
        &self,
        context: &Context<'_>,
    ) -> GqlResult<Vec<ComparisonScoreView>> {
        let comparisons = store(context)?
            .comparisons_for_completion(&self.0.id)
            .await
            .gql()?;
        Ok(comparisons.into_iter().map(ComparisonScoreView).collect())
    }
    async fn labels(&self) -> Vec<LabelView> {
        self.0
            .labels
            .iter()
            .map(|label| LabelView {
                key: label.key.clone(),
                value: label.value.clone(),
            })
            .collect()
    }
    async fn metadata(&self) -> CompletionMetadata {
        let field = |name: &str| {
            self.0
                .metadata
                .get(name)
                .filter(|value| !value.is_null())
                .cloned()
                .map(async_graphql::Json)
        };
        CompletionMetadata {
            parameters: field("parameters"),
            timings: field("timings"),
            system: field("system"),
            usage: Some(Usage {
                completion_tokens: self.0.completion_tokens,
                prompt_tokens: self.0.prompt_tokens,
                total_tokens: self.0.prompt_tokens + self.0.completion_tokens,
            }),
        }
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
}

#[derive(SimpleObject)]
pub struct CompletionConnection {
    pub total_count: i64,
    pub page_info: PageInfo,
    pub nodes: Vec<CompletionView>,
}

#[derive(SimpleObject)]
#[graphql(name = "DirectScoresStats")]
pub struct ScoreStatsView {
    pub metric: MetricView,
    pub scores: i64,
    pub average: Option<f64>,
    pub max: Option<f64>,
    pub min: Option<f64>,
    pub stddev: Option<f64>,
    pub sum: Option<f64>,
}

impl From<ScoreStats> for ScoreStatsView {
    fn from(stats: ScoreStats) -> Self {
        Self {
            metric: MetricView(stats.metric),
            scores: stats.scores,
            average: Some(stats.average),
            max: Some(stats.max),
            min: Some(stats.min),
            stddev: Some(stats.stddev),
            sum: Some(stats.sum),
        }
    }
}

pub struct CompletionGroupView {
    key: String,
    count: i64,
    filter: CompletionFilter,
}

#[Object(name = "CompletionGroup")]
impl CompletionGroupView {
    async fn key(&self) -> &str {
        &self.key
    }
    async fn count(&self) -> i64 {
        self.count
    }
    async fn direct_scores_stats(&self, context: &Context<'_>) -> GqlResult<Vec<ScoreStatsView>> {
        let stats = store(context)?.score_stats(&self.filter).await.gql()?;
        Ok(stats.into_iter().map(ScoreStatsView::from).collect())
    }
    async fn completions(
        &self,
        context: &Context<'_>,
        page: CursorPageInput,
        order: Option<Vec<OrderPair>>,
    ) -> GqlResult<CompletionConnection> {
        list_page(store(context)?, &self.filter, &page, &order).await
    }
}

#[derive(SimpleObject)]
pub struct CompletionGroupConnection {
    pub total_count: i64,
    pub group_by: CompletionGroupBy,
    pub page_info: PageInfo,
    pub nodes: Vec<CompletionGroupView>,
}

async fn list_page(
    store: &MetadataStore,
    filter: &CompletionFilter,
    page: &CursorPageInput,
    order: &Option<Vec<OrderPair>>,
) -> GqlResult<CompletionConnection> {
    let page = store
        .list_completions(filter, &to_page(page)?, ascending(order)?)
        .await
        .gql()?;
    Ok(CompletionConnection {
        total_count: page.total_count,
        page_info: page.position.into(),
        nodes: page.nodes.into_iter().map(CompletionView).collect(),
    })
}

#[derive(Default)]
pub struct CompletionQueries;

#[Object]
impl CompletionQueries {
    async fn completions(
        &self,
        context: &Context<'_>,
        filter: ListCompletionsFilterInput,
        page: CursorPageInput,
        order: Option<Vec<OrderPair>>,
    ) -> GqlResult<CompletionConnection> {
        let store = store(context)?;
        let filter = to_store_filter(store, &filter).await?;
        list_page(store, &filter, &page, &order).await
    }

    async fn completions_grouped(
        &self,
        context: &Context<'_>,
        group_by: CompletionGroupBy,
        filter: ListCompletionsFilterInput,
        page: CursorPageInput,
        #[graphql(name = "order")] _order: Option<Vec<OrderPair>>,
    ) -> GqlResult<CompletionGroupConnection> {
        let store = store(context)?;
        let filter = to_store_filter(store, &filter).await?;
        let store_group_by = match group_by {
            CompletionGroupBy::Model => StoreGroupBy::Model,
            CompletionGroupBy::Prompt => StoreGroupBy::Prompt,
        };
        let (groups, total_count, position) = store
            .list_completion_groups(&filter, store_group_by, &to_page(&page)?)
            .await
            .gql()?;
        let mut nodes = Vec::with_capacity(groups.len());
        for group in groups {
            let group_filter = store
                .filter_for_group(&filter, store_group_by, &group.key)
                .await
                .gql()?;
            nodes.push(CompletionGroupView {
                key: group.key,
                count: group.count,
                filter: group_filter,
            });
        }
        Ok(CompletionGroupConnection {
            total_count,
            group_by,
            page_info: position.into(),
            nodes,
        })
    }

    async fn completion(
        &self,
        context: &Context<'_>,
        project: IdOrKey,
        id: uuid::Uuid,
    ) -> GqlResult<Option<CompletionView>> {
        let store = store(context)?;
        let project = store.get_project(project.as_str()).await.gql()?;
        let completion = optional(store.get_completion(&project.id, &id.to_string()).await)?;
        Ok(completion.map(CompletionView))
    }
}

/// `ScoreAddInput`: `value` is a number, or for BOOL metrics also a boolean. It is nullable
/// so that a null is refused by our validation, with our error code.
#[derive(InputObject)]
pub struct ScoreAddInput {
    pub value: Option<async_graphql::Json<serde_json::Value>>,
    pub details: Option<String>,
    pub reason: Option<String>,
}

#[derive(Default)]
pub struct CompletionMutations;

#[Object]
impl CompletionMutations {
    /// Score a completion against a metric linked to its project. The policy table lets through
    /// callers with `metric:score` somewhere; the completion's project is checked here.
    async fn add_direct_score(
        &self,
        context: &Context<'_>,
        completion_id: uuid::Uuid,
        metric_id: IdOrKey,
        input: ScoreAddInput,
    ) -> GqlResult<DirectScoreView> {
        let store = store(context)?;
        let principal = &viewer(context)?.0;
        let completion_id = completion_id.to_string();
        let project_id = store.completion_project_id(&completion_id).await.gql()?;
        if !principal.can(Permission::MetricScore, Some(&project_id)) {
            return Err(ApiError::Forbidden(
                "'addDirectScore' needs the permission metric:score on the completion's project"
                    .to_owned(),
            )
            .into_graphql());
        }
        let score = NewScore {
            completion_id,
            metric: metric_id.as_str().to_owned(),
            value: ScoreValue::from_json(&input.value.map(|json| json.0).unwrap_or_default())
                .gql()?,
            reason: input.reason,
            details: input.details,
            created_by: Some(principal.user.id.clone()),
            created_at: None,
        };
        let recorded = store.insert_scores(&[score]).await.gql()?;
        let score = recorded
            .into_iter()
            .next()
            .ok_or_else(|| async_graphql::Error::new("internal error"))?;
        Ok(DirectScoreView(score))
    }
}
