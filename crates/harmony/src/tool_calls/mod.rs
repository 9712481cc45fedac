//! Tool calls in generated text, turned into OpenAI's `tool_calls`.
//!
//! Open models write tool calls as text, in one of two conventions their chat templates teach:
//!
//! - **Hermes / Qwen 2.5+**: any number of `<tool_call>{"name": .., "arguments": {..}}</tool_call>`
//!   blocks, possibly after some prose (which becomes the message's `content`);
//! - **Llama 3.1+ JSON**: the whole reply is one JSON object `{"name": .., "parameters": {..}}`
//!   (`arguments` is accepted too), optionally after `<|python_tag|>`, or a JSON array of them.
//!
//! Parsing happens only when the request lists `tools` and `tool_choice` is not `"none"`. Text
//! that does not parse as calls stays plain content, so a model that answers in prose is
//! unaffected. When streaming, [`ToolCallFilter`] passes prose through as it comes and holds back
//! only what may be a call (from a `<tool_call>` tag, or a reply that opens with `{` or `[`), which
//! is sent as one `tool_calls` delta at the end. This is the approach of vLLM's Hermes and Llama 3
//! JSON parsers, without their incremental argument streaming.

use serde_json::Value;

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

/// Streaming: passes prose through and holds back what may be a tool call until the end.
#[derive(Debug, Default)]
pub struct ToolCallFilter {
    /// Everything generated so far.
    text: String,
    /// How much of `text` was passed on as content.
    released: usize,
}

impl ToolCallFilter {
    /// Takes the next piece of generated text; returns the part that is certainly prose.
    pub fn push(&mut self, delta: &str) -> String {
        self.text.push_str(delta);
        let safe_end = self.safe_end();
        if safe_end <= self.released {
            return String::new();
        }
        let released = self.text[self.released..safe_end].to_owned();
        self.released = safe_end;
        released
    }

    /// At the end of generation: the calls, with any held-back prose, or None when the held text
    /// was prose after all (then [`ToolCallFilter::held_text`] is still to be sent).
    pub fn finish(&self) -> Option<ToolCallReply> {
        let reply = parse_tool_calls(&self.text)?;
        // Prose already sent is not repeated.
        let unsent_prose = self
            .text
            .find(HERMES_OPEN)
            .and_then(|tag| non_blank(&self.text[self.released.min(tag)..tag]));
        Some(ToolCallReply {
            content: unsent_prose,
            calls: reply.calls,
        })
    }

    pub fn held_text(&self) -> &str {
        &self.text[self.released..]
    }

    /// The end of the prefix of `text` that cannot be part of a call.
    fn safe_end(&self) -> usize {
        let leading = self.text.trim_start();
        if leading.is_empty()
            || [PYTHON_TAG, "{", "["]
                .iter()
                .any(|start| leading.starts_with(start) || start.starts_with(leading))
        {
            // Nothing but whitespace yet, or the reply opens like a JSON call: hold it all.
            return self.released;
        }
        if let Some(tag) = self.text.find(HERMES_OPEN) {
            return tag;
        }
        // Hold back a suffix that may be the start of `<tool_call>`.
        let mut end = self.text.len();
        for length in (1..HERMES_OPEN.len()).rev() {
            if self.text.len() >= length
                && self.text.is_char_boundary(self.text.len() - length)
                && HERMES_OPEN.starts_with(&self.text[self.text.len() - length..])
            {
                end = self.text.len() - length;
                break;
            }
        }
        end
    }
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

    #[test]
    fn filter_streams_prose_and_holds_back_calls() {
        let mut filter = ToolCallFilter::default();
        let mut sent = String::new();
        for piece in [
            "Let me ",
            "check.",
            " <tool",
            "_call>{\"name\": \"f\", ",
            "\"arguments\": {}}</tool_call>",
        ] {
            sent.push_str(&filter.push(piece));
        }
        assert_eq!(sent, "Let me check. ");
        assert_eq!(
            filter.finish(),
            Some(ToolCallReply {
                content: None,
                calls: vec![call("f", "{}")],
            })
        );
    }

    #[test]
    fn filter_holds_a_json_reply_and_releases_prose_lookalikes() {
        let mut filter = ToolCallFilter::default();
        assert_eq!(filter.push(" {\"name\": \"f\","), "");
        assert_eq!(filter.push(" \"parameters\": {\"x\": 1}}"), "");
        assert_eq!(
            filter.finish().map(|reply| reply.calls),
            Some(vec![call("f", r#"{"x":1}"#)])
        );

        let mut prose = ToolCallFilter::default();
        assert_eq!(prose.push("a <"), "a ");
        assert_eq!(prose.push(" b and <tag>"), "< b and <tag>");
        assert_eq!(prose.push(" <"), " ");
        assert_eq!(prose.finish(), None);
        assert_eq!(prose.held_text(), "<");
    }
}
