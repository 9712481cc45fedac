//! A running generation as a stream of text: the engine's token events, detokenized, filtered
//! for stop strings, timed for metrics, and tied to the replica's drain tracker.
//!
//! Dropping a [`TextStream`] drops the engine's sequence stream, which cancels the sequence
//! and frees its KV blocks: that is how a client disconnect stops generation.

use std::collections::VecDeque;

use adaptive_api_types::openai::Usage;
use adaptive_engine::{
    FinishReason, GenerateRequest, SequenceEvent, SequenceStream, TokenConstraint,
};
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::detokenize::{IncrementalDecoder, StopStringFilter};
use crate::error::HarmonyError;
use crate::metrics::Metrics;
use crate::validate::{ToolCallMode, ValidGenerateRequest};

/// The chosen token and its alternatives, as text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobText {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TextEvent {
    /// New text (may be empty when only logprobs are new).
    Delta {
        text: String,
        logprobs: Vec<TokenLogprobText>,
    },
    Finished {
        finish_reason: FinishReason,
        usage: Usage,
    },
}

pub struct TextStream {
    request: ValidGenerateRequest,
    /// None once the sequence ended or was cancelled by a stop string.
    sequence: Option<SequenceStream>,
    decoder: IncrementalDecoder,
    stop_filter: StopStringFilter,
    queued: VecDeque<TextEvent>,
    metrics: std::sync::Arc<Metrics>,
    submitted_at: Instant,
    last_token_at: Option<Instant>,
    completion_tokens: usize,
    done: bool,
    outcome_recorded: bool,
    _in_flight: TaskTrackerToken,
}

impl TextStream {
    /// Submits the request to the model's engine.
    pub async fn start(
        request: ValidGenerateRequest,
        metrics: std::sync::Arc<Metrics>,
        in_flight: TaskTrackerToken,
    ) -> Result<Self, HarmonyError> {
        let submitted_at = Instant::now();
        let constraint: Option<Box<dyn TokenConstraint>> = match &request.tool_calls {
            ToolCallMode::Forced(forced) => Some(Box::new(forced.constraint())),
            ToolCallMode::Off | ToolCallMode::Parse => None,
        };
        let engine_request = GenerateRequest {
            prompt_tokens: request.prompt_tokens.clone(),
            params: request.params.clone(),
            constraint,
        };
        let sequence = match request.model.engine.submit(engine_request).await {
            Ok(sequence) => sequence,
            Err(error) => {
                let error = HarmonyError::from(error);
                metrics.count_request(&request.model.labels, outcome_of(&error));
                return Err(error);
            }
        };
        Ok(Self {
            decoder: IncrementalDecoder::new(
                std::sync::Arc::clone(&request.model.tokenizer),
                &request.prompt_tokens,
            ),
            stop_filter: StopStringFilter::new(request.stop_strings.clone()),
            request,
            sequence: Some(sequence),
            queued: VecDeque::new(),
            metrics,
            submitted_at,
            last_token_at: None,
            completion_tokens: 0,
            done: false,
            outcome_recorded: false,
            _in_flight: in_flight,
        })
    }

    pub fn prompt_tokens(&self) -> usize {
        self.request.prompt_tokens.len()
    }

    pub fn echo_text(&self) -> Option<&str> {
        self.request.echo_text.as_deref()
    }

    /// The next event; None after `Finished` or an error.
    pub async fn next(&mut self) -> Option<Result<TextEvent, HarmonyError>> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let Some(sequence) = self.sequence.as_mut() else {
                self.done = true;
                return None;
            };
            match sequence.next().await {
                Some(SequenceEvent::Token { token_id, logprobs }) => {
                    self.on_token(token_id, logprobs);
                }
                Some(SequenceEvent::Finished(summary)) => {
                    self.sequence = None;
                    self.finish(summary.finish_reason, summary.cached_prompt_tokens, false);
                }
                Some(SequenceEvent::Failed(error)) => {
                    self.sequence = None;
                    self.done = true;
                    let error = HarmonyError::from(error);
                    self.record_outcome(outcome_of(&error));
                    return Some(Err(error));
                }
                None => {
                    self.sequence = None;
                    self.done = true;
                    self.record_outcome("server_error");
                    return Some(Err(HarmonyError::Internal("the engine stopped".to_owned())));
                }
            }
        }
    }

    fn on_token(&mut self, token_id: u32, logprobs: Option<adaptive_engine::TokenLogprobs>) {
        let now = Instant::now();
        let labels = &self.request.model.labels;
        match self.last_token_at {
            None => self
                .metrics
                .time_to_first_token
                .get_or_create(labels)
                .observe((now - self.submitted_at).as_secs_f64()),
            Some(previous) => self
                .metrics
                .inter_token_latency
                .get_or_create(labels)
                .observe((now - previous).as_secs_f64()),
        }
        self.last_token_at = Some(now);
        self.completion_tokens += 1;

        let is_special_stop = self.request.model.info.eos_token_ids.contains(&token_id)
            && !self.request.params.ignore_eos;
        let decoded = if is_special_stop {
            String::new()
        } else {
            self.decoder.push(token_id).unwrap_or_default()
        };
        let logprobs = logprobs
            .map(|logprobs| {
                vec![TokenLogprobText {
                    token: self.token_text(token_id),
                    logprob: logprobs.logprob,
                    top: logprobs
                        .top
                        .iter()
                        .map(|&(token, logprob)| (self.token_text(token), logprob))
                        .collect(),
                }]
            })
            .unwrap_or_default();
        let filtered = self.stop_filter.push(&decoded);
        if !filtered.text.is_empty() || !logprobs.is_empty() {
            self.queued.push_back(TextEvent::Delta {
                text: filtered.text,
                logprobs,
            });
        }
        if filtered.stopped {
            // Dropping the sequence stream cancels it and frees its blocks now.
            self.sequence = None;
            self.finish(FinishReason::Stop, 0, true);
        }
    }

    /// Queues the held-back text (unless a stop string matched) and the final event.
    fn finish(
        &mut self,
        finish_reason: FinishReason,
        cached_prompt_tokens: usize,
        stop_string_matched: bool,
    ) {
        let mut text = String::new();
        if !stop_string_matched {
            let tail = self.decoder.flush().unwrap_or_default();
            let filtered = self.stop_filter.push(&tail);
            text = filtered.text;
            if !filtered.stopped {
                text.push_str(&self.stop_filter.flush());
            }
        }
        if !text.is_empty() {
            self.queued.push_back(TextEvent::Delta {
                text,
                logprobs: Vec::new(),
            });
        }
        let to_u32 = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
        self.queued.push_back(TextEvent::Finished {
            finish_reason,
            usage: Usage::new(
                to_u32(self.prompt_tokens()),
                to_u32(self.completion_tokens),
                to_u32(cached_prompt_tokens),
            ),
        });
        self.done = true;
        self.record_outcome("ok");
    }

    fn token_text(&self, token: u32) -> String {
        self.request
            .model
            .tokenizer
            .decode(&[token])
            .unwrap_or_default()
    }

    fn record_outcome(&mut self, outcome: &str) {
        if !self.outcome_recorded {
            self.outcome_recorded = true;
            self.metrics
                .count_request(&self.request.model.labels, outcome);
        }
    }
}

impl Drop for TextStream {
    fn drop(&mut self) {
        if !self.outcome_recorded {
            self.metrics
                .count_request(&self.request.model.labels, "cancelled");
        }
    }
}

fn outcome_of(error: &HarmonyError) -> &'static str {
    match error.error_code().http_status() {
        429 => "overloaded",
        400..=499 => "client_error",
        _ => "server_error",
    }
}
