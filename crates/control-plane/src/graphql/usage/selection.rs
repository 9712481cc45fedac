//! From a usage query's filter to the slot rows it covers: ids, keys and e-mail addresses
//! resolved, the `and`/`or`/`not` expression applied, the caller's readable projects enforced;
//! then the sums per group and per calendar bucket.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_graphql::Context;

use super::super::completions::{IdOrKeyCondition, TimeRange};
use super::super::{store, viewer, GqlResult, OrGql, Timestamp};
use super::types::{DateBucketUnit, UsageAggregateItem, UsageFilterExpression, UsageStats};
use crate::auth::permissions::Permission;
use crate::error::ApiError;
use crate::store::{MetadataStore, UsageScan, UsageSlot};
use crate::time_buckets::{BucketError, BucketUnit, Bucketing};

// === selection ===

/// What every usage query takes, before resolution.
pub(super) struct UsageRequest {
    pub(super) timerange: Option<TimeRange>,
    pub(super) unit: DateBucketUnit,
    pub(super) timezone: Option<String>,
    pub(super) model_ids: Option<Vec<String>>,
    pub(super) user_ids: Option<Vec<String>>,
    pub(super) project_ids: Option<Vec<String>>,
    pub(super) api_key_ids: Option<Vec<String>>,
    pub(super) expression: Option<UsageFilterExpression>,
}

/// A condition on one dimension, with keys and e-mail addresses resolved to ids. An unknown
/// value matches nothing rather than failing the query, like the completion filters.
#[derive(Debug, Clone, Default)]
struct IdCondition {
    eq: Option<String>,
    one_of: Option<HashSet<String>>,
    neq: Option<String>,
}

impl IdCondition {
    fn matches(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or_default();
        self.eq.as_deref().is_none_or(|eq| eq == value)
            && self.one_of.as_ref().is_none_or(|set| set.contains(value))
            && self.neq.as_deref().is_none_or(|neq| neq != value)
    }
}

#[derive(Debug, Clone)]
enum Expression {
    All(Vec<Expression>),
    Any(Vec<Expression>),
    Not(Box<Expression>),
    Model(IdCondition),
    User(IdCondition),
    Project(IdCondition),
}

impl Expression {
    fn matches(&self, slot: &UsageSlot) -> bool {
        match self {
            Expression::All(all) => all.iter().all(|expression| expression.matches(slot)),
            Expression::Any(any) => any.iter().any(|expression| expression.matches(slot)),
            Expression::Not(inner) => !inner.matches(slot),
            Expression::Model(condition) => condition.matches(slot.model_id.as_deref()),
            Expression::User(condition) => condition.matches(slot.user_id.as_deref()),
            Expression::Project(condition) => condition.matches(Some(&slot.project_id)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Dimension {
    Model,
    User,
    Project,
}

/// Resolves ids, keys and e-mail addresses of one dimension, caching what it looked up.
struct Resolver<'a> {
    store: &'a MetadataStore,
    cache: HashMap<(u8, String), String>,
}

impl Resolver<'_> {
    async fn id(&mut self, dimension: Dimension, id_or_key: &str) -> GqlResult<String> {
        let cache_key = (dimension as u8, id_or_key.to_owned());
        if let Some(id) = self.cache.get(&cache_key) {
            return Ok(id.clone());
        }
        let id = match dimension {
            Dimension::Model => self.store.find_model(id_or_key).await.gql()?.map(|m| m.id),
            Dimension::Project => self
                .store
                .find_project(id_or_key)
                .await
                .gql()?
                .map(|p| p.id),
            Dimension::User => self.store.find_user(id_or_key).await.gql()?.map(|u| u.id),
        }
        // Not a known key or address: take it as an id as is (a deleted user's or model's id
        // still names its past usage; anything else matches nothing).
        .unwrap_or_else(|| id_or_key.to_owned());
        self.cache.insert(cache_key, id.clone());
        Ok(id)
    }

    async fn ids(&mut self, dimension: Dimension, values: &[String]) -> GqlResult<HashSet<String>> {
        let mut ids = HashSet::with_capacity(values.len());
        for value in values {
            ids.insert(self.id(dimension, value).await?);
        }
        Ok(ids)
    }

    /// Looks up every id, key or e-mail address the expression names (async), so that
    /// [`Resolver::expression`] can build the tree without awaiting.
    async fn prefetch(&mut self, expression: &UsageFilterExpression) -> GqlResult<()> {
        let mut named = Vec::new();
        collect_names(expression, &mut named);
        for (dimension, value) in named {
            self.id(dimension, &value).await?;
        }
        Ok(())
    }

    fn cached(&self, dimension: Dimension, value: &str) -> String {
        self.cache
            .get(&(dimension as u8, value.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    fn condition(&self, dimension: Dimension, condition: &IdOrKeyCondition) -> IdCondition {
        IdCondition {
            eq: condition
                .eq
                .as_deref()
                .map(|value| self.cached(dimension, value)),
            one_of: condition.in_.as_ref().map(|values| {
                values
                    .iter()
                    .map(|value| self.cached(dimension, value))
                    .collect()
            }),
            neq: condition
                .neq
                .as_deref()
                .map(|value| self.cached(dimension, value)),
        }
    }

    /// The expression with its names resolved; call [`Resolver::prefetch`] first.
    fn expression(&self, expression: &UsageFilterExpression) -> Expression {
        let mut all: Vec<Expression> = expression
            .and
            .iter()
            .flatten()
            .map(|inner| self.expression(inner))
            .collect();
        if let Some(or) = &expression.or {
            all.push(Expression::Any(
                or.iter().map(|inner| self.expression(inner)).collect(),
            ));
        }
        if let Some(not) = &expression.not {
            all.push(Expression::Not(Box::new(self.expression(not))));
        }
        for (dimension, condition) in dimensions(expression) {
            if let Some(condition) = condition {
                all.push(dimension.expression(self.condition(dimension, condition)));
            }
        }
        Expression::All(all)
    }
}

fn dimensions(expression: &UsageFilterExpression) -> [(Dimension, &Option<IdOrKeyCondition>); 3] {
    [
        (Dimension::Model, &expression.model),
        (Dimension::User, &expression.user),
        (Dimension::Project, &expression.project),
    ]
}

fn collect_names(expression: &UsageFilterExpression, named: &mut Vec<(Dimension, String)>) {
    let children = expression
        .and
        .iter()
        .flatten()
        .chain(expression.or.iter().flatten())
        .chain(expression.not.as_deref());
    for child in children {
        collect_names(child, named);
    }
    for (dimension, condition) in dimensions(expression) {
        let Some(condition) = condition else { continue };
        let values = condition
            .eq
            .iter()
            .chain(condition.in_.iter().flatten())
            .chain(condition.neq.iter());
        named.extend(values.map(|value| (dimension, value.clone())));
    }
}

impl Dimension {
    fn expression(self, condition: IdCondition) -> Expression {
        match self {
            Dimension::Model => Expression::Model(condition),
            Dimension::User => Expression::User(condition),
            Dimension::Project => Expression::Project(condition),
        }
    }
}

/// A resolved usage query: the rows it covers, and how to bucket them.
pub(super) struct Selection {
    pub(super) slots: Vec<UsageSlot>,
    bucketing: Bucketing,
    from: Option<i64>,
    to: Option<i64>,
}

impl UsageRequest {
    pub(super) async fn select(self, context: &Context<'_>) -> GqlResult<Selection> {
        let store = store(context)?;
        let principal = &viewer(context)?.0;
        let bucketing =
            Bucketing::new(self.unit.into(), self.timezone.as_deref()).map_err(bucket_error)?;
        let (from, to) = match &self.timerange {
            Some(range) => {
                if range.to.0 < range.from.0 {
                    return Err(bucket_error(BucketError::EmptyRange));
                }
                (Some(range.from.0), Some(range.to.0))
            }
            None => (None, None),
        };
        let mut resolver = Resolver {
            store,
            cache: HashMap::new(),
        };
        let mut conditions = Vec::new();
        let lists = [
            (Dimension::Model, &self.model_ids),
            (Dimension::User, &self.user_ids),
            (Dimension::Project, &self.project_ids),
        ];
        for (dimension, ids) in lists {
            if let Some(ids) = ids {
                let condition = IdCondition {
                    one_of: Some(resolver.ids(dimension, ids).await?),
                    ..IdCondition::default()
                };
                conditions.push(dimension.expression(condition));
            }
        }
        if let Some(expression) = &self.expression {
            resolver.prefetch(expression).await?;
            conditions.push(resolver.expression(expression));
        }
        let filter = Expression::All(conditions);
        let api_keys: Option<HashSet<String>> =
            self.api_key_ids.map(|ids| ids.into_iter().collect());

        // Only the projects the caller may read; a global reader sees all.
        let project_ids = if principal.can(Permission::ProjectRead, None) {
            None
        } else {
            let projects = store.list_projects().await.gql()?;
            Some(
                projects
                    .into_iter()
                    .filter(|project| principal.can(Permission::ProjectRead, Some(&project.id)))
                    .map(|project| project.id)
                    .collect(),
            )
        };
        let scan = UsageScan {
            from,
            to,
            project_ids,
        };
        let slots = store
            .usage_slots(&scan)
            .await
            .gql()?
            .into_iter()
            .filter(|slot| filter.matches(slot))
            .filter(|slot| {
                api_keys.as_ref().is_none_or(|keys| {
                    keys.contains(slot.api_key_id.as_deref().unwrap_or_default())
                })
            })
            .collect();
        Ok(Selection {
            slots,
            bucketing,
            from,
            to,
        })
    }
}

fn bucket_error(error: BucketError) -> async_graphql::Error {
    ApiError::InvalidRequest(error.to_string()).into_graphql()
}

// === aggregation ===

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    prompt: i64,
    completion: i64,
    calls: i64,
}

impl Totals {
    fn add(&mut self, slot: &UsageSlot) {
        self.prompt += slot.prompt_tokens;
        self.completion += slot.completion_tokens;
        self.calls += slot.calls;
    }

    pub(super) fn of<'a>(slots: impl IntoIterator<Item = &'a UsageSlot>) -> Totals {
        let mut totals = Totals::default();
        for slot in slots {
            totals.add(slot);
        }
        totals
    }

    pub(super) fn stats(self) -> UsageStats {
        UsageStats {
            total_tokens: self.prompt + self.completion,
            interactions: self.calls,
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
        }
    }

    fn item(self, bucket: Option<i64>) -> UsageAggregateItem {
        UsageAggregateItem {
            bucket_ts: bucket.map(Timestamp),
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
            total_tokens: self.prompt + self.completion,
            interactions: self.calls,
        }
    }
}

impl Selection {
    /// The time series of `slots`: every bucket of the time range (zeros included), or from
    /// the first to the last slot with usage when there is no range.
    pub(super) fn series(&self, slots: &[&UsageSlot]) -> GqlResult<Vec<UsageAggregateItem>> {
        if self.bucketing.unit == BucketUnit::All {
            return Ok(vec![Totals::of(slots.iter().copied()).item(None)]);
        }
        let first = slots.iter().map(|slot| slot.slot).min();
        let last = slots.iter().map(|slot| slot.slot).max();
        let (Some(from), Some(to)) = (
            self.from.or(first),
            self.to
                .or(last.map(|last| last + crate::time_buckets::SLOT_MS)),
        ) else {
            return Ok(Vec::new());
        };
        let starts = self.bucketing.buckets(from, to).map_err(bucket_error)?;
        let mut buckets: BTreeMap<i64, Totals> = starts
            .into_iter()
            .flatten()
            .map(|start| (start, Totals::default()))
            .collect();
        for slot in slots {
            if let Some(start) = self.bucketing.start_of(slot.slot) {
                buckets.entry(start).or_default().add(slot);
            }
        }
        Ok(buckets
            .into_iter()
            .map(|(start, totals)| totals.item(Some(start)))
            .collect())
    }

    /// The slots grouped by a key, largest total first (ties by key, for a stable order).
    pub(super) fn grouped<K: Ord + Clone>(
        &self,
        key: impl Fn(&UsageSlot) -> K,
    ) -> Vec<(K, Vec<&UsageSlot>)> {
        let mut groups: BTreeMap<K, Vec<&UsageSlot>> = BTreeMap::new();
        for slot in &self.slots {
            groups.entry(key(slot)).or_default().push(slot);
        }
        let mut groups: Vec<(K, Vec<&UsageSlot>)> = groups.into_iter().collect();
        groups.sort_by_key(|(_, slots)| {
            let totals = Totals::of(slots.iter().copied());
            std::cmp::Reverse(totals.prompt + totals.completion)
        });
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time_buckets::SLOT_MS;

    fn slot(at: i64, project: &str, model: &str, user: &str, prompt: i64) -> UsageSlot {
        UsageSlot {
            slot: at,
            project_id: project.into(),
            model_service_id: None,
            model_id: Some(model.into()),
            user_id: Some(user.into()),
            api_key_id: None,
            prompt_tokens: prompt,
            completion_tokens: 1,
            calls: 1,
        }
    }

    fn ids(values: &[&str]) -> Option<HashSet<String>> {
        Some(values.iter().map(|value| value.to_string()).collect())
    }

    #[test]
    fn expressions_combine_conditions() {
        let a = slot(0, "p1", "m1", "u1", 5);
        let b = slot(0, "p2", "m2", "u1", 5);
        let model_m1 = Expression::Model(IdCondition {
            eq: Some("m1".into()),
            ..IdCondition::default()
        });
        assert!(model_m1.matches(&a) && !model_m1.matches(&b));
        let not_m1 = Expression::Not(Box::new(model_m1.clone()));
        assert!(!not_m1.matches(&a) && not_m1.matches(&b));
        let either = Expression::Any(vec![
            model_m1.clone(),
            Expression::Project(IdCondition {
                one_of: ids(&["p2"]),
                ..IdCondition::default()
            }),
        ]);
        assert!(either.matches(&a) && either.matches(&b));
        let both = Expression::All(vec![
            either,
            Expression::User(IdCondition {
                neq: Some("u1".into()),
                ..IdCondition::default()
            }),
        ]);
        assert!(!both.matches(&a) && !both.matches(&b));
        assert!(Expression::All(Vec::new()).matches(&a));
        // An unknown id resolves to "" and matches nothing.
        let unknown = Expression::Model(IdCondition {
            one_of: ids(&[""]),
            ..IdCondition::default()
        });
        assert!(!unknown.matches(&a));
    }

    #[test]
    fn series_fill_the_range_and_sum_each_bucket() {
        let hour = 3_600_000;
        let slots = [
            slot(0, "p", "m", "u", 10),
            slot(SLOT_MS, "p", "m", "u", 5),
            slot(2 * hour, "p", "m", "u", 7),
        ];
        let selection = Selection {
            slots: slots.to_vec(),
            bucketing: Bucketing::new(BucketUnit::Hour, None).expect("valid"),
            from: Some(0),
            to: Some(4 * hour),
        };
        let refs: Vec<&UsageSlot> = selection.slots.iter().collect();
        let series = selection.series(&refs).expect("valid");
        let prompts: Vec<i64> = series.iter().map(|item| item.prompt_tokens).collect();
        assert_eq!(prompts, vec![15, 0, 7, 0]);
        assert_eq!(series[0].interactions, 2);
        assert_eq!(series[0].total_tokens, 17);
        assert_eq!(series[3].bucket_ts, Some(Timestamp(3 * hour)));

        let all = Selection {
            bucketing: Bucketing::new(BucketUnit::All, None).expect("valid"),
            ..selection
        };
        let refs: Vec<&UsageSlot> = all.slots.iter().collect();
        let series = all.series(&refs).expect("valid");
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].bucket_ts, None);
        assert_eq!(series[0].prompt_tokens, 22);
    }
}
