//! The "recipe" download format (`?format=recipe`): the internal sample format recipes read
//! (reference §3.4), one line per record of the uploaded file:
//!
//! ```json
//! {"prompt": [["user", "2+2?"]], "completion": ["assistant", "4"], "metrics": {"ok": 1.0}, "metadata": {}}
//! ```
//!
//! Preferences become `good_completion` / `bad_completion`. Fields outside the record shape
//! (`metadata`, `labels`) go to `metadata`.

use axum::body::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde_json::{json, Map, Value};

use super::DatasetError;

/// The stored file's chunks -> the recipe format's lines (a record split across chunks is
/// converted once whole; one record in memory at a time).
pub fn convert_stream(
    chunks: BoxStream<'static, Result<Bytes, DatasetError>>,
) -> BoxStream<'static, Result<Bytes, DatasetError>> {
    let state = (chunks, Vec::new(), false);
    futures::stream::unfold(state, |(mut chunks, mut pending, finished)| async move {
        if finished {
            return None;
        }
        let next = chunks.next().await;
        let (complete_lines, finished) = match next {
            Some(Err(error)) => return Some((Err(error), (chunks, Vec::new(), true))),
            Some(Ok(chunk)) => {
                pending.extend_from_slice(&chunk);
                let Some(last_newline) = pending.iter().rposition(|byte| *byte == b'\n') else {
                    return Some((Ok(Bytes::new()), (chunks, pending, false)));
                };
                let rest = pending.split_off(last_newline + 1);
                (std::mem::replace(&mut pending, rest), false)
            }
            None => (std::mem::take(&mut pending), true),
        };
        let converted = convert_lines(&complete_lines);
        Some((converted, (chunks, pending, finished)))
    })
    .filter(|item| futures::future::ready(!matches!(item, Ok(bytes) if bytes.is_empty())))
    .boxed()
}

fn convert_lines(lines: &[u8]) -> Result<Bytes, DatasetError> {
    let mut output = Vec::with_capacity(lines.len());
    for line in lines.split(|byte| *byte == b'\n') {
        let Some(converted) = convert_line(line) else {
            continue;
        };
        let converted = converted.map_err(|source| DatasetError::Objects {
            action: "convert the dataset to the recipe format",
            source: Box::new(source),
        })?;
        output.extend_from_slice(&converted);
        output.push(b'\n');
    }
    Ok(Bytes::from(output))
}

/// Converts one line of a file that passed [`super::records`]; blank lines give `None`.
pub fn convert_line(line: &[u8]) -> Option<Result<Vec<u8>, serde_json::Error>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let converted = serde_json::from_slice::<Map<String, Value>>(line)
        .map(|record| convert_record(&record))
        .and_then(|sample| serde_json::to_vec(&sample));
    Some(converted)
}

fn convert_record(record: &Map<String, Value>) -> Value {
    let prompt: Vec<Value> = record
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| messages.iter().map(as_turn).collect())
        .unwrap_or_default();
    let mut sample = Map::new();
    sample.insert("prompt".to_owned(), Value::Array(prompt));
    let preference = [
        ("preferred_completion", "other_completion"),
        ("good_completion", "bad_completion"),
    ]
    .into_iter()
    .find(|(good, _)| record.contains_key(*good));
    if let Some((good, bad)) = preference {
        for (from, to) in [(good, "good_completion"), (bad, "bad_completion")] {
            if let Some(completion) = record.get(from) {
                sample.insert(to.to_owned(), as_turn(completion));
            }
        }
    } else if let Some(completion) = record.get("completion").filter(|value| !value.is_null()) {
        sample.insert("completion".to_owned(), as_turn(completion));
        let scores = ["metrics", "scores", "feedbacks"]
            .into_iter()
            .find_map(|field| record.get(field).and_then(Value::as_object));
        if let Some(scores) = scores {
            let metrics: Map<String, Value> = scores
                .iter()
                .map(|(metric, value)| (metric.clone(), as_score(value)))
                .collect();
            sample.insert("metrics".to_owned(), Value::Object(metrics));
        }
    }
    let mut metadata = record
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(labels) = record.get("labels") {
        metadata.insert("labels".to_owned(), labels.clone());
    }
    sample.insert("metadata".to_owned(), Value::Object(metadata));
    Value::Object(sample)
}

/// `{role, content}` (or a bare completion string) -> `[role, content]`.
fn as_turn(message: &Value) -> Value {
    match message {
        Value::String(text) => json!(["assistant", text]),
        Value::Object(message) => json!([
            message.get("role").cloned().unwrap_or(Value::Null),
            message.get("content").cloned().unwrap_or(Value::Null)
        ]),
        other => other.clone(),
    }
}

fn as_score(value: &Value) -> Value {
    match value {
        Value::Bool(flag) => json!(if *flag { 1.0 } else { 0.0 }),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converted(line: &str) -> Value {
        let bytes = convert_line(line.as_bytes())
            .expect("a record")
            .expect("json");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn records_become_samples() {
        assert_eq!(
            converted(
                r#"{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}], "completion": "4", "metrics": {"ok": true}, "labels": {"src": "t"}}"#
            ),
            json!({"prompt": [["system", "be brief"], ["user", "2+2?"]], "completion": ["assistant", "4"], "metrics": {"ok": 1.0}, "metadata": {"labels": {"src": "t"}}})
        );
        assert_eq!(
            converted(
                r#"{"messages": [{"role": "user", "content": "hi"}], "preferred_completion": "hello", "other_completion": {"role": "assistant", "content": "go"}}"#
            ),
            json!({"prompt": [["user", "hi"]], "good_completion": ["assistant", "hello"], "bad_completion": ["assistant", "go"], "metadata": {}})
        );
        assert!(convert_line(b"  \r").is_none());
    }

    #[tokio::test]
    async fn a_stream_is_converted_line_by_line_whatever_its_chunks() {
        let file = concat!(
            r#"{"messages": [{"role": "user", "content": "a"}], "completion": "b"}"#,
            "\n\n",
            r#"{"messages": [{"role": "user", "content": "c"}]}"#
        );
        for split in [1, 10, 70, file.len() - 1] {
            let chunks: Vec<Result<Bytes, DatasetError>> = vec![
                Ok(Bytes::copy_from_slice(&file.as_bytes()[..split])),
                Ok(Bytes::copy_from_slice(&file.as_bytes()[split..])),
            ];
            let converted: Vec<Bytes> = convert_stream(futures::stream::iter(chunks).boxed())
                .map(|chunk| chunk.expect("converted"))
                .collect()
                .await;
            let text = String::from_utf8(converted.concat()).expect("utf-8");
            let lines: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).expect("json"))
                .collect();
            assert_eq!(
                lines,
                vec![
                    json!({"prompt": [["user", "a"]], "completion": ["assistant", "b"], "metadata": {}}),
                    json!({"prompt": [["user", "c"]], "metadata": {}}),
                ],
                "split at {split}"
            );
        }
    }
}
