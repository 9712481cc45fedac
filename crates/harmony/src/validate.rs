//! OpenAI requests → [`ValidGenerateRequest`]: parameter ranges, prompt rendering and
//! tokenization, and the context-length check. Everything a client can get wrong is caught here
//! and becomes a 400 in OpenAI's error shape.

use std::sync::Arc;

use adaptive_api_types::openai::{
    ChatCompletionRequest, CompletionRequest, MessageContent, PromptInput, SamplingOptions,
    StopSequences,
};
use adaptive_engine::SamplingParams;

use crate::error::HarmonyError;
use crate::models::ServedModel;
use crate::tool_calls::forced::{ArgumentSchema, ForcedFunction, ForcedToolCall};

/// OpenAI's limits.
const MAX_STOP_SEQUENCES: usize = 4;
const MAX_TOP_LOGPROBS: u32 = 20;
const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

/// A request that passed validation, in token space.
#[derive(Debug, Clone)]
pub struct ValidGenerateRequest {
    pub model: Arc<ServedModel>,
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
    pub stop_strings: Vec<String>,
    /// The prompt text, for completions with `echo`.
    pub echo_text: Option<String>,
    /// What to do about tool calls in the reply.
    pub tool_calls: ToolCallMode,
}

/// How a request's `tools` and `tool_choice` shape the reply.
#[derive(Debug, Clone)]
pub enum ToolCallMode {
    /// No tools offered, or `tool_choice: "none"`: the reply is plain content.
    Off,
    /// `tool_choice: "auto"` (the default): calls the model writes are parsed out of the reply.
    Parse,
    /// `"required"` or a named function: the reply is made to be a call to one of these tools;
    /// the forced opener's tokens are already at the end of `prompt_tokens`.
    Forced(ForcedToolCall),
}

/// A valid `tool_choice` other than `"none"`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ToolChoice {
    Auto,
    Required,
    Function(String),
}

pub fn validate_chat(
    model: Arc<ServedModel>,
    request: &ChatCompletionRequest,
) -> Result<ValidGenerateRequest, HarmonyError> {
    check_n(request.n)?;
    if request.messages.is_empty() {
        return Err(HarmonyError::invalid(
            "messages",
            "messages must not be empty",
        ));
    }
    for message in &request.messages {
        if let Some(MessageContent::Parts(parts)) = &message.content {
            if let Some(part) = parts.iter().find(|part| part.kind != "text") {
                return Err(HarmonyError::invalid(
                    "messages",
                    format!(
                        "content parts of type '{}' are not supported by this model",
                        part.kind
                    ),
                ));
            }
        }
    }
    let top_logprobs = match (request.logprobs, request.top_logprobs) {
        (_, Some(top)) if top > MAX_TOP_LOGPROBS => {
            return Err(HarmonyError::invalid(
                "top_logprobs",
                format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
            ))
        }
        (Some(true), top) => Some(top.unwrap_or(0) as usize),
        (_, Some(_)) => {
            return Err(HarmonyError::invalid(
                "top_logprobs",
                "top_logprobs requires logprobs to be true",
            ))
        }
        _ => None,
    };
    let offered = offered_tools(request)?;
    let prompt_text = model.chat_template.render(
        &request.messages,
        offered.as_ref().map(|(tools, _)| tools),
        true,
    )?;
    let mut prompt_tokens = model
        .tokenizer
        .encode(&prompt_text, !model.info.template_adds_bos)?;
    let tool_calls = match offered {
        None => ToolCallMode::Off,
        Some((_, ToolChoice::Auto)) => ToolCallMode::Parse,
        Some((tools, ToolChoice::Required | ToolChoice::Function(_))) => {
            let functions: Vec<ForcedFunction> = tools
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|tool| {
                    Some(ForcedFunction {
                        name: tool_name(tool)?,
                        arguments: ArgumentSchema::from_parameters(
                            tool.pointer("/function/parameters"),
                        ),
                    })
                })
                .collect();
            let forced = model.forced_tool_call(&functions)?;
            prompt_tokens.extend_from_slice(&forced.prefix_tokens);
            ToolCallMode::Forced(forced)
        }
    };
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    let params = sampling_params(
        &model,
        &request.sampling,
        max_tokens,
        None,
        prompt_tokens.len(),
        top_logprobs,
    )?;
    Ok(ValidGenerateRequest {
        stop_strings: stop_strings(request.stop.clone())?,
        model,
        prompt_tokens,
        params,
        echo_text: None,
        tool_calls,
    })
}

fn tool_name(tool: &serde_json::Value) -> Option<String> {
    tool.pointer("/function/name")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

/// The tools the chat template gets, with the choice among them: none for `tool_choice: "none"`
/// or an empty list; only the named one for `{"type": "function", "function": {"name": ..}}`;
/// else all.
fn offered_tools(
    request: &ChatCompletionRequest,
) -> Result<Option<(serde_json::Value, ToolChoice)>, HarmonyError> {
    let Some(tools) = &request.tools else {
        return match &request.tool_choice {
            None => Ok(None),
            Some(serde_json::Value::String(choice)) if choice == "none" || choice == "auto" => {
                Ok(None)
            }
            Some(_) => Err(HarmonyError::invalid(
                "tool_choice",
                "tool_choice requires tools",
            )),
        };
    };
    let Some(list) = tools.as_array() else {
        return Err(HarmonyError::invalid(
            "tools",
            "tools must be an array of function tools",
        ));
    };
    if list.iter().any(|tool| tool_name(tool).is_none()) {
        return Err(HarmonyError::invalid(
            "tools",
            "every tool must be {\"type\": \"function\", \"function\": {\"name\": ..}}",
        ));
    }
    let choice = match &request.tool_choice {
        None => ToolChoice::Auto,
        Some(serde_json::Value::String(choice)) => match choice.as_str() {
            "none" => return Ok(None),
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(HarmonyError::invalid(
                    "tool_choice",
                    format!(
                        "tool_choice must be none, auto, required or a function, not '{other}'"
                    ),
                ))
            }
        },
        Some(choice) => {
            let wanted = choice
                .pointer("/function/name")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| {
                    HarmonyError::invalid("tool_choice", "tool_choice names no function")
                })?;
            ToolChoice::Function(wanted.to_owned())
        }
    };
    if list.is_empty() {
        return match choice {
            ToolChoice::Auto => Ok(None),
            _ => Err(HarmonyError::invalid(
                "tool_choice",
                "tool_choice requires a call, but tools is empty",
            )),
        };
    }
    let ToolChoice::Function(wanted) = &choice else {
        return Ok(Some((tools.clone(), choice)));
    };
    let named: Vec<serde_json::Value> = list
        .iter()
        .filter(|tool| tool_name(tool).as_deref() == Some(wanted.as_str()))
        .cloned()
        .collect();
    if named.is_empty() {
        return Err(HarmonyError::invalid(
            "tool_choice",
            format!("tool_choice names '{wanted}', which is not among the tools"),
        ));
    }
    Ok(Some((serde_json::Value::Array(named), choice)))
}

pub fn validate_completion(
    model: Arc<ServedModel>,
    request: &CompletionRequest,
) -> Result<ValidGenerateRequest, HarmonyError> {
    check_n(request.n)?;
    let only_one = |count: usize| {
        if count == 1 {
            Ok(())
        } else {
            Err(HarmonyError::invalid(
                "prompt",
                "exactly one prompt per request is supported",
            ))
        }
    };
    let (prompt_text, prompt_tokens) = match &request.prompt {
        PromptInput::Text(text) => (text.clone(), model.tokenizer.encode(text, true)?),
        PromptInput::Texts(texts) => {
            only_one(texts.len())?;
            (texts[0].clone(), model.tokenizer.encode(&texts[0], true)?)
        }
        PromptInput::Tokens(tokens) => (model.tokenizer.decode(tokens)?, tokens.clone()),
        PromptInput::TokenBatches(batches) => {
            only_one(batches.len())?;
            (model.tokenizer.decode(&batches[0])?, batches[0].clone())
        }
    };
    if prompt_tokens.is_empty() {
        return Err(HarmonyError::invalid("prompt", "the prompt is empty"));
    }
    if let Some(top) = request.logprobs {
        if top > 5 {
            return Err(HarmonyError::invalid(
                "logprobs",
                "logprobs must be between 0 and 5",
            ));
        }
    }
    let params = sampling_params(
        &model,
        &request.sampling,
        request.max_tokens,
        Some(COMPLETIONS_DEFAULT_MAX_TOKENS),
        prompt_tokens.len(),
        request.logprobs.map(|top| top as usize),
    )?;
    Ok(ValidGenerateRequest {
        stop_strings: stop_strings(request.stop.clone())?,
        echo_text: request.echo.unwrap_or(false).then_some(prompt_text),
        model,
        prompt_tokens,
        params,
        tool_calls: ToolCallMode::Off,
    })
}

fn check_n(n: Option<u32>) -> Result<(), HarmonyError> {
    match n {
        None | Some(1) => Ok(()),
        Some(_) => Err(HarmonyError::invalid("n", "only n=1 is supported")),
    }
}

fn stop_strings(stop: Option<StopSequences>) -> Result<Vec<String>, HarmonyError> {
    let stops = stop.map(StopSequences::into_vec).unwrap_or_default();
    if stops.len() > MAX_STOP_SEQUENCES {
        return Err(HarmonyError::invalid(
            "stop",
            format!("at most {MAX_STOP_SEQUENCES} stop sequences are allowed"),
        ));
    }
    Ok(stops)
}

fn in_range(
    value: Option<f32>,
    param: &'static str,
    range: std::ops::RangeInclusive<f32>,
) -> Result<(), HarmonyError> {
    match value {
        Some(value) if !range.contains(&value) || value.is_nan() => Err(HarmonyError::invalid(
            param,
            format!(
                "{param} must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        )),
        _ => Ok(()),
    }
}

fn sampling_params(
    model: &ServedModel,
    options: &SamplingOptions,
    max_tokens: Option<u32>,
    default_max_tokens: Option<u32>,
    prompt_len: usize,
    logprobs: Option<usize>,
) -> Result<SamplingParams, HarmonyError> {
    in_range(options.temperature, "temperature", 0.0..=2.0)?;
    in_range(options.top_p, "top_p", 0.0..=1.0)?;
    if options.top_p == Some(0.0) {
        return Err(HarmonyError::invalid(
            "top_p",
            "top_p must be greater than 0",
        ));
    }
    in_range(options.min_p, "min_p", 0.0..=1.0)?;
    in_range(options.frequency_penalty, "frequency_penalty", -2.0..=2.0)?;
    in_range(options.presence_penalty, "presence_penalty", -2.0..=2.0)?;
    in_range(
        options.repetition_penalty,
        "repetition_penalty",
        0.01..=10.0,
    )?;
    let top_k = match options.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(_) => {
            return Err(HarmonyError::invalid(
                "top_k",
                "top_k must be -1 (disabled) or positive",
            ))
        }
    };
    let context = model.info.max_seq_len;
    if max_tokens == Some(0) {
        return Err(HarmonyError::invalid(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    let remaining = context.saturating_sub(prompt_len);
    let max_tokens = match max_tokens.or(default_max_tokens) {
        Some(requested) => requested as usize,
        None => remaining,
    };
    if prompt_len + max_tokens > context || remaining == 0 {
        return Err(HarmonyError::ContextLengthExceeded {
            max_tokens: context,
            prompt_tokens: prompt_len,
            requested_tokens: prompt_len + max_tokens.max(1),
        });
    }
    Ok(SamplingParams {
        temperature: options.temperature.unwrap_or(1.0),
        top_p: options.top_p.unwrap_or(1.0),
        top_k,
        min_p: options.min_p.unwrap_or(0.0),
        repetition_penalty: options.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: options.frequency_penalty.unwrap_or(0.0),
        presence_penalty: options.presence_penalty.unwrap_or(0.0),
        // OpenAI seeds are signed; the bit pattern is what matters.
        seed: options.seed.map(|seed| seed as u64),
        max_tokens,
        stop_token_ids: Vec::new(),
        ignore_eos: options.ignore_eos.unwrap_or(false),
        logprobs,
    })
}
