//! Scores aggregated over time: `MetricWithContext.timeseries(input)`, the SDK's view of a
//! metric's scores on one project, per model service's model when `byModel` is set.
//!
//! The store sums each metric's scores into 15-minute slots per model; this module folds the
//! slots into calendar buckets ([`crate::time_buckets`]) and applies the aggregation.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, InputObject, SimpleObject};

use super::completions::TimeRange;
use super::models::ModelView;
use super::{store, GqlResult, OrGql, Timestamp};
use crate::error::ApiError;
use crate::store::ScoreSlot;
use crate::time_buckets::{BucketUnit, Bucketing, SLOT_MS};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TimeseriesInterval {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
    /// One bucket for the whole range.
    Millennium,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MetricAggregation {
    Average,
    Sum,
    Count,
}

#[derive(InputObject)]
pub struct TimeseriesInput {
    pub interval: TimeseriesInterval,
    pub timerange: Option<TimeRange>,
    pub timezone: Option<String>,
    #[graphql(default)]
    pub by_model: bool,
    #[graphql(default_with = "MetricAggregation::Average")]
    pub aggregation: MetricAggregation,
}

/// One series: parallel lists, one entry per bucket. `values[i]` is null where bucket `i`
/// has no score and the aggregation is an average.
#[derive(SimpleObject)]
pub struct Timeseries {
    /// The model, with `byModel`; null for the series of all models.
    pub model: Option<ModelView>,
    pub time_buckets: Vec<Timestamp>,
    pub count: Vec<i64>,
    pub values: Vec<Option<f64>>,
    pub aggregation: MetricAggregation,
}

pub async fn timeseries(
    context: &Context<'_>,
    project_id: &str,
    metric_id: &str,
    input: TimeseriesInput,
) -> GqlResult<Vec<Timeseries>> {
    let unit = match input.interval {
        TimeseriesInterval::Hour => BucketUnit::Hour,
        TimeseriesInterval::Day => BucketUnit::Day,
        TimeseriesInterval::Week => BucketUnit::Week,
        TimeseriesInterval::Month => BucketUnit::Month,
        TimeseriesInterval::Quarter => BucketUnit::Quarter,
        TimeseriesInterval::Year => BucketUnit::Year,
        TimeseriesInterval::Millennium => BucketUnit::All,
    };
    let invalid = |error: crate::time_buckets::BucketError| {
        ApiError::InvalidRequest(error.to_string()).into_graphql()
    };
    let bucketing = Bucketing::new(unit, input.timezone.as_deref()).map_err(invalid)?;
    let (from, to) = match &input.timerange {
        Some(range) => (Some(range.from.0), Some(range.to.0)),
        None => (None, None),
    };
    let store = store(context)?;
    let slots = store
        .score_slots(project_id, metric_id, from, to)
        .await
        .gql()?;

    // The buckets: the whole range when given, else from the first to the last score.
    let first = slots.iter().map(|slot| slot.slot).min();
    let last = slots.iter().map(|slot| slot.slot + SLOT_MS).max();
    let (Some(start), Some(end)) = (from.or(first), to.or(last)) else {
        return Ok(Vec::new());
    };
    let starts: Vec<i64> = bucketing
        .buckets(start, end)
        .map_err(invalid)?
        .into_iter()
        .map(|bucket| bucket.unwrap_or(start))
        .collect();

    let mut groups: BTreeMap<Option<String>, Vec<&ScoreSlot>> = BTreeMap::new();
    for slot in &slots {
        let key = input.by_model.then(|| slot.model_id.clone()).flatten();
        groups.entry(key).or_default().push(slot);
    }
    let mut series = Vec::with_capacity(groups.len());
    for (model_id, group) in groups {
        let model = match &model_id {
            Some(id) => store.find_model(id).await.gql()?.map(ModelView),
            None => None,
        };
        series.push(fold(&bucketing, &starts, &group, input.aggregation, model));
    }
    Ok(series)
}

fn fold(
    bucketing: &Bucketing,
    starts: &[i64],
    slots: &[&ScoreSlot],
    aggregation: MetricAggregation,
    model: Option<ModelView>,
) -> Timeseries {
    let mut counts = vec![0i64; starts.len()];
    let mut sums = vec![0f64; starts.len()];
    for slot in slots {
        let index = match bucketing.start_of(slot.slot) {
            None => Some(0),
            Some(bucket) => starts.binary_search(&bucket).ok(),
        };
        if let Some(index) = index {
            counts[index] += slot.count;
            sums[index] += slot.sum;
        }
    }
    let values = counts
        .iter()
        .zip(&sums)
        .map(|(&count, &sum)| match aggregation {
            MetricAggregation::Average => (count > 0).then(|| sum / count as f64),
            MetricAggregation::Sum => Some(sum),
            MetricAggregation::Count => Some(count as f64),
        })
        .collect();
    Timeseries {
        model,
        time_buckets: starts.iter().copied().map(Timestamp).collect(),
        count: counts,
        values,
        aggregation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_slots_into_buckets_with_each_aggregation() {
        let hour = 3_600_000;
        let bucketing = Bucketing::new(BucketUnit::Hour, None).expect("valid");
        let slots = [
            ScoreSlot {
                slot: 0,
                model_id: None,
                count: 2,
                sum: 1.0,
            },
            ScoreSlot {
                slot: SLOT_MS,
                model_id: None,
                count: 2,
                sum: 2.0,
            },
            ScoreSlot {
                slot: 2 * hour,
                model_id: None,
                count: 1,
                sum: 5.0,
            },
        ];
        let refs: Vec<&ScoreSlot> = slots.iter().collect();
        let starts = [0, hour, 2 * hour];
        let average = fold(&bucketing, &starts, &refs, MetricAggregation::Average, None);
        assert_eq!(average.count, vec![4, 0, 1]);
        assert_eq!(average.values, vec![Some(0.75), None, Some(5.0)]);
        let sum = fold(&bucketing, &starts, &refs, MetricAggregation::Sum, None);
        assert_eq!(sum.values, vec![Some(3.0), Some(0.0), Some(5.0)]);
        let count = fold(&bucketing, &starts, &refs, MetricAggregation::Count, None);
        assert_eq!(count.values, vec![Some(4.0), Some(0.0), Some(1.0)]);

        let all = Bucketing::new(BucketUnit::All, None).expect("valid");
        let total = fold(&all, &[0], &refs, MetricAggregation::Average, None);
        assert_eq!(total.count, vec![5]);
        assert_eq!(total.values, vec![Some(8.0 / 5.0)]);
    }
}
