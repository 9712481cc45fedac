//! `POST /v1/chat/completions` and `POST /v1/completions`: validate, start a [`TextStream`],
//! then either collect it into one response or relay it as SSE chunks ending in
//! `data: [DONE]`. The two endpoints differ only in their wire format ([`WireFormat`]).

use std::collections::VecDeque;
use std::convert::Infallible;

use adaptive_api_types::openai::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, ChatLogprobs, Completion, CompletionChoice,
    CompletionLogprobs, CompletionRequest, FunctionCall, FunctionCallChunk, TokenLogprob, ToolCall,
    ToolCallChunk, TopLogprob, Usage,
};
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use super::error::ApiError;
use super::json::AppJson;
use super::AppState;
use crate::error::{HarmonyError, ToolCallIncomplete};
use crate::generate::{TextEvent, TextStream, TokenLogprobText};
use crate::tool_calls::{ToolCallDelta, ToolCallStreamer};
use crate::validate::{validate_chat, validate_completion, ToolCallMode};

pub async fn chat_completions(
    State(state): State<AppState>,
    AppJson(request): AppJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let in_flight = state.admit()?;
    let model = state.models.get(&request.model)?;
    let valid = validate_chat(model, &request)?;
    let format = ChatFormat::new(
        &request.model,
        &valid.tool_calls,
        request.parallel_tool_calls.unwrap_or(true),
    );
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
    /// The chunks for newly generated text; none when there is nothing to send yet.
    fn delta(&mut self, text: String, logprobs: &[TokenLogprobText]) -> Vec<serde_json::Value>;
    /// The chunks that end the choice (chat: held-back text and tool calls, then the finish
    /// reason); an error when the reply breaks a promise of the request (a required tool call).
    fn finish(&mut self, finish_reason: &str) -> Result<Vec<serde_json::Value>, HarmonyError>;
    fn usage(&self, usage: Usage) -> serde_json::Value;
    fn response(
        &mut self,
        text: String,
        logprobs: Vec<TokenLogprobText>,
        finish_reason: &str,
        usage: Usage,
    ) -> Result<Self::Response, HarmonyError>;

    async fn collect(mut self, mut stream: TextStream) -> Result<Self::Response, ApiError>
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
                    return Ok(self.response(text, all_logprobs, finish_reason.as_str(), usage)?);
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
                    for chunk in state.format.delta(text, &logprobs) {
                        state.pending.push_back(json_event(&chunk));
                    }
                }
                Some(Ok(TextEvent::Finished {
                    finish_reason,
                    usage,
                })) => {
                    match state.format.finish(finish_reason.as_str()) {
                        Ok(chunks) => {
                            for chunk in chunks {
                                state.pending.push_back(json_event(&chunk));
                            }
                        }
                        Err(error) => {
                            let body = ApiError::from(error).body();
                            let value = serde_json::to_value(body).unwrap_or_default();
                            state.pending.push_back(json_event(&value));
                            state.pending.push_back(Event::default().data("[DONE]"));
                            state.finished = true;
                            continue;
                        }
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
    /// Set when tools were offered.
    tool_calls: Option<ChatToolCalls>,
}

/// Tool calls in one chat reply.
struct ChatToolCalls {
    streamer: ToolCallStreamer,
    /// For `tool_choice` "required" or a named function: the functions the call must name.
    required_from: Option<Vec<String>>,
    /// The `id` of each call sent, by index.
    call_ids: Vec<String>,
}

impl ChatToolCalls {
    /// `parallel`: the request's `parallel_tool_calls` (default true).
    fn new(mode: &ToolCallMode, parallel: bool) -> Option<Self> {
        let (streamer, required_from) = match mode {
            ToolCallMode::Off => return None,
            ToolCallMode::Parse => (ToolCallStreamer::default(), None),
            ToolCallMode::Forced(forced) => (
                ToolCallStreamer::with_forced_prefix(&forced.prefix_text),
                Some(forced.function_names.clone()),
            ),
        };
        Some(Self {
            streamer: if parallel {
                streamer
            } else {
                streamer.first_call_only()
            },
            required_from,
            call_ids: Vec::new(),
        })
    }

    fn delta_view(&mut self, delta: ToolCallDelta) -> ChatDelta {
        let chunk = match delta {
            ToolCallDelta::Content(text) => {
                return ChatDelta {
                    content: Some(text),
                    ..ChatDelta::default()
                }
            }
            ToolCallDelta::CallStart { index, name } => {
                let id = new_call_id();
                self.call_ids.push(id.clone());
                ToolCallChunk {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    id: Some(id),
                    kind: Some("function".to_owned()),
                    function: FunctionCallChunk {
                        name: Some(name),
                        arguments: Some(String::new()),
                    },
                }
            }
            ToolCallDelta::Arguments { index, fragment } => ToolCallChunk {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                id: None,
                kind: None,
                function: FunctionCallChunk {
                    name: None,
                    arguments: Some(fragment),
                },
            },
        };
        ChatDelta {
            tool_calls: Some(vec![chunk]),
            ..ChatDelta::default()
        }
    }

    /// A required call must be there, complete, to a listed function, with object arguments.
    fn check_required(&self, generation_finish_reason: &str) -> Result<(), HarmonyError> {
        let Some(function_names) = &self.required_from else {
            return Ok(());
        };
        let well_formed = self.streamer.calls().first().is_some_and(|call| {
            call.complete
                && function_names.contains(&call.name)
                && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                    &call.arguments,
                )
                .is_ok()
        });
        if well_formed {
            return Ok(());
        }
        Err(HarmonyError::ToolCallIncomplete(
            if generation_finish_reason == "length" {
                ToolCallIncomplete::MaxTokens
            } else {
                ToolCallIncomplete::Stopped
            },
        ))
    }

    /// `tool_calls` when the reply holds calls, unless the last one was cut by max_tokens.
    fn finish_reason<'a>(&self, generation_finish_reason: &'a str) -> &'a str {
        match self.streamer.calls().last() {
            None => generation_finish_reason,
            Some(call) if !call.complete && generation_finish_reason == "length" => "length",
            Some(_) => "tool_calls",
        }
    }

    fn views(&self) -> Vec<ToolCall> {
        self.streamer
            .calls()
            .iter()
            .zip(&self.call_ids)
            .map(|(call, id)| ToolCall {
                id: id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                },
            })
            .collect()
    }
}

fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

impl ChatFormat {
    fn new(model: &str, tool_calls: &ToolCallMode, parallel_tool_calls: bool) -> Self {
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            model: model.to_owned(),
            created: unix_now(),
            tool_calls: ChatToolCalls::new(tool_calls, parallel_tool_calls),
        }
    }

    fn delta_chunk(&self, delta: ChatDelta, logprobs: &[TokenLogprobText]) -> serde_json::Value {
        self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta,
                finish_reason: None,
                logprobs: chat_logprobs(logprobs),
            }],
            None,
        )
    }

    /// The chunks for what the tool-call streamer passed on; `logprobs` go with the first.
    fn tool_call_chunks(
        &mut self,
        deltas: Vec<ToolCallDelta>,
        logprobs: &[TokenLogprobText],
    ) -> Vec<serde_json::Value> {
        let Some(tool_calls) = self.tool_calls.as_mut() else {
            return Vec::new();
        };
        let views: Vec<ChatDelta> = deltas
            .into_iter()
            .map(|delta| tool_calls.delta_view(delta))
            .collect();
        if views.is_empty() && !logprobs.is_empty() {
            let empty = ChatDelta {
                content: Some(String::new()),
                ..ChatDelta::default()
            };
            return vec![self.delta_chunk(empty, logprobs)];
        }
        views
            .into_iter()
            .enumerate()
            .map(|(position, view)| {
                let logprobs = if position == 0 { logprobs } else { &[] };
                self.delta_chunk(view, logprobs)
            })
            .collect()
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

    fn delta(&mut self, text: String, logprobs: &[TokenLogprobText]) -> Vec<serde_json::Value> {
        if let Some(tool_calls) = self.tool_calls.as_mut() {
            let deltas = tool_calls.streamer.push(&text);
            return self.tool_call_chunks(deltas, logprobs);
        }
        if text.is_empty() && logprobs.is_empty() {
            return Vec::new();
        }
        let content = ChatDelta {
            content: Some(text),
            ..ChatDelta::default()
        };
        vec![self.delta_chunk(content, logprobs)]
    }

    fn finish(&mut self, finish_reason: &str) -> Result<Vec<serde_json::Value>, HarmonyError> {
        let mut chunks = Vec::new();
        let mut reply_finish_reason = finish_reason;
        if let Some(tool_calls) = self.tool_calls.as_mut() {
            let deltas = tool_calls.streamer.finish();
            tool_calls.check_required(finish_reason)?;
            reply_finish_reason = tool_calls.finish_reason(finish_reason);
            chunks = self.tool_call_chunks(deltas, &[]);
        }
        chunks.push(self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta::default(),
                finish_reason: Some(reply_finish_reason.to_owned()),
                logprobs: None,
            }],
            None,
        ));
        Ok(chunks)
    }

    fn usage(&self, usage: Usage) -> serde_json::Value {
        self.chunk(Vec::new(), Some(usage))
    }

    fn response(
        &mut self,
        text: String,
        logprobs: Vec<TokenLogprobText>,
        finish_reason: &str,
        usage: Usage,
    ) -> Result<ChatCompletion, HarmonyError> {
        let (content, tool_calls, reply_finish_reason) = match self.tool_calls.as_mut() {
            None => (Some(text), None, finish_reason),
            Some(tool_calls) => {
                // The same streamer as for SSE, fed the whole reply: the same calls either way.
                let mut deltas = tool_calls.streamer.push(&text);
                deltas.extend(tool_calls.streamer.finish());
                for delta in &deltas {
                    if let ToolCallDelta::CallStart { .. } = delta {
                        tool_calls.call_ids.push(new_call_id());
                    }
                }
                tool_calls.check_required(finish_reason)?;
                let content: String = deltas
                    .into_iter()
                    .filter_map(|delta| match delta {
                        ToolCallDelta::Content(text) => Some(text),
                        _ => None,
                    })
                    .collect();
                let calls = tool_calls.views();
                if calls.is_empty() {
                    (Some(content), None, finish_reason)
                } else {
                    let trimmed = content.trim();
                    let content = (!trimmed.is_empty()).then(|| trimmed.to_owned());
                    (
                        content,
                        Some(calls),
                        tool_calls.finish_reason(finish_reason),
                    )
                }
            }
        };
        Ok(ChatCompletion {
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
                finish_reason: Some(reply_finish_reason.to_owned()),
                logprobs: chat_logprobs(&logprobs),
            }],
            usage: Some(usage),
            system_fingerprint: None,
        })
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

    fn delta(&mut self, text: String, logprobs: &[TokenLogprobText]) -> Vec<serde_json::Value> {
        serde_json::to_value(self.completion(vec![Self::choice(text, logprobs, None)], None))
            .into_iter()
            .collect()
    }

    fn finish(&mut self, finish_reason: &str) -> Result<Vec<serde_json::Value>, HarmonyError> {
        Ok(vec![serde_json::to_value(self.completion(
            vec![Self::choice(String::new(), &[], Some(finish_reason))],
            None,
        ))
        .unwrap_or_default()])
    }

    fn usage(&self, usage: Usage) -> serde_json::Value {
        serde_json::to_value(self.completion(Vec::new(), Some(usage))).unwrap_or_default()
    }

    fn response(
        &mut self,
        text: String,
        logprobs: Vec<TokenLogprobText>,
        finish_reason: &str,
        usage: Usage,
    ) -> Result<Completion, HarmonyError> {
        Ok(self.completion(
            vec![Self::choice(text, &logprobs, Some(finish_reason))],
            Some(usage),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::fake_model::ByteTokenizer;
    use crate::tool_calls::forced::{
        ArgumentSchema, ForcedFunction, ForcedToolCall, TokenTexts, ToolCallFormat,
    };

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 10,
            completion_tokens: 20,
            total_tokens: 30,
            prompt_tokens_details: None,
        }
    }

    const CALL_REPLY: [&str; 5] = [
        "Checking.",
        " <tool_",
        "call>{\"name\": \"get_weather\", \"arguments\": {\"city\"",
        ": \"Paris\"}}",
        "</tool_call>",
    ];

    fn forced(names: &[&str]) -> ToolCallMode {
        let functions: Vec<ForcedFunction> = names
            .iter()
            .map(|name| ForcedFunction {
                name: (*name).to_owned(),
                arguments: ArgumentSchema::any(),
            })
            .collect();
        let vocabulary = Arc::new(TokenTexts::build(&ByteTokenizer).expect("decodes"));
        ToolCallMode::Forced(
            ForcedToolCall::prepare(
                ToolCallFormat::Hermes,
                &functions,
                &ByteTokenizer,
                vocabulary,
            )
            .expect("prepared"),
        )
    }

    fn streamed(format: &mut ChatFormat, pieces: &[&str], finish_reason: &str) -> Vec<Value> {
        let mut chunks: Vec<Value> = pieces
            .iter()
            .flat_map(|piece| format.delta((*piece).to_owned(), &[]))
            .collect();
        chunks.extend(format.finish(finish_reason).expect("finishes"));
        chunks
    }

    /// Assembles streamed tool calls the way OpenAI's docs show: by index, the first chunk's
    /// id and name, then the arguments appended.
    fn assembled_calls(chunks: &[Value]) -> Vec<Value> {
        let mut calls: Vec<Value> = Vec::new();
        for chunk in chunks {
            for call in chunk["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let index = call["index"].as_u64().expect("index") as usize;
                if index == calls.len() {
                    calls.push(call.clone());
                } else {
                    let fragment = call["function"]["arguments"].as_str().expect("fragment");
                    let arguments = calls[index]["function"]["arguments"]
                        .as_str()
                        .expect("arguments")
                        .to_owned();
                    calls[index]["function"]["arguments"] = Value::from(arguments + fragment);
                }
            }
        }
        calls
    }

    #[test]
    fn chat_reply_with_a_tool_call_has_tool_calls_and_finish_reason_tool_calls() {
        let mut format = ChatFormat::new("m", &ToolCallMode::Parse, true);
        let response = serde_json::to_value(
            format
                .response(CALL_REPLY.concat(), Vec::new(), "stop", usage())
                .expect("a reply"),
        )
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
        assert_eq!(call["function"]["arguments"], r#"{"city": "Paris"}"#);

        let without_tools = serde_json::to_value(
            ChatFormat::new("m", &ToolCallMode::Off, true)
                .response(CALL_REPLY.concat(), Vec::new(), "stop", usage())
                .expect("a reply"),
        )
        .expect("serializes");
        assert_eq!(without_tools["choices"][0]["finish_reason"], "stop");
        assert!(without_tools["choices"][0]["message"]
            .get("tool_calls")
            .is_none());
    }

    #[test]
    fn parallel_tool_calls_false_keeps_the_first_call_streamed_or_not() {
        let two_calls = [
            CALL_REPLY.concat().as_str(),
            "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>",
        ]
        .concat();
        let names = |calls: &[Value]| -> Vec<String> {
            calls
                .iter()
                .map(|call| call["function"]["name"].as_str().expect("name").to_owned())
                .collect()
        };
        for (parallel, expected) in [
            (true, vec!["get_weather", "get_time"]),
            (false, vec!["get_weather"]),
        ] {
            let response = serde_json::to_value(
                ChatFormat::new("m", &ToolCallMode::Parse, parallel)
                    .response(two_calls.clone(), Vec::new(), "stop", usage())
                    .expect("a reply"),
            )
            .expect("serializes");
            let calls = response["choices"][0]["message"]["tool_calls"]
                .as_array()
                .expect("tool calls")
                .clone();
            assert_eq!(names(&calls), expected, "parallel={parallel}");
            assert_eq!(response["choices"][0]["finish_reason"], "tool_calls");

            let mut format = ChatFormat::new("m", &ToolCallMode::Parse, parallel);
            let pieces: Vec<String> = two_calls.chars().map(String::from).collect();
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let chunks = streamed(&mut format, &pieces, "stop");
            assert_eq!(
                names(&assembled_calls(&chunks)),
                expected,
                "parallel={parallel}"
            );
            let content: String = chunks
                .iter()
                .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(content, "Checking. ", "parallel={parallel}");
        }
    }

    #[test]
    fn streamed_tool_call_sends_a_header_then_argument_fragments() {
        let mut format = ChatFormat::new("m", &ToolCallMode::Parse, true);
        let chunks = streamed(&mut format, &CALL_REPLY, "stop");
        let content: String = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Checking. ");
        let call_chunks: Vec<&Value> = chunks
            .iter()
            .map(|chunk| &chunk["choices"][0]["delta"]["tool_calls"][0])
            .filter(|call| !call.is_null())
            .collect();
        assert_eq!(call_chunks.len(), 3, "{call_chunks:?}");
        let header = call_chunks[0];
        assert_eq!(header["index"], 0);
        assert_eq!(header["type"], "function");
        assert!(header["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")));
        assert_eq!(header["function"]["name"], "get_weather");
        assert_eq!(header["function"]["arguments"], "");
        for fragment in &call_chunks[1..] {
            assert_eq!(fragment["index"], 0);
            assert!(fragment.get("id").is_none() && fragment["function"].get("name").is_none());
        }
        let calls = assembled_calls(&chunks);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["function"]["arguments"], r#"{"city": "Paris"}"#);
        let last = chunks.last().expect("finish chunk");
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");

        let mut prose = ChatFormat::new("m", &ToolCallMode::Parse, true);
        let prose_chunks = streamed(&mut prose, &["{curly", " prose}"], "stop");
        assert_eq!(prose_chunks.len(), 2, "held: it opens like JSON");
        assert_eq!(
            prose_chunks[0]["choices"][0]["delta"]["content"],
            "{curly prose}"
        );
        assert_eq!(prose_chunks[1]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn a_forced_call_streams_and_collects_the_same_call() {
        let reply = [" {\"city\":", " \"Paris\"", "}"];
        let mut streaming = ChatFormat::new("m", &forced(&["get_weather"]), true);
        let chunks = streamed(&mut streaming, &reply, "stop");
        let streamed_calls = assembled_calls(&chunks);
        assert_eq!(
            chunks.last().expect("finish")["choices"][0]["finish_reason"],
            "tool_calls"
        );
        let collected = ChatFormat::new("m", &forced(&["get_weather"]), true)
            .response(reply.concat(), Vec::new(), "stop", usage())
            .expect("a call");
        let collected_calls =
            serde_json::to_value(&collected.choices[0].message.tool_calls).expect("serializes");
        assert_eq!(streamed_calls.len(), 1);
        for (streamed, collected) in streamed_calls
            .iter()
            .zip(collected_calls.as_array().expect("calls"))
        {
            assert_eq!(streamed["function"], collected["function"]);
        }
        assert_eq!(
            collected_calls[0]["function"],
            serde_json::json!({"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"})
        );
        assert_eq!(collected.choices[0].message.content, None);
    }

    #[test]
    fn a_forced_call_cut_by_max_tokens_is_a_clear_400_not_prose() {
        let cut = [" {\"city\": \"Par"];
        let error = ChatFormat::new("m", &forced(&["get_weather", "get_time"]), true)
            .response(
                format!("weather\", \"arguments\":{}", cut[0]),
                Vec::new(),
                "length",
                usage(),
            )
            .expect_err("incomplete");
        assert_eq!(
            error.error_code(),
            adaptive_api_types::ErrorCode::InvalidRequest
        );
        assert_eq!(error.param(), Some("max_tokens"));
        assert!(error.to_string().contains("raise max_tokens"), "{error}");

        let mut streaming = ChatFormat::new("m", &forced(&["get_weather"]), true);
        assert!(!streaming.delta(cut[0].to_owned(), &[]).is_empty());
        let error = streaming.finish("length").expect_err("incomplete");
        assert_eq!(error.param(), Some("max_tokens"));
    }

    #[test]
    fn an_auto_call_cut_by_max_tokens_keeps_finish_reason_length() {
        let cut = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa";
        let collected = ChatFormat::new("m", &ToolCallMode::Parse, true)
            .response(cut.to_owned(), Vec::new(), "length", usage())
            .expect("not required: no error");
        let choice = &collected.choices[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("length"));
        let calls = choice.message.tool_calls.as_ref().expect("the call so far");
        assert_eq!(calls[0].function.arguments, "{\"city\": \"Pa");

        let mut streaming = ChatFormat::new("m", &ToolCallMode::Parse, true);
        let chunks = streamed(&mut streaming, &[cut], "length");
        assert_eq!(
            chunks.last().expect("finish")["choices"][0]["finish_reason"],
            "length"
        );
        assert_eq!(
            assembled_calls(&chunks)[0]["function"]["arguments"],
            "{\"city\": \"Pa"
        );
    }
}
