//! The continuous-batching scheduler: which tokens of which sequences run in the next forward
//! pass, and the KV block bookkeeping that goes with it.
//!
//! Every [`Scheduler::step`] builds one batch under a token budget (`max_batched_tokens`):
//!
//! 1. **Running sequences, in arrival order.** A decoding sequence contributes its one new token;
//!    a sequence still prefilling (or recomputing after preemption) contributes a chunk of its
//!    prompt, sized so that the decoding sequences behind it still fit in the budget: a long
//!    prompt is spread over several steps (chunked prefill) and never stalls the streams that are
//!    already producing tokens.
//! 2. **Waiting sequences, in arrival order**, while the budget, `max_running_sequences` and the
//!    free KV blocks allow. On admission, the full blocks of the prompt that are in the prefix
//!    cache are taken over instead of being computed.
//!
//! When a running sequence needs a block and none is free, the most recently arrived running
//! sequence is **preempted by recomputation**: its blocks are released (full ones stay in the
//! prefix cache, so recomputing is often cheap) and it goes back to the waiting queue at its
//! arrival position, keeping the tokens it has generated. The oldest sequence therefore always
//! makes progress, and running out of blocks is never an error. Requests that could not fit even
//! alone are rejected up front.
//!
//! After the forward pass, each chunk that reached the end of its sequence's tokens yields a
//! logits row; the sequence's [`Sampler`] picks the next token, which is streamed out as a
//! [`SequenceEvent`] and fed back in the next step. A sequence whose event receiver is gone
//! (the client went away) is dropped at the start of the next step and its blocks freed.
//!
//! This follows vLLM's scheduler (V0 with chunked prefill) and its automatic prefix caching;
//! unlike TGI's router it batches at every step rather than per request wave.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use tokio::sync::mpsc::UnboundedSender;

use crate::constraint::TokenConstraint;
use crate::executor::{ForwardBatch, ModelExecutor, SequenceChunk};
use crate::kv_cache::{BlockAllocator, BlockHash};
use crate::sampler::{Sampler, SamplingParams, TokenLogprobs};

/// Limits of one scheduler (one loaded model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Sequences that may hold KV blocks at once.
    pub max_running_sequences: usize,
    /// Tokens in one forward pass (decode tokens plus prefill chunks).
    pub max_batched_tokens: usize,
    /// Sequences that may wait for admission; beyond it, submissions fail with `Overloaded`.
    pub max_queued_sequences: usize,
    /// The model's context window: prompt plus generated tokens.
    pub max_seq_len: usize,
    /// Tokens that end a sequence with finish reason `stop` unless `ignore_eos` is set.
    pub eos_token_ids: Vec<u32>,
}

impl SchedulerConfig {
    pub fn for_test() -> Self {
        Self {
            max_running_sequences: 8,
            max_batched_tokens: 64,
            max_queued_sequences: 64,
            max_seq_len: 256,
            eos_token_ids: Vec::new(),
        }
    }
}

/// A validated generation request in token space.
#[derive(Debug)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
    /// Restricts the tokens the sequence may produce (see [`crate::constraint`]).
    pub constraint: Option<Box<dyn TokenConstraint>>,
}

impl GenerateRequest {
    /// An unconstrained request.
    pub fn new(prompt_tokens: Vec<u32>, params: SamplingParams) -> Self {
        Self {
            prompt_tokens,
            params,
            constraint: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {prompt_tokens} tokens but this model's context holds {max_tokens}")]
    ContextLengthExceeded {
        prompt_tokens: usize,
        max_tokens: usize,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("overloaded: {queued} requests are already waiting")]
    Overloaded { queued: usize },
    #[error("the model failed: {0}")]
    Executor(String),
    #[error("the model is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// eos, a stop token (or, in harmony, a stop string).
    Stop,
    /// max_tokens or the context window.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceSummary {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache at the sequence's first admission.
    pub cached_prompt_tokens: usize,
}

/// What a sequence's receiver sees: tokens, then exactly one `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum SequenceEvent {
    Token {
        token_id: u32,
        logprobs: Option<TokenLogprobs>,
    },
    Finished(SequenceSummary),
    Failed(EngineError),
}

/// Counters and gauges of one scheduler, published after every step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub waiting_sequences: usize,
    pub running_sequences: usize,
    pub kv_blocks_total: usize,
    pub kv_blocks_in_use: usize,
    pub kv_blocks_cached: usize,
    pub prefix_cache_queried_blocks: u64,
    pub prefix_cache_hit_blocks: u64,
    /// Tokens run through the model: prompts, recomputation and decode inputs.
    pub tokens_processed: u64,
    pub generated_tokens: u64,
    pub preemptions: u64,
    pub steps: u64,
    /// Releases the allocator refused (a double free): must stay 0.
    pub bookkeeping_errors: u64,
}

/// What one step did; tests use it to check the budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    /// `(sequence id, tokens run)` in batch order.
    pub scheduled: Vec<(u64, usize)>,
    pub batched_tokens: usize,
    pub finished: Vec<u64>,
    pub preempted: Vec<u64>,
}

impl StepReport {
    pub fn is_idle(&self) -> bool {
        self.scheduled.is_empty()
    }
}

#[derive(Debug)]
struct Sequence {
    id: u64,
    /// Prompt followed by the generated tokens; the last one may not be computed yet.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Leading tokens whose keys and values are in the KV cache.
    num_computed: usize,
    block_table: Vec<u32>,
    /// Chained hashes of the leading full blocks registered in (or taken from) the prefix cache.
    block_hashes: Vec<BlockHash>,
    sampler: Sampler,
    constraint: Option<Box<dyn TokenConstraint>>,
    events: UnboundedSender<SequenceEvent>,
    cached_prompt_tokens: Option<usize>,
}

impl Sequence {
    fn uncomputed(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// The scheduler; see the module docs. Single-threaded: [`crate::Engine`] runs it on its own
/// thread, tests drive it with [`Scheduler::step`].
pub struct Scheduler {
    config: SchedulerConfig,
    executor: Box<dyn ModelExecutor>,
    allocator: BlockAllocator,
    /// Sorted by id (= arrival order).
    waiting: VecDeque<Sequence>,
    /// Sorted by id (= arrival order).
    running: Vec<Sequence>,
    next_id: u64,
    seed_source: std::collections::hash_map::RandomState,
    stats: SchedulerStats,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    pub fn new(executor: Box<dyn ModelExecutor>, config: SchedulerConfig) -> Self {
        let geometry = executor.kv_geometry();
        Self {
            allocator: BlockAllocator::new(geometry.num_blocks, geometry.block_size.max(1)),
            config,
            executor,
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            seed_source: std::collections::hash_map::RandomState::new(),
            stats: SchedulerStats::default(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn stats(&self) -> SchedulerStats {
        let counters = self.allocator.counters();
        SchedulerStats {
            waiting_sequences: self.waiting.len(),
            running_sequences: self.running.len(),
            kv_blocks_total: self.allocator.num_blocks(),
            kv_blocks_in_use: self.allocator.num_in_use(),
            kv_blocks_cached: self.allocator.num_cached(),
            prefix_cache_queried_blocks: counters.queried_blocks,
            prefix_cache_hit_blocks: counters.hit_blocks,
            ..self.stats
        }
    }

    /// Tokens a sequence may hold in total: the context window, bounded by the KV cache.
    fn capacity_tokens(&self) -> usize {
        let kv_tokens = self.allocator.num_blocks() * self.allocator.block_size();
        self.config.max_seq_len.min(kv_tokens)
    }

    /// Queues a request; its events go to `events`. Fails at once when the request can never
    /// run or the queue is full.
    pub fn submit(
        &mut self,
        request: GenerateRequest,
        events: UnboundedSender<SequenceEvent>,
    ) -> Result<u64, EngineError> {
        let prompt_len = request.prompt_tokens.len();
        if prompt_len == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        let capacity = self.capacity_tokens();
        // The prompt plus at least one generated token must fit.
        if prompt_len >= capacity {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens: prompt_len,
                max_tokens: capacity,
            });
        }
        let vocab_size = self.executor.vocab_size();
        if let Some(token) = request
            .prompt_tokens
            .iter()
            .find(|&&token| token as usize >= vocab_size)
        {
            return Err(EngineError::InvalidRequest(format!(
                "token {token} is beyond the vocabulary ({vocab_size})"
            )));
        }
        if request.params.max_tokens == 0 {
            return Err(EngineError::InvalidRequest(
                "max_tokens must be at least 1".to_owned(),
            ));
        }
        if self.waiting.len() >= self.config.max_queued_sequences {
            return Err(EngineError::Overloaded {
                queued: self.waiting.len(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut seed_hasher = self.seed_source.build_hasher();
        seed_hasher.write_u64(id);
        let sequence = Sequence {
            id,
            prompt_len,
            tokens: request.prompt_tokens,
            num_computed: 0,
            block_table: Vec::new(),
            block_hashes: Vec::new(),
            sampler: Sampler::new(request.params, seed_hasher.finish()),
            constraint: request.constraint,
            events,
            cached_prompt_tokens: None,
        };
        self.waiting.push_back(sequence);
        Ok(id)
    }

    /// Drops a sequence and frees its blocks now. Unknown ids (already finished) are ignored.
    pub fn cancel(&mut self, id: u64) {
        if let Some(index) = self.running.iter().position(|seq| seq.id == id) {
            let sequence = self.running.remove(index);
            self.release_blocks(sequence);
        } else if let Some(index) = self.waiting.iter().position(|seq| seq.id == id) {
            if let Some(sequence) = self.waiting.remove(index) {
                self.release_blocks(sequence);
            }
        }
    }

    /// Fails every sequence with `error` and frees all blocks (model unload, fatal error).
    pub fn abort_all(&mut self, error: &EngineError) {
        let sequences: Vec<Sequence> = self
            .running
            .drain(..)
            .chain(self.waiting.drain(..))
            .collect();
        for sequence in sequences {
            let _ = sequence.events.send(SequenceEvent::Failed(error.clone()));
            self.release_blocks(sequence);
        }
    }

    /// Runs one scheduling iteration and forward pass; see the module docs.
    pub fn step(&mut self) -> StepReport {
        let mut report = StepReport::default();
        self.reap_cancelled();
        let plan = self.schedule(&mut report);
        if plan.is_empty() {
            return report;
        }
        self.stats.steps += 1;

        let mut batch = ForwardBatch::default();
        for sequence in &self.running {
            let Some(&len) = plan.get(&sequence.id) else {
                continue;
            };
            let start_pos = sequence.num_computed;
            let wants_logits = start_pos + len == sequence.tokens.len();
            batch.chunks.push(SequenceChunk {
                sequence_id: sequence.id,
                tokens: sequence.tokens[start_pos..start_pos + len].to_vec(),
                start_pos,
                block_table: sequence.block_table.clone(),
                wants_logits,
            });
            report.scheduled.push((sequence.id, len));
            report.batched_tokens += len;
        }

        let rows = match self.executor.forward(&batch) {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, sequences = batch.chunks.len(), "forward pass failed");
                let failure = EngineError::Executor(error.to_string());
                for chunk in &batch.chunks {
                    if let Some(index) = self.running.iter().position(|s| s.id == chunk.sequence_id)
                    {
                        let sequence = self.running.remove(index);
                        let _ = sequence.events.send(SequenceEvent::Failed(failure.clone()));
                        self.release_blocks(sequence);
                    }
                }
                return report;
            }
        };
        self.apply_forward_results(&batch, rows, &mut report);
        report
    }

    fn reap_cancelled(&mut self) {
        let cancelled: Vec<u64> = self
            .running
            .iter()
            .chain(self.waiting.iter())
            .filter(|sequence| sequence.events.is_closed())
            .map(|sequence| sequence.id)
            .collect();
        for id in cancelled {
            self.cancel(id);
        }
    }

    /// Chooses how many tokens of which sequences run; allocates their blocks. Returns
    /// sequence id → tokens to run.
    fn schedule(&mut self, report: &mut StepReport) -> HashMap<u64, usize> {
        let block_size = self.allocator.block_size();
        let mut plan = HashMap::new();
        let mut budget = self.config.max_batched_tokens;

        let mut index = 0;
        while index < self.running.len() && budget > 0 {
            let uncomputed = self.running[index].uncomputed();
            let decodes_behind = self.running[index + 1..]
                .iter()
                .filter(|sequence| sequence.uncomputed() == 1)
                .count();
            let tokens = if uncomputed <= 1 {
                uncomputed
            } else {
                uncomputed.min(budget.saturating_sub(decodes_behind)).max(1)
            }
            .min(budget);
            if tokens == 0 {
                index += 1;
                continue;
            }
            let needed = self.blocks_needed(&self.running[index], tokens, block_size);
            if needed <= self.allocator.num_available() {
                self.allocate_blocks(index, needed);
                plan.insert(self.running[index].id, tokens);
                budget -= tokens;
                index += 1;
                continue;
            }
            // Out of blocks: preempt the newest running sequence, which is behind this one and
            // so not scheduled yet; if this one is the newest, it yields itself.
            let victim_index = self.running.len() - 1;
            let victim = self.running.remove(victim_index);
            report.preempted.push(victim.id);
            self.preempt(victim);
        }

        let watermark = self.allocator.num_blocks() / 100;
        while budget > 0 && self.running.len() < self.config.max_running_sequences {
            let Some(mut sequence) = self.waiting.pop_front() else {
                break;
            };
            self.acquire_cached_prefix(&mut sequence);
            let tokens = sequence.uncomputed().min(budget);
            let needed = self.blocks_needed(&sequence, tokens, block_size);
            let can_fit = needed + watermark <= self.allocator.num_available()
                || (self.running.is_empty() && needed <= self.allocator.num_available());
            if !can_fit {
                self.release_table(&mut sequence);
                self.waiting.push_front(sequence);
                break;
            }
            for _ in 0..needed {
                if let Some(block) = self.allocator.allocate() {
                    sequence.block_table.push(block);
                }
            }
            plan.insert(sequence.id, tokens);
            budget -= tokens;
            let position = self
                .running
                .partition_point(|running| running.id < sequence.id);
            self.running.insert(position, sequence);
        }
        plan
    }

    fn blocks_needed(&self, sequence: &Sequence, tokens: usize, block_size: usize) -> usize {
        let total_blocks = (sequence.num_computed + tokens).div_ceil(block_size);
        total_blocks.saturating_sub(sequence.block_table.len())
    }

    fn allocate_blocks(&mut self, index: usize, count: usize) {
        for _ in 0..count {
            if let Some(block) = self.allocator.allocate() {
                self.running[index].block_table.push(block);
            }
        }
    }

    /// Takes the longest run of leading full blocks that the prefix cache holds, always leaving
    /// at least one token to compute (its logits are needed).
    fn acquire_cached_prefix(&mut self, sequence: &mut Sequence) {
        let block_size = self.allocator.block_size();
        let max_blocks = (sequence.tokens.len() - 1) / block_size;
        while sequence.block_table.len() < max_blocks {
            let index = sequence.block_table.len();
            let parent = sequence.block_hashes.last().copied();
            let tokens = &sequence.tokens[index * block_size..(index + 1) * block_size];
            let Some(block) = self.allocator.acquire_cached(parent, tokens) else {
                break;
            };
            sequence.block_table.push(block);
            sequence
                .block_hashes
                .push(crate::kv_cache::chain_hash(parent, tokens));
        }
        sequence.num_computed = sequence.block_table.len() * block_size;
        if sequence.cached_prompt_tokens.is_none() {
            sequence.cached_prompt_tokens = Some(sequence.num_computed.min(sequence.prompt_len));
        }
    }

    fn preempt(&mut self, mut sequence: Sequence) {
        tracing::debug!(
            sequence = sequence.id,
            "preempting sequence for recomputation"
        );
        self.stats.preemptions += 1;
        self.release_table(&mut sequence);
        let position = self
            .waiting
            .partition_point(|waiting| waiting.id < sequence.id);
        self.waiting.insert(position, sequence);
    }

    fn release_table(&mut self, sequence: &mut Sequence) {
        for block in sequence.block_table.drain(..) {
            if let Err(error) = self.allocator.release(block) {
                self.stats.bookkeeping_errors += 1;
                tracing::error!(%error, sequence = sequence.id, "kv block bookkeeping error");
            }
        }
        sequence.block_hashes.clear();
        sequence.num_computed = 0;
    }

    fn release_blocks(&mut self, mut sequence: Sequence) {
        self.release_table(&mut sequence);
    }

    fn apply_forward_results(
        &mut self,
        batch: &ForwardBatch,
        rows: Vec<Vec<f32>>,
        report: &mut StepReport,
    ) {
        let block_size = self.allocator.block_size();
        let capacity_tokens = self.capacity_tokens();
        let mut rows = rows.into_iter();
        let mut finished = Vec::new();
        for chunk in &batch.chunks {
            let Some(index) = self.running.iter().position(|s| s.id == chunk.sequence_id) else {
                continue;
            };
            let sequence = &mut self.running[index];
            sequence.num_computed += chunk.tokens.len();
            self.stats.tokens_processed += chunk.tokens.len() as u64;
            while sequence.block_hashes.len() < sequence.num_computed / block_size {
                let block_index = sequence.block_hashes.len();
                let parent = sequence.block_hashes.last().copied();
                let tokens =
                    &sequence.tokens[block_index * block_size..(block_index + 1) * block_size];
                let hash = self.allocator.register_full_block(
                    sequence.block_table[block_index],
                    parent,
                    tokens,
                );
                sequence.block_hashes.push(hash);
            }
            if !chunk.wants_logits {
                continue;
            }
            let Some(mut row) = rows.next() else {
                tracing::error!(
                    sequence = sequence.id,
                    "executor returned too few logits rows"
                );
                finished.push((sequence.id, None));
                continue;
            };
            if let Some(constraint) = &sequence.constraint {
                constraint.mask_logits(&mut row);
            }
            let (token_id, logprobs) = sequence.sampler.sample(&mut row, &sequence.tokens);
            let constraint_complete = sequence.constraint.as_mut().is_some_and(|constraint| {
                constraint.accept(token_id);
                constraint.is_complete()
            });
            sequence.tokens.push(token_id);
            self.stats.generated_tokens += 1;
            let _ = sequence
                .events
                .send(SequenceEvent::Token { token_id, logprobs });

            let params = sequence.sampler.params();
            let is_eos = !params.ignore_eos && self.config.eos_token_ids.contains(&token_id);
            let finish_reason =
                if is_eos || constraint_complete || params.stop_token_ids.contains(&token_id) {
                    Some(FinishReason::Stop)
                } else if sequence.generated() >= params.max_tokens
                    || sequence.tokens.len() >= capacity_tokens
                {
                    Some(FinishReason::Length)
                } else {
                    None
                };
            if let Some(reason) = finish_reason {
                finished.push((sequence.id, Some(reason)));
            }
        }
        for (id, reason) in finished {
            let Some(index) = self.running.iter().position(|s| s.id == id) else {
                continue;
            };
            let sequence = self.running.remove(index);
            let event = match reason {
                Some(finish_reason) => SequenceEvent::Finished(SequenceSummary {
                    finish_reason,
                    prompt_tokens: sequence.prompt_len,
                    completion_tokens: sequence.generated(),
                    cached_prompt_tokens: sequence.cached_prompt_tokens.unwrap_or(0),
                }),
                None => SequenceEvent::Failed(EngineError::Executor(
                    "the model returned no logits".to_owned(),
                )),
            };
            let _ = sequence.events.send(event);
            report.finished.push(id);
            self.release_blocks(sequence);
        }
    }

    /// Checks the bookkeeping: every block reference is held by exactly one table entry, the
    /// allocator is self-consistent, and no release was refused.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.allocator.check_consistency()?;
        let mut references: HashMap<u32, u32> = HashMap::new();
        for sequence in self.running.iter().chain(self.waiting.iter()) {
            for &block in &sequence.block_table {
                *references.entry(block).or_insert(0) += 1;
            }
            if sequence.num_computed > sequence.block_table.len() * self.allocator.block_size() {
                return Err(format!(
                    "sequence {} computed beyond its blocks",
                    sequence.id
                ));
            }
        }
        for block in 0..self.allocator.num_blocks() as u32 {
            let expected = references.get(&block).copied().unwrap_or(0);
            if self.allocator.ref_count(block) != expected {
                return Err(format!(
                    "block {block} has ref count {} but {expected} table entries",
                    self.allocator.ref_count(block)
                ));
            }
        }
        if self.stats.bookkeeping_errors > 0 {
            return Err(format!(
                "{} refused releases",
                self.stats.bookkeeping_errors
            ));
        }
        Ok(())
    }
}
