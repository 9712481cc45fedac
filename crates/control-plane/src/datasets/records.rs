//! Checking a dataset file as it streams by: JSONL, one record per line, in the shape the
//! SDK documents (reference §3.4):
//!
//! ```json
//! {"messages": [{"role": "user", "content": "2+2?"}], "completion": "4"}
//! ```
//!
//! - `messages` (required): a non-empty list of `{role, content}` with `role` one of `system`,
//!   `user`, `assistant`, `tool` and `content` a string or a list of content parts.
//! - `completion` (optional): a string, or a `{role, content}` message.
//! - Scores (optional): `metrics`, `scores` or `feedbacks`, an object of metric key -> number or
//!   boolean; they need a `completion`.
//! - Preferences (optional): `preferred_completion` and `other_completion` (or the recipe
//!   format's `good_completion` and `bad_completion`), each a string or a message, and
//!   optionally the `metric` (a metric key) they compare on, as `POST /api/v1/comparison`
//!   takes it.
//! - Anything else (`metadata`, `labels`, ...) is kept as is and not checked. Blank lines are
//!   skipped.
//!
//! Each record has a kind (PROMPT, PROMPT_COMPLETION, PROMPT_COMPLETION_SCORE, PREFERENCE); the
//! dataset's kind is the one every record shares: all records of one kind give that kind, a mix
//! of completions with and without scores gives PROMPT_COMPLETION, and any other mix PROMPT
//! (every record has a prompt).
//!
//! While it checks, the scanner counts per metric key how many records carry a score for it
//! and how many a comparison on it (`Dataset.metricsUsage`). Only keys that can name a metric
//! (the rule of [`crate::store`] keys) are counted, and at most [`MAX_METRIC_KEYS`] of them.
//!
//! The scanner keeps one line in memory at a time, so a file of any size is checked in constant
//! memory, bounded by [`MAX_LINE_BYTES`] (and the metric keys). The first bad line stops the
//! scan with an error that names the line.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::store::DatasetMetricCount;

/// The longest record accepted.
pub const MAX_LINE_BYTES: usize = 32 << 20;

/// The most distinct metric keys a file may name: the tally is held in memory while the file
/// streams by, and stored with the dataset.
pub const MAX_METRIC_KEYS: usize = 1000;

const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// What a dataset holds, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Prompt,
    PromptCompletion,
    PromptCompletionScore,
    Preference,
}

impl DatasetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Prompt => "PROMPT",
            DatasetKind::PromptCompletion => "PROMPT_COMPLETION",
            DatasetKind::PromptCompletionScore => "PROMPT_COMPLETION_SCORE",
            DatasetKind::Preference => "PREFERENCE",
        }
    }

    pub fn parse(name: &str) -> Option<DatasetKind> {
        match name {
            "PROMPT" => Some(DatasetKind::Prompt),
            "PROMPT_COMPLETION" => Some(DatasetKind::PromptCompletion),
            "PROMPT_COMPLETION_SCORE" => Some(DatasetKind::PromptCompletionScore),
            "PREFERENCE" => Some(DatasetKind::Preference),
            _ => None,
        }
    }

    /// The kind a dataset holding records of `self` and `other` has.
    fn common_with(self, other: DatasetKind) -> DatasetKind {
        use DatasetKind::*;
        match (self, other) {
            (a, b) if a == b => a,
            (
                PromptCompletion | PromptCompletionScore,
                PromptCompletion | PromptCompletionScore,
            ) => PromptCompletion,
            _ => Prompt,
        }
    }
}

/// The first problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecords {
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("the file holds no records (expected JSONL: one JSON object per line)")]
    Empty,
}

/// A file that passed the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile {
    pub kind: DatasetKind,
    pub records: i64,
    pub size_bytes: i64,
    pub sha256: String,
    /// Per metric key, by key.
    pub metrics_usage: Vec<DatasetMetricCount>,
}

/// How many records score a metric, and how many compare on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MetricCounts {
    scores: i64,
    comparisons: i64,
}

/// Feed the file's bytes in any chunking, then [`RecordScanner::finish`].
pub struct RecordScanner {
    pending_line: Vec<u8>,
    line_number: u64,
    records: i64,
    kind: Option<DatasetKind>,
    size_bytes: i64,
    hasher: Sha256,
    metrics: BTreeMap<String, MetricCounts>,
}

impl Default for RecordScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordScanner {
    pub fn new() -> Self {
        Self {
            pending_line: Vec::new(),
            line_number: 0,
            records: 0,
            kind: None,
            size_bytes: 0,
            hasher: Sha256::new(),
            metrics: BTreeMap::new(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), InvalidRecords> {
        self.hasher.update(chunk);
        self.size_bytes = self
            .size_bytes
            .saturating_add(i64::try_from(chunk.len()).unwrap_or(i64::MAX));
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|byte| *byte == b'\n') {
            let (line_end, after) = rest.split_at(newline);
            if self.pending_line.is_empty() {
                self.check_line(line_end)?;
            } else {
                self.extend_pending(line_end)?;
                let line = std::mem::take(&mut self.pending_line);
                self.check_line(&line)?;
            }
            rest = &after[1..];
        }
        self.extend_pending(rest)
    }

    pub fn finish(mut self) -> Result<ScannedFile, InvalidRecords> {
        if !self.pending_line.is_empty() {
            let line = std::mem::take(&mut self.pending_line);
            self.check_line(&line)?;
        }
        let Some(kind) = self.kind else {
            return Err(InvalidRecords::Empty);
        };
        let metrics_usage = self
            .metrics
            .into_iter()
            .map(|(metric, counts)| DatasetMetricCount {
                metric,
                score_count: counts.scores,
                comparison_count: counts.comparisons,
            })
            .collect();
        Ok(ScannedFile {
            kind,
            records: self.records,
            size_bytes: self.size_bytes,
            sha256: hex::encode(self.hasher.finalize()),
            metrics_usage,
        })
    }

    fn extend_pending(&mut self, bytes: &[u8]) -> Result<(), InvalidRecords> {
        if self.pending_line.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(InvalidRecords::Line {
                line: self.line_number + 1,
                reason: format!("longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        self.pending_line.extend_from_slice(bytes);
        Ok(())
    }

    fn check_line(&mut self, line: &[u8]) -> Result<(), InvalidRecords> {
        self.line_number += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let line_number = self.line_number;
        let invalid = |reason: String| InvalidRecords::Line {
            line: line_number,
            reason,
        };
        let value: Value = serde_json::from_slice(line)
            .map_err(|error| invalid(format!("not valid JSON ({error})")))?;
        let Value::Object(record) = value else {
            return Err(invalid("not a JSON object".to_owned()));
        };
        let checked = check_record(&record).map_err(invalid)?;
        for metric in checked.scored_metrics {
            self.count_metric(metric, |counts| counts.scores += 1)
                .map_err(invalid)?;
        }
        if let Some(metric) = checked.compared_metric {
            self.count_metric(metric, |counts| counts.comparisons += 1)
                .map_err(invalid)?;
        }
        self.records += 1;
        self.kind = Some(match self.kind {
            None => checked.kind,
            Some(kind) => kind.common_with(checked.kind),
        });
        Ok(())
    }

    fn count_metric(
        &mut self,
        metric: &str,
        count: impl FnOnce(&mut MetricCounts),
    ) -> Result<(), String> {
        // A key no metric can have is not worth tracking: it would never resolve.
        if crate::store::validate_key("metric", metric).is_err() {
            return Ok(());
        }
        if let Some(counts) = self.metrics.get_mut(metric) {
            count(counts);
            return Ok(());
        }
        if self.metrics.len() >= MAX_METRIC_KEYS {
            return Err(format!(
                "the file names more than {MAX_METRIC_KEYS} metric keys"
            ));
        }
        count(self.metrics.entry(metric.to_owned()).or_default());
        Ok(())
    }
}

/// What one record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRecord<'a> {
    pub kind: DatasetKind,
    /// The metric keys the record scores its completion on.
    pub scored_metrics: Vec<&'a str>,
    /// The metric key a preference compares on, when it names one.
    pub compared_metric: Option<&'a str>,
}

/// Checks one record and says what it holds.
pub fn check_record(record: &Map<String, Value>) -> Result<CheckedRecord<'_>, String> {
    let messages = match record.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => return Err("'messages' is empty".to_owned()),
        Some(_) => return Err("'messages' must be a list of {role, content}".to_owned()),
        None => return Err("missing 'messages' (a list of {role, content})".to_owned()),
    };
    for (index, message) in messages.iter().enumerate() {
        check_message(message).map_err(|reason| format!("messages[{index}]: {reason}"))?;
    }
    let preference = [
        ("preferred_completion", "other_completion"),
        ("good_completion", "bad_completion"),
    ]
    .into_iter()
    .find(|(first, second)| record.contains_key(*first) || record.contains_key(*second));
    if let Some((first, second)) = preference {
        for field in [first, second] {
            let completion = record
                .get(field)
                .ok_or_else(|| format!("a preference needs both '{first}' and '{second}'"))?;
            check_completion(completion).map_err(|reason| format!("'{field}': {reason}"))?;
        }
        let compared_metric = match record.get("metric") {
            None | Some(Value::Null) => None,
            Some(Value::String(metric)) if !metric.is_empty() => Some(metric.as_str()),
            Some(_) => {
                return Err(
                    "'metric' must be the key of the metric the preference is about".to_owned(),
                )
            }
        };
        return Ok(CheckedRecord {
            kind: DatasetKind::Preference,
            scored_metrics: Vec::new(),
            compared_metric,
        });
    }
    let unscored = |kind| CheckedRecord {
        kind,
        scored_metrics: Vec::new(),
        compared_metric: None,
    };
    let scores = ["metrics", "scores", "feedbacks"]
        .into_iter()
        .find_map(|field| record.get(field).map(|scores| (field, scores)));
    let Some(completion) = record.get("completion").filter(|value| !value.is_null()) else {
        if let Some((field, _)) = scores {
            return Err(format!("'{field}' score a completion: add 'completion'"));
        }
        return Ok(unscored(DatasetKind::Prompt));
    };
    check_completion(completion).map_err(|reason| format!("'completion': {reason}"))?;
    let Some((field, scores)) = scores else {
        return Ok(unscored(DatasetKind::PromptCompletion));
    };
    let Value::Object(scores) = scores else {
        return Err(format!(
            "'{field}' must be an object of metric key -> value"
        ));
    };
    for (metric, value) in scores {
        if !(value.is_number() || value.is_boolean()) {
            return Err(format!("'{field}.{metric}' must be a number or a boolean"));
        }
    }
    if scores.is_empty() {
        return Ok(unscored(DatasetKind::PromptCompletion));
    }
    Ok(CheckedRecord {
        kind: DatasetKind::PromptCompletionScore,
        scored_metrics: scores.keys().map(String::as_str).collect(),
        compared_metric: None,
    })
}

fn check_message(message: &Value) -> Result<(), String> {
    let Value::Object(message) = message else {
        return Err("must be an object {role, content}".to_owned());
    };
    match message.get("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => {}
        Some(Value::String(role)) => {
            return Err(format!("unknown role '{role}' (use {})", ROLES.join(", ")))
        }
        _ => return Err("missing 'role'".to_owned()),
    }
    match message.get("content") {
        Some(Value::String(_) | Value::Array(_)) => Ok(()),
        Some(_) => Err("'content' must be a string or a list of content parts".to_owned()),
        None => Err("missing 'content'".to_owned()),
    }
}

fn check_completion(completion: &Value) -> Result<(), String> {
    match completion {
        Value::String(_) => Ok(()),
        Value::Object(_) => check_message(completion),
        _ => Err("must be a string or a {role, content} message".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Result<ScannedFile, InvalidRecords> {
        let mut scanner = RecordScanner::new();
        for chunk in chunks {
            scanner.feed(chunk)?;
        }
        scanner.finish()
    }

    const PROMPT: &str = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
    const COMPLETION: &str =
        r#"{"messages": [{"role": "user", "content": "hi"}], "completion": "hello"}"#;
    const SCORED: &str = r#"{"messages": [{"role": "user", "content": "hi"}], "completion": {"role": "assistant", "content": "hello"}, "metrics": {"quality": 0.5, "ok": true}}"#;
    const PREFERENCE: &str = r#"{"messages": [{"role": "user", "content": "hi"}], "preferred_completion": "hello", "other_completion": "go away"}"#;

    #[test]
    fn kinds_of_records_and_of_mixes() {
        let kind = |lines: &[&str]| scan(&[lines.join("\n").as_bytes()]).map(|file| file.kind);
        assert_eq!(kind(&[PROMPT]), Ok(DatasetKind::Prompt));
        assert_eq!(kind(&[COMPLETION]), Ok(DatasetKind::PromptCompletion));
        assert_eq!(kind(&[SCORED]), Ok(DatasetKind::PromptCompletionScore));
        assert_eq!(kind(&[PREFERENCE]), Ok(DatasetKind::Preference));
        assert_eq!(
            kind(&[COMPLETION, SCORED]),
            Ok(DatasetKind::PromptCompletion)
        );
        assert_eq!(kind(&[PREFERENCE, COMPLETION]), Ok(DatasetKind::Prompt));
    }

    #[test]
    fn records_are_counted_per_metric_key() {
        let compared = r#"{"messages": [{"role": "user", "content": "hi"}], "preferred_completion": "hello", "other_completion": "go away", "metric": "quality"}"#;
        let unusable_key = r#"{"messages": [{"role": "user", "content": "hi"}], "completion": "x", "scores": {"not a key!": 1}}"#;
        let file = [
            SCORED,
            SCORED,
            compared,
            PREFERENCE,
            COMPLETION,
            unusable_key,
        ]
        .join("\n");
        let scanned = scan(&[file.as_bytes()]).expect("valid");
        let count = |metric: &str, score_count, comparison_count| DatasetMetricCount {
            metric: metric.to_owned(),
            score_count,
            comparison_count,
        };
        assert_eq!(
            scanned.metrics_usage,
            [count("ok", 2, 0), count("quality", 2, 1)]
        );
        assert_eq!(
            scan(&[COMPLETION.as_bytes()]).expect("valid").metrics_usage,
            []
        );
        let bad_metric = r#"{"messages": [{"role": "user", "content": "hi"}], "preferred_completion": "a", "other_completion": "b", "metric": 3}"#;
        let error = scan(&[bad_metric.as_bytes()])
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("'metric'"), "{error}");
    }

    #[test]
    fn too_many_metric_keys_are_refused() {
        let mut file = String::new();
        for index in 0..=MAX_METRIC_KEYS {
            file.push_str(&format!(
                r#"{{"messages": [{{"role": "user", "content": "hi"}}], "completion": "x", "metrics": {{"m{index}": 1}}}}"#
            ));
            file.push('\n');
        }
        let error = scan(&[file.as_bytes()])
            .expect_err("too many keys")
            .to_string();
        assert!(error.contains("metric keys"), "{error}");
    }

    #[test]
    fn lines_split_across_chunks_count_once_and_blank_lines_are_skipped() {
        let file = format!("{COMPLETION}\r\n\n{COMPLETION}\n{COMPLETION}");
        let bytes = file.as_bytes();
        for split in [
            1,
            7,
            COMPLETION.len(),
            COMPLETION.len() + 1,
            bytes.len() - 1,
        ] {
            let scanned = scan(&[&bytes[..split], &bytes[split..]]).expect("valid");
            assert_eq!(scanned.records, 3, "split at {split}");
            assert_eq!(scanned.size_bytes, bytes.len() as i64);
            assert_eq!(
                scanned.sha256,
                hex::encode(Sha256::digest(bytes)),
                "split at {split}"
            );
        }
    }

    #[test]
    fn the_first_bad_line_is_named() {
        let file = format!("{PROMPT}\n{PROMPT}\nnot json\n{PROMPT}\n");
        let error = scan(&[file.as_bytes()]).expect_err("invalid");
        assert!(
            matches!(&error, InvalidRecords::Line { line: 3, reason } if reason.starts_with("not valid JSON")),
            "{error}"
        );
        for (record, expected) in [
            ("[1, 2]", "not a JSON object"),
            (r#"{"completion": "x"}"#, "missing 'messages'"),
            (r#"{"messages": []}"#, "'messages' is empty"),
            (
                r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
                "unknown role",
            ),
            (r#"{"messages": [{"role": "user"}]}"#, "missing 'content'"),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "completion": 3}"#,
                "'completion'",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "metrics": {"m": 1}}"#,
                "add 'completion'",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "completion": "y", "metrics": {"m": "good"}}"#,
                "'metrics.m'",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "preferred_completion": "y"}"#,
                "needs both",
            ),
        ] {
            let error = scan(&[record.as_bytes()]).expect_err(record).to_string();
            assert!(error.starts_with("line 1: "), "{record}: {error}");
            assert!(error.contains(expected), "{record}: {error}");
        }
        assert_eq!(scan(&[b"\n \n"]), Err(InvalidRecords::Empty));
        assert_eq!(scan(&[]), Err(InvalidRecords::Empty));
    }

    #[test]
    fn an_endless_line_is_refused_without_holding_it() {
        let mut scanner = RecordScanner::new();
        let chunk = vec![b'x'; 1 << 20];
        let mut refused = None;
        for _ in 0..=(MAX_LINE_BYTES >> 20) {
            if let Err(error) = scanner.feed(&chunk) {
                refused = Some(error);
                break;
            }
        }
        assert!(
            matches!(refused, Some(InvalidRecords::Line { line: 1, .. })),
            "{refused:?}"
        );
    }
}
