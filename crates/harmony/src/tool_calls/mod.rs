//! Tool calls in generated text, turned into OpenAI's `tool_calls`.
//!
//! Open models write tool calls as text, in one of two conventions their chat templates teach:
//!
//! - **Hermes / Qwen 2.5+**: any number of `<tool_call>{"name": .., "arguments": {..}}</tool_call>`
//!   blocks, possibly after some prose (which becomes the message's `content`);
//! - **Llama 3.1+ JSON**: the whole reply is one JSON object `{"name": .., "parameters": {..}}`
//!   (`arguments` is accepted too), optionally after `<|python_tag|>`, or a JSON array of them.
//!
//! Parsing happens only when the request lists `tools` and `tool_choice` is not `"none"`.
//! [`ToolCallStreamer`] follows the reply as it is generated: prose streams on as content, and a
//! call in the usual shape (`"name"` first, then an object under `"arguments"`/`"parameters"`)
//! streams as OpenAI does: one delta with the call's id, type and name and empty arguments, then
//! the arguments' text in fragments as the model writes them ([`json_prefix`] tells where the
//! object ends). What it cannot follow (keys in another order, arguments given as a string, an
//! array of calls) is held back and parsed whole at the end by [`parse_tool_calls`]; text that
//! does not parse as calls stays plain content, so a model that answers in prose is unaffected.
//! Non-streaming replies go through the same streamer in one piece, so both give the same calls.
//! This follows vLLM's Hermes and Llama 3 JSON parsers (which diff partial JSON parses).
//!
//! `tool_choice: "required"` or a named function goes further and makes the model write a call:
//! see [`forced`].

pub mod forced;
pub mod json_prefix;

use std::ops::Range;

use serde_json::Value;

use json_prefix::JsonObjectPrefix;

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";

/// One call: the function's name and its arguments as JSON text (OpenAI sends a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToolCall {
    pub name: String,
    pub arguments: String,
}

/// A reply split into its prose and its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallReply {
    /// Text before the calls, trimmed; None when there is none.
    pub content: Option<String>,
    pub calls: Vec<ParsedToolCall>,
}

/// Splits `text` into prose and tool calls; None when it holds no well-formed call.
pub fn parse_tool_calls(text: &str) -> Option<ToolCallReply> {
    parse_hermes(text).or_else(|| parse_llama_json(text))
}

fn parse_hermes(text: &str) -> Option<ToolCallReply> {
    let first = text.find(HERMES_OPEN)?;
    let mut calls = Vec::new();
    let mut rest = &text[first..];
    while let Some(start) = rest.find(HERMES_OPEN) {
        let body_and_after = &rest[start + HERMES_OPEN.len()..];
        // A missing close tag (generation stopped at it, or at max_tokens) ends the body.
        let (body, after) = match body_and_after.find(HERMES_CLOSE) {
            Some(end) => (
                &body_and_after[..end],
                &body_and_after[end + HERMES_CLOSE.len()..],
            ),
            None => (body_and_after, ""),
        };
        calls.push(call_from_json(&serde_json::from_str(body.trim()).ok()?)?);
        rest = after;
    }
    Some(ToolCallReply {
        content: non_blank(&text[..first]),
        calls,
    })
}

fn parse_llama_json(text: &str) -> Option<ToolCallReply> {
    let trimmed = text.trim();
    let json = trimmed.strip_prefix(PYTHON_TAG).unwrap_or(trimmed).trim();
    let calls = match serde_json::from_str::<Value>(json).ok()? {
        Value::Array(items) => items
            .iter()
            .map(call_from_json)
            .collect::<Option<Vec<_>>>()?,
        object => vec![call_from_json(&object)?],
    };
    if calls.is_empty() {
        return None;
    }
    Some(ToolCallReply {
        content: None,
        calls,
    })
}

/// `{"name": .., "arguments" | "parameters": {..}}`; arguments given as a string are kept as is.
fn call_from_json(value: &Value) -> Option<ParsedToolCall> {
    let object = value.as_object()?;
    let name = object.get("name")?.as_str()?.to_owned();
    let arguments = match object.get("arguments").or_else(|| object.get("parameters")) {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    Some(ParsedToolCall { name, arguments })
}

fn non_blank(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// What the streamer hands on, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolCallDelta {
    Content(String),
    /// A new call; its arguments start empty.
    CallStart {
        index: usize,
        name: String,
    },
    /// More of a call's arguments, to be appended.
    Arguments {
        index: usize,
        fragment: String,
    },
}

/// A call as streamed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedCall {
    pub name: String,
    pub arguments: String,
    /// Whether the arguments are complete (an object that closed, or a call parsed whole).
    pub complete: bool,
}

/// Follows a reply as it is generated; see the module docs.
#[derive(Debug, Default)]
pub struct ToolCallStreamer {
    /// The forced opener (if any) and everything generated so far.
    text: String,
    /// How much of `text` was passed on as content (or is the forced opener).
    content_sent: usize,
    calls: Vec<StreamedCall>,
    /// `Some(1)` for `parallel_tool_calls: false`; calls beyond it are dropped.
    max_calls: Option<usize>,
}

impl ToolCallStreamer {
    /// For a reply whose beginning, `forced_prefix`, is part of the prompt (see [`forced`]):
    /// the streamer reads it as the start of the reply but never sends it as content.
    pub fn with_forced_prefix(forced_prefix: &str) -> Self {
        Self {
            text: forced_prefix.to_owned(),
            content_sent: forced_prefix.len(),
            calls: Vec::new(),
            max_calls: None,
        }
    }

    /// For `parallel_tool_calls: false`: only the reply's first call is passed on; the ones a
    /// model writes after it are dropped (as vLLM does), never turned into content.
    pub fn first_call_only(mut self) -> Self {
        self.max_calls = Some(1);
        self
    }

    /// How many more calls may be passed on.
    fn calls_left(&self) -> usize {
        self.max_calls
            .map_or(usize::MAX, |max| max.saturating_sub(self.calls.len()))
    }

    /// Takes the next piece of generated text.
    pub fn push(&mut self, delta: &str) -> Vec<ToolCallDelta> {
        self.text.push_str(delta);
        let scan = scan(&self.text, false);
        self.emit(&scan)
    }

    /// At the end of generation: what was held back, as content or as calls parsed whole.
    pub fn finish(&mut self) -> Vec<ToolCallDelta> {
        let scan = scan(&self.text, true);
        let mut deltas = self.emit(&scan);
        let Some(unfollowable_from) = scan.unfollowable_from else {
            return deltas;
        };
        match parse_tool_calls(&self.text[unfollowable_from..]) {
            Some(reply) => {
                let left = self.calls_left();
                for call in reply.calls.into_iter().take(left) {
                    let index = self.calls.len();
                    deltas.push(ToolCallDelta::CallStart {
                        index,
                        name: call.name.clone(),
                    });
                    deltas.push(ToolCallDelta::Arguments {
                        index,
                        fragment: call.arguments.clone(),
                    });
                    self.calls.push(StreamedCall {
                        name: call.name,
                        arguments: call.arguments,
                        complete: true,
                    });
                }
            }
            // Not a call after all: the held text is prose, unless calls were already sent.
            None if self.calls.is_empty() && self.content_sent < self.text.len() => {
                deltas.push(ToolCallDelta::Content(
                    self.text[self.content_sent..].to_owned(),
                ));
                self.content_sent = self.text.len();
            }
            None => {}
        }
        deltas
    }

    /// The calls sent so far (all of them after [`ToolCallStreamer::finish`]).
    pub fn calls(&self) -> &[StreamedCall] {
        &self.calls
    }

    fn emit(&mut self, scan: &Scan) -> Vec<ToolCallDelta> {
        let mut deltas = Vec::new();
        if scan.content_end > self.content_sent {
            deltas.push(ToolCallDelta::Content(
                self.text[self.content_sent..scan.content_end].to_owned(),
            ));
            self.content_sent = scan.content_end;
        }
        let limit = self.max_calls.unwrap_or(usize::MAX);
        for (index, call) in scan.calls.iter().enumerate().take(limit) {
            if index == self.calls.len() {
                deltas.push(ToolCallDelta::CallStart {
                    index,
                    name: call.name.clone(),
                });
                self.calls.push(StreamedCall {
                    name: call.name.clone(),
                    arguments: String::new(),
                    complete: false,
                });
            }
            let streamed = &mut self.calls[index];
            let arguments = &self.text[call.arguments.clone()];
            // A longer text only ever extends the arguments found in a shorter one.
            if let Some(fragment) = arguments
                .strip_prefix(streamed.arguments.as_str())
                .filter(|fragment| !fragment.is_empty())
            {
                deltas.push(ToolCallDelta::Arguments {
                    index,
                    fragment: fragment.to_owned(),
                });
                streamed.arguments = arguments.to_owned();
            }
            streamed.complete = call.complete;
        }
        deltas
    }
}

// === scanning ===

/// What can be said about a (possibly partial) reply.
#[derive(Debug, Default)]
struct Scan {
    /// `text[..content_end]` is certainly prose.
    content_end: usize,
    /// Calls whose name is known and whose arguments have begun, in order.
    calls: Vec<CallScan>,
    /// Where text the incremental scan cannot follow starts; parsed whole at the end.
    unfollowable_from: Option<usize>,
}

#[derive(Debug)]
struct CallScan {
    name: String,
    /// The arguments' text so far: only characters that keep it a JSON object prefix.
    arguments: Range<usize>,
    complete: bool,
}

/// Why a scan stopped before the shape was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unconfirmed {
    /// The text ends first; more may come.
    NeedMore,
    /// Not the usual shape.
    Mismatch,
}

fn scan(text: &str, at_end: bool) -> Scan {
    let leading = text.trim_start();
    let leading_start = text.len() - leading.len();
    if leading.starts_with(PYTHON_TAG) || leading.starts_with('{') || leading.starts_with('[') {
        let call_start = leading_start
            + if leading.starts_with(PYTHON_TAG) {
                PYTHON_TAG.len()
            } else {
                0
            };
        return scan_json_reply(text, call_start, at_end);
    }
    if !at_end && (leading.is_empty() || PYTHON_TAG.starts_with(leading)) {
        // Nothing but whitespace yet, or what may be `<|python_tag|>`: wait.
        return Scan::default();
    }
    let Some(first_tag) = text.find(HERMES_OPEN) else {
        let content_end = if at_end {
            text.len()
        } else {
            text.len() - partial_suffix_len(text, HERMES_OPEN)
        };
        return Scan {
            content_end,
            ..Scan::default()
        };
    };
    let mut scan = Scan {
        content_end: first_tag,
        ..Scan::default()
    };
    let mut position = first_tag;
    while let Some(tag) = text[position..].find(HERMES_OPEN) {
        let tag_start = position + tag;
        match scan_call_object(text, tag_start + HERMES_OPEN.len()) {
            Ok(call) => {
                let arguments_end = call.arguments.end;
                let complete = call.complete;
                scan.calls.push(call);
                if !complete {
                    break;
                }
                let Some(close) = text[arguments_end..].find(HERMES_CLOSE) else {
                    break;
                };
                position = arguments_end + close + HERMES_CLOSE.len();
            }
            Err(Unconfirmed::NeedMore) if !at_end => break,
            Err(_) => {
                scan.unfollowable_from = Some(tag_start);
                break;
            }
        }
    }
    scan
}

/// A reply that opens like JSON: held (no content) until it is known to be a call or not.
fn scan_json_reply(text: &str, call_start: usize, at_end: bool) -> Scan {
    let mut scan = Scan::default();
    match scan_call_object(text, call_start) {
        Ok(call) => scan.calls.push(call),
        Err(Unconfirmed::NeedMore) if !at_end => {}
        Err(_) => scan.unfollowable_from = Some(call_start),
    }
    scan
}

/// `{"name": "<name>", "arguments"|"parameters": {...` from `start`, with any whitespace between.
fn scan_call_object(text: &str, start: usize) -> Result<CallScan, Unconfirmed> {
    let mut cursor = Cursor {
        text,
        position: start,
    };
    cursor.literal(&["{"])?;
    cursor.literal(&["\"name\""])?;
    cursor.literal(&[":"])?;
    let name = cursor.string()?;
    cursor.literal(&[","])?;
    cursor.literal(&["\"arguments\"", "\"parameters\""])?;
    cursor.literal(&[":"])?;
    cursor.skip_whitespace();
    let arguments_start = cursor.position;
    match text[arguments_start..].chars().next() {
        None => return Err(Unconfirmed::NeedMore),
        Some('{') => {}
        Some(_) => return Err(Unconfirmed::Mismatch),
    }
    let mut arguments = JsonObjectPrefix::new();
    let mut arguments_end = arguments_start;
    for (offset, character) in text[arguments_start..].char_indices() {
        if arguments.push(character).is_err() {
            // Not JSON: the call ends incomplete where its arguments stopped making sense.
            break;
        }
        arguments_end = arguments_start + offset + character.len_utf8();
        if arguments.is_complete() {
            break;
        }
    }
    Ok(CallScan {
        name,
        arguments: arguments_start..arguments_end,
        complete: arguments.is_complete(),
    })
}

struct Cursor<'a> {
    text: &'a str,
    position: usize,
}

impl Cursor<'_> {
    fn skip_whitespace(&mut self) {
        let rest = &self.text[self.position..];
        self.position += rest.len() - rest.trim_start().len();
    }

    /// Skips whitespace, then one of `alternatives`.
    fn literal(&mut self, alternatives: &[&str]) -> Result<(), Unconfirmed> {
        self.skip_whitespace();
        let rest = &self.text[self.position..];
        if let Some(found) = alternatives
            .iter()
            .find(|literal| rest.starts_with(*literal))
        {
            self.position += found.len();
            return Ok(());
        }
        if alternatives.iter().any(|literal| literal.starts_with(rest)) {
            return Err(Unconfirmed::NeedMore);
        }
        Err(Unconfirmed::Mismatch)
    }

    /// Skips whitespace, then a whole JSON string, decoded.
    fn string(&mut self) -> Result<String, Unconfirmed> {
        self.skip_whitespace();
        let rest = &self.text[self.position..];
        match rest.chars().next() {
            None => return Err(Unconfirmed::NeedMore),
            Some('"') => {}
            Some(_) => return Err(Unconfirmed::Mismatch),
        }
        let mut escaped = false;
        for (offset, character) in rest.char_indices().skip(1) {
            match (escaped, character) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    let literal = &rest[..=offset];
                    self.position += literal.len();
                    return serde_json::from_str(literal).map_err(|_| Unconfirmed::Mismatch);
                }
                _ => escaped = false,
            }
        }
        Err(Unconfirmed::NeedMore)
    }
}

/// The length of the longest suffix of `text` that `tag` starts with (a tag still arriving).
fn partial_suffix_len(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&length| {
            text.len() >= length
                && text.is_char_boundary(text.len() - length)
                && tag.starts_with(&text[text.len() - length..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ParsedToolCall {
        ParsedToolCall {
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        }
    }

    #[test]
    fn hermes_calls_with_prose_before_them() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>";
        assert_eq!(
            parse_tool_calls(text),
            Some(ToolCallReply {
                content: Some("Let me check.".to_owned()),
                calls: vec![
                    call("get_weather", r#"{"city":"Paris"}"#),
                    call("now", "{}")
                ],
            })
        );
    }

    #[test]
    fn hermes_call_cut_at_its_closing_tag_still_parses() {
        let text = "<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1}}";
        assert_eq!(
            parse_tool_calls(text).map(|reply| reply.calls),
            Some(vec![call("f", r#"{"x":1}"#)])
        );
    }

    #[test]
    fn llama_json_calls_with_parameters_or_python_tag() {
        let text = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
        assert_eq!(
            parse_tool_calls(text),
            Some(ToolCallReply {
                content: None,
                calls: vec![call("get_weather", r#"{"city":"Paris"}"#)],
            })
        );
        let tagged = "<|python_tag|>[{\"name\": \"a\", \"arguments\": \"{\\\"k\\\": 2}\"}, {\"name\": \"b\"}]";
        assert_eq!(
            parse_tool_calls(tagged).map(|reply| reply.calls),
            Some(vec![call("a", r#"{"k": 2}"#), call("b", "{}")])
        );
    }

    #[test]
    fn prose_and_malformed_calls_are_not_calls() {
        for text in [
            "The weather in Paris is mild.",
            "{not json}",
            "{\"city\": \"Paris\"}",
            "<tool_call>{\"name\": </tool_call>",
            "[]",
        ] {
            assert_eq!(parse_tool_calls(text), None, "{text}");
        }
    }

    /// Streams `pieces` and returns the deltas with adjacent content and argument fragments
    /// of the same call merged (how a client assembles them), plus the final calls.
    fn stream(streamer: &mut ToolCallStreamer, pieces: &[&str]) -> Vec<ToolCallDelta> {
        let mut deltas: Vec<ToolCallDelta> = Vec::new();
        for piece in pieces {
            deltas.extend(streamer.push(piece));
        }
        deltas.extend(streamer.finish());
        deltas
    }

    fn assembled(deltas: &[ToolCallDelta]) -> (String, Vec<(String, String)>) {
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for delta in deltas {
            match delta {
                ToolCallDelta::Content(text) => content.push_str(text),
                ToolCallDelta::CallStart { index, name } => {
                    assert_eq!(*index, calls.len(), "calls start in order");
                    calls.push((name.clone(), String::new()));
                }
                ToolCallDelta::Arguments { index, fragment } => {
                    calls[*index].1.push_str(fragment);
                }
            }
        }
        (content, calls)
    }

    /// Every split of `text` into two pieces, and one piece per character, give the same result
    /// as the whole text in one piece.
    fn assert_split_independent(text: &str) -> (String, Vec<(String, String)>) {
        let whole = assembled(&stream(&mut ToolCallStreamer::default(), &[text]));
        for (split, _) in text.char_indices() {
            let pieces = [&text[..split], &text[split..]];
            assert_eq!(
                assembled(&stream(&mut ToolCallStreamer::default(), &pieces)),
                whole,
                "split at {split} of {text:?}"
            );
        }
        let characters: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = characters.iter().map(String::as_str).collect();
        assert_eq!(
            assembled(&stream(&mut ToolCallStreamer::default(), &pieces)),
            whole
        );
        whole
    }

    fn owned(name: &str, arguments: &str) -> (String, String) {
        (name.to_owned(), arguments.to_owned())
    }

    #[test]
    fn streamed_arguments_arrive_in_fragments_after_a_header_with_the_name() {
        let mut streamer = ToolCallStreamer::default();
        assert_eq!(
            streamer.push("Let me check. <tool"),
            vec![ToolCallDelta::Content("Let me check. ".to_owned())]
        );
        assert_eq!(streamer.push("_call>\n{\"name\": \"get_wea"), vec![]);
        assert_eq!(
            streamer.push("ther\", \"arguments\": {\"ci"),
            vec![
                ToolCallDelta::CallStart {
                    index: 0,
                    name: "get_weather".to_owned()
                },
                ToolCallDelta::Arguments {
                    index: 0,
                    fragment: "{\"ci".to_owned()
                }
            ]
        );
        assert_eq!(
            streamer.push("ty\": \"Paris\"}}\n</tool_call>"),
            vec![ToolCallDelta::Arguments {
                index: 0,
                fragment: "ty\": \"Paris\"}".to_owned()
            }]
        );
        assert_eq!(streamer.finish(), vec![]);
        assert_eq!(
            streamer.calls(),
            &[StreamedCall {
                name: "get_weather".to_owned(),
                arguments: "{\"city\": \"Paris\"}".to_owned(),
                complete: true,
            }]
        );
    }

    #[test]
    fn streaming_gives_the_same_result_however_the_text_is_split() {
        let two_calls = "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>";
        assert_eq!(
            assert_split_independent(two_calls),
            (
                "Checking.\n".to_owned(),
                vec![
                    owned("get_weather", "{\"city\": \"Zürich\", \"days\": [1, 2]}"),
                    owned("now", "{}")
                ]
            )
        );
        let llama = " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
        assert_eq!(
            assert_split_independent(llama),
            (
                String::new(),
                vec![owned("get_weather", "{\"city\": \"Paris\"}")]
            )
        );
        // Keys in another order and arguments as a string: parsed whole at the end.
        let reordered = "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"f\"}</tool_call>";
        assert_eq!(
            assert_split_independent(reordered),
            (String::new(), vec![owned("f", "{\"x\":1}")])
        );
        let array = "<|python_tag|>[{\"name\": \"a\", \"arguments\": \"{\\\"k\\\": 2}\"}, {\"name\": \"b\"}]";
        assert_eq!(
            assert_split_independent(array),
            (
                String::new(),
                vec![owned("a", "{\"k\": 2}"), owned("b", "{}")]
            )
        );
    }

    /// `parallel_tool_calls: false`: the first call, whole, and nothing of the later ones,
    /// whether they stream or are parsed at the end, and however the text arrives.
    #[test]
    fn first_call_only_drops_the_later_calls() {
        let two_calls = "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>";
        let reordered_second = "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>{\"arguments\": {}, \"name\": \"b\"}</tool_call>";
        let array = "[{\"name\": \"a\", \"arguments\": {\"k\": 2}}, {\"name\": \"b\"}]";
        for (text, expected) in [
            (
                two_calls,
                (
                    "Checking.\n".to_owned(),
                    vec![owned("get_weather", "{\"city\": \"Paris\"}")],
                ),
            ),
            (reordered_second, (String::new(), vec![owned("a", "{}")])),
            (array, (String::new(), vec![owned("a", "{\"k\":2}")])),
        ] {
            let whole = stream(&mut ToolCallStreamer::default().first_call_only(), &[text]);
            assert_eq!(assembled(&whole), expected, "{text:?}");
            let characters: Vec<String> = text.chars().map(String::from).collect();
            let pieces: Vec<&str> = characters.iter().map(String::as_str).collect();
            let mut streamer = ToolCallStreamer::default().first_call_only();
            assert_eq!(
                assembled(&stream(&mut streamer, &pieces)),
                expected,
                "{text:?}"
            );
            assert_eq!(streamer.calls().len(), 1);
        }
        // Without the limit, the same texts give both calls.
        assert_eq!(
            assembled(&stream(&mut ToolCallStreamer::default(), &[two_calls]))
                .1
                .len(),
            2
        );
    }

    #[test]
    fn prose_lookalikes_are_released_as_content() {
        for text in [
            "The weather in Paris is mild.",
            "a < b and <tag> <",
            "{curly prose}",
            "   ",
            "<tool_call>{\"name\": </tool_call>",
        ] {
            assert_eq!(
                assert_split_independent(text),
                (text.to_owned(), vec![]),
                "{text:?}"
            );
        }
        let mut streamer = ToolCallStreamer::default();
        assert_eq!(streamer.push(" {\"name\": \"f\","), vec![]);
        assert_eq!(streamer.push(" no"), vec![]);
        assert_eq!(
            streamer.finish(),
            vec![ToolCallDelta::Content(" {\"name\": \"f\", no".to_owned())]
        );
    }

    #[test]
    fn a_call_cut_short_keeps_its_arguments_so_far_and_is_incomplete() {
        let mut streamer = ToolCallStreamer::default();
        let deltas = stream(
            &mut streamer,
            &["<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": [1, 2"],
        );
        assert_eq!(
            assembled(&deltas),
            (String::new(), vec![owned("f", "{\"x\": [1, 2")])
        );
        assert!(!streamer.calls()[0].complete);
        // Text that breaks the JSON ends the arguments where they stopped being JSON.
        let mut broken = ToolCallStreamer::default();
        stream(
            &mut broken,
            &["<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": oops}}</tool_call>"],
        );
        assert_eq!(broken.calls()[0].arguments, "{\"x\": ");
        assert!(!broken.calls()[0].complete);
    }

    #[test]
    fn a_forced_prefix_is_read_but_never_sent_as_content() {
        let mut streamer = ToolCallStreamer::with_forced_prefix("<tool_call>\n{\"name\": \"get_");
        let deltas = stream(&mut streamer, &["time\", \"arguments\":", " {}"]);
        assert_eq!(
            assembled(&deltas),
            (String::new(), vec![owned("get_time", "{}")])
        );
        assert!(streamer.calls()[0].complete);

        let mut llama = ToolCallStreamer::with_forced_prefix("{\"name\": \"f\", \"parameters\":");
        let deltas = stream(&mut llama, &[" {\"a\"", ": 1}"]);
        assert_eq!(
            assembled(&deltas),
            (String::new(), vec![owned("f", "{\"a\": 1}")])
        );
    }
}
