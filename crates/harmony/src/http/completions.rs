//! `POST /v1/chat/completions` and `POST /v1/completions`: validate, start a [`TextStream`],
//! then either collect it into one response or relay it as SSE chunks ending in
//! `data: [DONE]`. The two endpoints differ only in their wire format ([`WireFormat`]).

use std::collections::VecDeque;
use std::convert::Infallible;

use adaptive_api_types::openai::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, ChatLogprobs, Completion, CompletionChoice,
    CompletionLogprobs, CompletionRequest, FunctionCall, TokenLogprob, ToolCall, ToolCallChunk,
    TopLogprob, Usage,
};
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use super::error::ApiError;
use super::json::AppJson;
use super::AppState;
use crate::generate::{TextEvent, TextStream, TokenLogprobText};
use crate::tool_calls::{parse_tool_calls, ParsedToolCall, ToolCallFilter};
use crate::validate::{validate_chat, validate_completion};

pub async fn chat_completions(
    State(state): State<AppState>,
    AppJson(request): AppJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let in_flight = state.admit()?;
    let model = state.models.get(&request.model)?;
    let valid = validate_chat(model, &request)?;
    let format = ChatFormat::new(&request.model, valid.parse_tool_calls);
    let stream = TextStream::start(valid, state.metrics.clone(), in_flight).await?;
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        return Ok(sse_response(stream, format, include_usage));
    }
    Ok(axum::Json(format.collect(stream).await?).into_response())
}

pub async fn completions(
    State(state): State<AppState>,
    AppJson(request): AppJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let in_flight = state.admit()?;
    let model = state.models.get(&request.model)?;
    let valid = validate_completion(model, &request)?;
    let stream = TextStream::start(valid, state.metrics.clone(), in_flight).await?;
    let format = CompletionFormat::new(&request.model);
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        return Ok(sse_response(stream, format, include_usage));
    }
    Ok(axum::Json(format.collect(stream).await?).into_response())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// How one endpoint writes its chunks and its collected response.
trait WireFormat: Send + 'static {
    type Response: serde::Serialize;
    /// Events sent before any token (chat: the assistant role).
    fn opening(&self, stream: &TextStream) -> Vec<serde_json::Value>;
    /// The chunk for newly generated text; None when there is nothing to send yet.
    fn delta(&mut self, text: String, logprobs: &[TokenLogprobText]) -> Option<serde_json::Value>;
    /// The chunks that end the choice (chat: held-back tool calls, then the finish reason).
    fn finish(&mut self, finish_reason: &str) -> Vec<serde_json::Value>;
    fn usage(&self, usage: Usage) -> serde_json::Value;
    fn response(
        &self,
        text: String,
        logprobs: Vec<TokenLogprobText>,
        finish_reason: &str,
        usage: Usage,
    ) -> Self::Response;

    async fn collect(self, mut stream: TextStream) -> Result<Self::Response, ApiError>
    where
        Self: Sized,
    {
        let mut text = stream.echo_text().unwrap_or_default().to_owned();
        let mut all_logprobs = Vec::new();
        while let Some(event) = stream.next().await {
            match event? {
                TextEvent::Delta {
                    text: delta,
                    logprobs,
                } => {
                    text.push_str(&delta);
                    all_logprobs.extend(logprobs);
                }
                TextEvent::Finished {
                    finish_reason,
                    usage,
                } => {
                    return Ok(self.response(text, all_logprobs, finish_reason.as_str(), usage));
                }
            }
        }
        Err(ApiError::from(crate::error::HarmonyError::Internal(
            "generation ended without a finish".to_owned(),
        )))
    }
}

fn sse_response(stream: TextStream, format: impl WireFormat, include_usage: bool) -> Response {
    Sse::new(sse_events(stream, format, include_usage)).into_response()
}

struct SseState<F> {
    stream: TextStream,
    format: F,
    include_usage: bool,
    pending: VecDeque<Event>,
    finished: bool,
}

fn json_event(value: &serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}

fn sse_events<F: WireFormat>(
    stream: TextStream,
    format: F,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let pending = format.opening(&stream).iter().map(json_event).collect();
    let state = SseState {
        stream,
        format,
        include_usage,
        pending,
        finished: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.finished {
                return None;
            }
            match state.stream.next().await {
                Some(Ok(TextEvent::Delta { text, logprobs })) => {
                    if let Some(chunk) = state.format.delta(text, &logprobs) {
                        state.pending.push_back(json_event(&chunk));
                    }
                }
                Some(Ok(TextEvent::Finished {
                    finish_reason,
                    usage,
                })) => {
                    for chunk in state.format.finish(finish_reason.as_str()) {
                        state.pending.push_back(json_event(&chunk));
                    }
                    if state.include_usage {
                        state
                            .pending
                            .push_back(json_event(&state.format.usage(usage)));
                    }
                    state.pending.push_back(Event::default().data("[DONE]"));
                    state.finished = true;
                }
                Some(Err(error)) => {
                    // Headers are gone already: report in-band, as OpenAI and vLLM do.
                    let body = ApiError::from(error).body();
                    let value = serde_json::to_value(body).unwrap_or_default();
                    state.pending.push_back(json_event(&value));
                    state.pending.push_back(Event::default().data("[DONE]"));
                    state.finished = true;
                }
                None => {
                    state.pending.push_back(Event::default().data("[DONE]"));
                    state.finished = true;
                }
            }
        }
    })
}

// === impl ChatFormat ===

struct ChatFormat {
    id: String,
    model: String,
    created: u64,
    /// Set when tools were offered: holds back what may be a tool call while streaming.
    tool_calls: Option<ToolCallFilter>,
}

impl ChatFormat {
    fn new(model: &str, parse_tool_calls: bool) -> Self {
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            model: model.to_owned(),
            created: unix_now(),
            tool_calls: parse_tool_calls.then(ToolCallFilter::default),
        }
    }

    fn content_chunk(&self, text: String, logprobs: &[TokenLogprobText]) -> serde_json::Value {
        self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    content: Some(text),
                    ..ChatDelta::default()
                },
                finish_reason: None,
                logprobs: chat_logprobs(logprobs),
            }],
            None,
        )
    }

    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> serde_json::Value {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            system_fingerprint: None,
        };
        serde_json::to_value(chunk).unwrap_or_default()
    }
}

fn tool_call_views(calls: Vec<ParsedToolCall>) -> Vec<ToolCall> {
    calls
        .into_iter()
        .map(|call| ToolCall {
            id: format!("call_{}", uuid::Uuid::new_v4().simple()),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: call.name,
                arguments: call.arguments,
            },
        })
        .collect()
}

fn chat_logprobs(logprobs: &[TokenLogprobText]) -> Option<ChatLogprobs> {
    if logprobs.is_empty() {
        return None;
    }
    Some(ChatLogprobs {
        content: Some(
            logprobs
                .iter()
                .map(|entry| TokenLogprob {
                    token: entry.token.clone(),
                    logprob: entry.logprob,
                    bytes: Some(entry.token.as_bytes().to_vec()),
                    top_logprobs: entry
                        .top
                        .iter()
                        .map(|(token, logprob)| TopLogprob {
                            token: token.clone(),
                            logprob: *logprob,
                            bytes: Some(token.as_bytes().to_vec()),
                        })
                        .collect(),
                })
                .collect(),
        ),
    })
}

impl WireFormat for ChatFormat {
    type Response = ChatCompletion;

    fn opening(&self, _stream: &TextStream) -> Vec<serde_json::Value> {
        vec![self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some("assistant".to_owned()),
                    content: Some(String::new()),
                    tool_calls: None,
                },
                finish_reason: None,
                logprobs: None,
            }],
            None,
        )]
    }

    fn delta(&mut self, text: String, logprobs: &[TokenLogprobText]) -> Option<serde_json::Value> {
        let content = match &mut self.tool_calls {
            Some(filter) => filter.push(&text),
            None => text,
        };
        if content.is_empty() && logprobs.is_empty() {
            return None;
        }
        Some(self.content_chunk(content, logprobs))
    }

    fn finish(&mut self, finish_reason: &str) -> Vec<serde_json::Value> {
        let mut chunks = Vec::new();
        let mut finish_reason = finish_reason;
        if let Some(filter) = &self.tool_calls {
            match filter.finish() {
                Some(reply) => {
                    if let Some(content) = reply.content {
                        chunks.push(self.content_chunk(content, &[]));
                    }
                    let calls = tool_call_views(reply.calls)
                        .into_iter()
                        .zip(0u32..)
                        .map(|(call, index)| ToolCallChunk { index, call })
                        .collect();
                    chunks.push(self.chunk(
                        vec![ChatChunkChoice {
                            index: 0,
                            delta: ChatDelta {
                                tool_calls: Some(calls),
                                ..ChatDelta::default()
                            },
                            finish_reason: None,
                            logprobs: None,
                        }],
                        None,
                    ));
                    finish_reason = "tool_calls";
                }
                None if !filter.held_text().is_empty() => {
                    chunks.push(self.content_chunk(filter.held_text().to_owned(), &[]));
                }
                None => {}
            }
        }
        chunks.push(self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta::default(),
                finish_reason: Some(finish_reason.to_owned()),
                logprobs: None,
            }],
            None,
        ));
        chunks
    }

    fn usage(&self, usage: Usage) -> serde_json::Value {
        self.chunk(Vec::new(), Some(usage))
    }

    fn response(
        &self,
        text: String,
        logprobs: Vec<TokenLogprobText>,
        finish_reason: &str,
        usage: Usage,
    ) -> ChatCompletion {
        let tool_call_reply = self
            .tool_calls
            .as_ref()
            .and_then(|_| parse_tool_calls(&text));
        let (content, tool_calls, finish_reason) = match tool_call_reply {
            Some(reply) => (
                reply.content,
                Some(tool_call_views(reply.calls)),
                "tool_calls",
            ),
            None => (Some(text), None, finish_reason),
        };
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".to_owned(),
                    content,
                    tool_calls,
                },
                finish_reason: Some(finish_reason.to_owned()),
                logprobs: chat_logprobs(&logprobs),
            }],
            usage: Some(usage),
            system_fingerprint: None,
        }
    }
}

// === impl CompletionFormat ===

struct CompletionFormat {
    id: String,
    model: String,
    created: u64,
}

impl CompletionFormat {
    fn new(model: &str) -> Self {
        Self {
            id: format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
            model: model.to_owned(),
            created: unix_now(),
        }
    }

    fn completion(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            system_fingerprint: None,
        }
    }

    fn choice(
        text: String,
        logprobs: &[TokenLogprobText],
        finish_reason: Option<&str>,
    ) -> CompletionChoice {
        CompletionChoice {
            index: 0,
            text,
            finish_reason: finish_reason.map(str::to_owned),
            logprobs: completion_logprobs(logprobs),
        }
    }
}

fn completion_logprobs(logprobs: &[TokenLogprobText]) -> Option<CompletionLogprobs> {
    if logprobs.is_empty() {
        return None;
    }
    let mut view = CompletionLogprobs::default();
    let mut offset = 0u32;
    for entry in logprobs {
        view.tokens.push(entry.token.clone());
        view.token_logprobs.push(entry.logprob);
        view.top_logprobs.push(
            entry
                .top
                .iter()
                .map(|(token, logprob)| (token.clone(), *logprob))
                .collect(),
        );
        view.text_offset.push(offset);
        offset += u32::try_from(entry.token.len()).unwrap_or(0);
    }
    Some(view)
}

impl WireFormat for CompletionFormat {
    type Response = Completion;

    fn opening(&self, stream: &TextStream) -> Vec<serde_json::Value> {
        match stream.echo_text() {
            Some(echo) => vec![serde_json::to_value(
                self.completion(vec![Self::choice(echo.to_owned(), &[], None)], None),
            )
            .unwrap_or_default()],
            None => Vec::new(),
        }
    }

    fn delta(&mut self, text: String, logprobs: &[TokenLogprobText]) -> Option<serde_json::Value> {
        serde_json::to_value(self.completion(vec![Self::choice(text, logprobs, None)], None)).ok()
    }

    fn finish(&mut self, finish_reason: &str) -> Vec<serde_json::Value> {
        vec![serde_json::to_value(self.completion(
            vec![Self::choice(String::new(), &[], Some(finish_reason))],
            None,
        ))
        .unwrap_or_default()]
    }

    fn usage(&self, usage: Usage) -> serde_json::Value {
        serde_json::to_value(self.completion(Vec::new(), Some(usage))).unwrap_or_default()
    }

    fn response(
        &self,
        text: String,
        logprobs: Vec<TokenLogprobText>,
        finish_reason: &str,
        usage: Usage,
    ) -> Completion {
        self.completion(
            vec![Self::choice(text, &logprobs, Some(finish_reason))],
            Some(usage),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 10,
            completion_tokens: 20,
            total_tokens: 30,
            prompt_tokens_details: None,
        }
    }

    const CALL_REPLY: [&str; 4] = [
        "Checking.",
        " <tool_",
        "call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
        "</tool_call>",
    ];

    #[test]
    fn chat_reply_with_a_tool_call_has_tool_calls_and_finish_reason_tool_calls() {
        let format = ChatFormat::new("m", true);
        let response =
            serde_json::to_value(format.response(CALL_REPLY.concat(), Vec::new(), "stop", usage()))
                .expect("serializes");
        let choice = &response["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Checking.");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert!(call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")));
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);

        let without_tools = serde_json::to_value(ChatFormat::new("m", false).response(
            CALL_REPLY.concat(),
            Vec::new(),
            "stop",
            usage(),
        ))
        .expect("serializes");
        assert_eq!(without_tools["choices"][0]["finish_reason"], "stop");
        assert!(without_tools["choices"][0]["message"]
            .get("tool_calls")
            .is_none());
    }

    #[test]
    fn streamed_tool_call_comes_as_one_delta_after_the_prose() {
        let mut format = ChatFormat::new("m", true);
        let mut chunks: Vec<serde_json::Value> = CALL_REPLY
            .iter()
            .filter_map(|piece| format.delta((*piece).to_owned(), &[]))
            .collect();
        chunks.extend(format.finish("stop"));
        let content: String = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Checking. ");
        let calls: Vec<&serde_json::Value> = chunks
            .iter()
            .filter(|chunk| chunk["choices"][0]["delta"].get("tool_calls").is_some())
            .collect();
        assert_eq!(calls.len(), 1);
        let call = &calls[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let last = chunks.last().expect("finish chunk");
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");

        let mut prose = ChatFormat::new("m", true);
        let mut prose_chunks: Vec<serde_json::Value> = ["{curly", " prose}"]
            .iter()
            .filter_map(|piece| prose.delta((*piece).to_owned(), &[]))
            .collect();
        assert!(prose_chunks.is_empty(), "held: it opens like JSON");
        prose_chunks.extend(prose.finish("stop"));
        assert_eq!(
            prose_chunks[0]["choices"][0]["delta"]["content"],
            "{curly prose}"
        );
        assert_eq!(prose_chunks[1]["choices"][0]["finish_reason"], "stop");
    }
}
