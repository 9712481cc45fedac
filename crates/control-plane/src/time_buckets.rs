//! Calendar buckets for time series (usage, score aggregates): hour, day, ISO week (Monday),
//! month, quarter, year, or one bucket for everything, in any IANA timezone.
//!
//! The store aggregates events into [`SLOT_MS`] slots (15 minutes, in UTC); every timezone
//! offset in use is a multiple of 15 minutes, so a slot never straddles a local bucket
//! boundary and folding slots into local buckets is exact.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// The store's aggregation slot: 15 minutes in milliseconds.
pub const SLOT_MS: i64 = 15 * 60 * 1000;

/// Most buckets one series may have: a year of hours and then some. A wider request is refused
/// (the caller asks for a coarser unit or a shorter range) instead of building a huge answer.
pub const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketUnit {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
    /// One bucket for the whole range.
    All,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BucketError {
    #[error("unknown timezone '{0}': use an IANA name such as 'Europe/Paris' or 'UTC'")]
    UnknownTimezone(String),
    #[error("the time range ends before it starts")]
    EmptyRange,
    #[error("the time range holds more than {MAX_BUCKETS} buckets: choose a coarser unit")]
    TooManyBuckets,
}

/// A bucketing: a unit in a timezone.
#[derive(Debug, Clone, Copy)]
pub struct Bucketing {
    pub unit: BucketUnit,
    pub timezone: Tz,
}

impl Bucketing {
    /// `timezone`: an IANA name; None is UTC.
    pub fn new(unit: BucketUnit, timezone: Option<&str>) -> Result<Bucketing, BucketError> {
        let timezone = match timezone.map(str::trim).filter(|name| !name.is_empty()) {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| BucketError::UnknownTimezone(name.to_owned()))?,
        };
        Ok(Bucketing { unit, timezone })
    }

    /// The start (ms since the epoch) of the bucket holding `ms`; None for [`BucketUnit::All`].
    pub fn start_of(&self, ms: i64) -> Option<i64> {
        let local = self.local(ms);
        let date = local.date_naive();
        let start: NaiveDateTime = match self.unit {
            BucketUnit::All => return None,
            BucketUnit::Hour => date.and_hms_opt(local.hour(), 0, 0)?,
            BucketUnit::Day => date.and_hms_opt(0, 0, 0)?,
            BucketUnit::Week => {
                let monday =
                    date - Duration::days(i64::from(local.weekday().num_days_from_monday()));
                monday.and_hms_opt(0, 0, 0)?
            }
            BucketUnit::Month => first_of(date.year(), date.month())?,
            BucketUnit::Quarter => first_of(date.year(), (date.month() - 1) / 3 * 3 + 1)?,
            BucketUnit::Year => first_of(date.year(), 1)?,
        };
        Some(self.utc_ms_of(start, ms))
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(&self, start: i64) -> Option<i64> {
        let local = self.local(start).naive_local();
        let date = local.date();
        let next: NaiveDateTime = match self.unit {
            BucketUnit::All => return None,
            // Hours step in absolute time: a local hour repeated or skipped at a DST change
            // is still one hour of events.
            BucketUnit::Hour => return Some(start + 3_600_000),
            BucketUnit::Day => (date + Duration::days(1)).and_hms_opt(0, 0, 0)?,
            BucketUnit::Week => (date + Duration::days(7)).and_hms_opt(0, 0, 0)?,
            BucketUnit::Month => add_months(date, 1)?,
            BucketUnit::Quarter => add_months(date, 3)?,
            BucketUnit::Year => add_months(date, 12)?,
        };
        Some(self.utc_ms_of(next, start))
    }

    /// Every bucket start from the one holding `from` to the one holding `to - 1` (`to` is
    /// exclusive). One `None` for [`BucketUnit::All`].
    pub fn buckets(&self, from: i64, to: i64) -> Result<Vec<Option<i64>>, BucketError> {
        if to < from {
            return Err(BucketError::EmptyRange);
        }
        let Some(mut start) = self.start_of(from) else {
            return Ok(vec![None]);
        };
        let mut starts = Vec::new();
        while start < to.max(from + 1) {
            if starts.len() == MAX_BUCKETS {
                return Err(BucketError::TooManyBuckets);
            }
            starts.push(Some(start));
            match self.next(start) {
                Some(next) if next > start => start = next,
                _ => break,
            }
        }
        Ok(starts)
    }

    fn local(&self, ms: i64) -> DateTime<Tz> {
        self.timezone
            .timestamp_millis_opt(ms)
            .single()
            .unwrap_or_else(|| DateTime::<Utc>::UNIX_EPOCH.with_timezone(&self.timezone))
    }

    /// A local wall-clock time as ms since the epoch. A time a DST change skips takes the
    /// instant the clocks jumped to; a repeated one its first occurrence. `fallback` is used
    /// only for times outside chrono's range.
    fn utc_ms_of(&self, local: NaiveDateTime, fallback: i64) -> i64 {
        let resolved = self.timezone.from_local_datetime(&local);
        if let Some(earliest) = resolved.earliest() {
            return earliest.timestamp_millis();
        }
        // In a gap: walk forward in 15-minute steps (offsets are multiples of 15 minutes).
        let mut probe = local;
        for _ in 0..16 {
            probe += Duration::minutes(15);
            if let Some(earliest) = self.timezone.from_local_datetime(&probe).earliest() {
                return earliest.timestamp_millis();
            }
        }
        fallback
    }
}

fn first_of(year: i32, month: u32) -> Option<NaiveDateTime> {
    NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)
}

fn add_months(date: NaiveDate, months: u32) -> Option<NaiveDateTime> {
    let index = date.year() * 12 + date.month0() as i32 + months as i32;
    first_of(index.div_euclid(12), index.rem_euclid(12) as u32 + 1)
}

/// The slot (see [`SLOT_MS`]) holding `ms`.
pub fn slot_of(ms: i64) -> i64 {
    ms.div_euclid(SLOT_MS) * SLOT_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("valid")
            .timestamp_millis()
    }

    fn bucketing(unit: BucketUnit, timezone: &str) -> Bucketing {
        Bucketing::new(unit, Some(timezone)).expect("valid")
    }

    #[test]
    fn buckets_start_at_local_calendar_boundaries() {
        let at = utc("2026-11-27T01:30:00Z"); // a Friday; 02:30 in Paris, 20:30 the day before in New York
        let day = bucketing(BucketUnit::Day, "UTC");
        assert_eq!(day.start_of(at), Some(utc("2026-11-27T00:00:00Z")));
        let paris = bucketing(BucketUnit::Day, "Europe/Paris");
        assert_eq!(paris.start_of(at), Some(utc("2026-11-26T23:00:00Z")));
        let new_york = bucketing(BucketUnit::Day, "America/New_York");
        assert_eq!(new_york.start_of(at), Some(utc("2026-11-26T05:00:00Z")));
        let week = bucketing(BucketUnit::Week, "UTC");
        assert_eq!(week.start_of(at), Some(utc("2026-11-23T00:00:00Z")));
        let month = bucketing(BucketUnit::Month, "UTC");
        assert_eq!(month.start_of(at), Some(utc("2026-11-01T00:00:00Z")));
        let quarter = bucketing(BucketUnit::Quarter, "UTC");
        assert_eq!(quarter.start_of(at), Some(utc("2026-10-01T00:00:00Z")));
        let year = bucketing(BucketUnit::Year, "Asia/Kolkata");
        assert_eq!(year.start_of(at), Some(utc("2025-12-31T18:30:00Z")));
        let hour = bucketing(BucketUnit::Hour, "Asia/Kolkata");
        assert_eq!(hour.start_of(at), Some(utc("2026-11-27T01:30:00Z")));
        assert_eq!(bucketing(BucketUnit::All, "UTC").start_of(at), None);
    }

    #[test]
    fn days_follow_daylight_saving_changes() {
        // Paris leaves summer time on 2026-10-25: that day lasts 25 hours.
        let paris = bucketing(BucketUnit::Day, "Europe/Paris");
        let start = utc("2026-10-24T22:00:00Z");
        assert_eq!(paris.next(start), Some(utc("2026-10-25T23:00:00Z")));
        let starts = paris
            .buckets(utc("2026-10-24T22:00:00Z"), utc("2026-10-27T00:00:00Z"))
            .expect("valid");
        assert_eq!(
            starts,
            vec![
                Some(utc("2026-10-24T22:00:00Z")),
                Some(utc("2026-10-25T23:00:00Z")),
                Some(utc("2026-10-26T23:00:00Z")),
            ]
        );
    }

    #[test]
    fn month_steps_cross_years_and_quarters() {
        let month = bucketing(BucketUnit::Month, "UTC");
        let starts = month
            .buckets(utc("2026-11-15T00:00:00Z"), utc("2027-02-01T00:00:00Z"))
            .expect("valid");
        assert_eq!(
            starts,
            vec![
                Some(utc("2026-11-01T00:00:00Z")),
                Some(utc("2026-12-01T00:00:00Z")),
                Some(utc("2027-01-01T00:00:00Z")),
            ]
        );
        let quarter = bucketing(BucketUnit::Quarter, "UTC");
        assert_eq!(
            quarter.next(utc("2026-10-01T00:00:00Z")),
            Some(utc("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn slots_never_straddle_a_local_bucket() {
        // Every offset is a multiple of 15 minutes, so all of a slot lands in one bucket.
        for timezone in ["Asia/Kolkata", "Asia/Kathmandu", "Australia/Eucla", "UTC"] {
            let hours = bucketing(BucketUnit::Hour, timezone);
            let mut slot = slot_of(utc("2026-11-27T00:00:00Z"));
            for _ in 0..200 {
                assert_eq!(hours.start_of(slot), hours.start_of(slot + SLOT_MS - 1));
                slot += SLOT_MS;
            }
        }
        assert_eq!(slot_of(-1), -SLOT_MS);
    }

    #[test]
    fn bad_timezones_and_ranges_are_refused() {
        assert_eq!(
            Bucketing::new(BucketUnit::Day, Some("Mars/Olympus")).expect_err("refused"),
            BucketError::UnknownTimezone("Mars/Olympus".into())
        );
        let day = bucketing(BucketUnit::Day, "UTC");
        assert_eq!(
            day.buckets(10, 5).expect_err("refused"),
            BucketError::EmptyRange
        );
        let hour = bucketing(BucketUnit::Hour, "UTC");
        assert_eq!(
            hour.buckets(0, 3_600_000 * (MAX_BUCKETS as i64 + 1))
                .expect_err("refused"),
            BucketError::TooManyBuckets
        );
        assert_eq!(
            bucketing(BucketUnit::All, "UTC")
                .buckets(0, 10)
                .expect("valid"),
            vec![None]
        );
    }
}
