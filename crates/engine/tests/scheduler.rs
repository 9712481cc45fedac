//! Scheduler behaviour, step by step, over the fake executor (which reads its context back
//! through the block tables, so bookkeeping mistakes change the output).

use adaptive_engine::fake::{FakeExecutor, FakeModelSpec};
use adaptive_engine::{
    Engine, EngineError, FinishReason, GenerateRequest, KvGeometry, SamplingParams, Scheduler,
    SchedulerConfig, SequenceEvent, TokenConstraint,
};
use proptest::prelude::*;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn scheduler_with(num_blocks: usize, block_size: usize, config: SchedulerConfig) -> Scheduler {
    let executor = FakeExecutor::new(
        KvGeometry {
            block_size,
            num_blocks,
        },
        FakeModelSpec::small(),
    );
    Scheduler::new(Box::new(executor), config)
}

fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 1 + (seed * 31 + i * 7) % 60)
        .collect()
}

fn greedy(prompt_tokens: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt_tokens,
        params: SamplingParams::greedy(max_tokens),
        constraint: None,
    }
}

struct Submitted {
    receiver: UnboundedReceiver<SequenceEvent>,
}

impl Submitted {
    fn drain(&mut self) -> (Vec<u32>, Option<SequenceEvent>) {
        let mut tokens = Vec::new();
        let mut last = None;
        while let Ok(event) = self.receiver.try_recv() {
            match event {
                SequenceEvent::Token { token_id, .. } => tokens.push(token_id),
                other => last = Some(other),
            }
        }
        (tokens, last)
    }
}

fn submit(scheduler: &mut Scheduler, request: GenerateRequest) -> Submitted {
    let (events, receiver) = unbounded_channel();
    scheduler.submit(request, events).expect("accepted");
    Submitted { receiver }
}

fn run_to_completion(scheduler: &mut Scheduler) {
    let mut steps = 0;
    while scheduler.has_work() {
        let report = scheduler.step();
        assert!(report.batched_tokens <= scheduler.config().max_batched_tokens);
        scheduler.check_invariants().expect("invariants hold");
        steps += 1;
        assert!(steps < 100_000, "scheduler made no progress");
    }
}

fn generate_alone(prompt_tokens: Vec<u32>, max_tokens: usize) -> Vec<u32> {
    let mut scheduler = scheduler_with(64, 4, SchedulerConfig::for_test());
    let mut submitted = submit(&mut scheduler, greedy(prompt_tokens, max_tokens));
    run_to_completion(&mut scheduler);
    submitted.drain().0
}

#[test]
fn greedy_output_is_the_same_alone_batched_and_from_the_prefix_cache() {
    let target_prompt = prompt(7, 37);
    let expected = generate_alone(target_prompt.clone(), 20);
    assert_eq!(expected.len(), 20);

    // Batched with 7 others of different lengths, under a small token budget so that prefill
    // chunks and decodes mix.
    let mut scheduler = scheduler_with(128, 4, SchedulerConfig::for_test());
    let mut others: Vec<Submitted> = (0..7)
        .map(|i| {
            submit(
                &mut scheduler,
                greedy(prompt(i, 3 + 11 * i as usize), 5 + i as usize),
            )
        })
        .collect();
    let mut target = submit(&mut scheduler, greedy(target_prompt.clone(), 20));
    run_to_completion(&mut scheduler);
    assert_eq!(target.drain().0, expected);
    for other in &mut others {
        assert!(matches!(other.drain().1, Some(SequenceEvent::Finished(_))));
    }

    // Same prompt again on the same scheduler: the prefix comes from the cache.
    let before = scheduler.stats();
    let mut again = submit(&mut scheduler, greedy(target_prompt, 20));
    run_to_completion(&mut scheduler);
    let (tokens, last) = again.drain();
    assert_eq!(tokens, expected);
    let Some(SequenceEvent::Finished(summary)) = last else {
        panic!("expected a finish, got {last:?}");
    };
    assert_eq!(
        summary.cached_prompt_tokens, 36,
        "9 full blocks of 4 reused"
    );
    assert!(scheduler.stats().prefix_cache_hit_blocks >= before.prefix_cache_hit_blocks + 9);
}

#[test]
fn chunked_prefill_does_not_stall_a_decoding_stream() {
    let config = SchedulerConfig {
        max_batched_tokens: 16,
        ..SchedulerConfig::for_test()
    };
    let mut scheduler = scheduler_with(128, 4, config);
    let mut decoding = submit(&mut scheduler, greedy(prompt(1, 5), 50));
    scheduler.step();
    assert_eq!(decoding.drain().0.len(), 1);

    let mut long = submit(&mut scheduler, greedy(prompt(2, 100), 3));
    for _ in 0..6 {
        let report = scheduler.step();
        assert!(report.batched_tokens <= 16);
        assert_eq!(
            decoding.drain().0.len(),
            1,
            "the decoding stream got a token"
        );
        assert!(
            long.drain().0.is_empty(),
            "the long prompt is still prefilling"
        );
    }
    run_to_completion(&mut scheduler);
    assert_eq!(long.drain().0.len(), 3);
}

#[test]
fn block_pressure_preempts_and_recomputes_without_changing_output() {
    let prompts: Vec<Vec<u32>> = (0..6).map(|i| prompt(i, 10 + 3 * i as usize)).collect();
    let expected: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| generate_alone(p.clone(), 24))
        .collect();

    // 20 blocks of 4 tokens: far less than the 6 sequences need together (up to 49 tokens each).
    let mut scheduler = scheduler_with(20, 4, SchedulerConfig::for_test());
    let mut submitted: Vec<Submitted> = prompts
        .iter()
        .map(|p| submit(&mut scheduler, greedy(p.clone(), 24)))
        .collect();
    let mut tokens = vec![Vec::new(); prompts.len()];
    let mut preemptions = 0;
    while scheduler.has_work() {
        preemptions += scheduler.step().preempted.len();
        scheduler.check_invariants().expect("invariants hold");
        for (index, sequence) in submitted.iter_mut().enumerate() {
            tokens[index].extend(sequence.drain().0);
        }
    }
    assert!(
        preemptions > 0,
        "the test must actually exercise preemption"
    );
    assert_eq!(tokens, expected);
    assert_eq!(scheduler.stats().kv_blocks_in_use, 0);
}

#[test]
fn dropping_the_receiver_cancels_and_frees_blocks_at_the_next_step() {
    let mut scheduler = scheduler_with(64, 4, SchedulerConfig::for_test());
    let kept = submit(&mut scheduler, greedy(prompt(1, 20), 100));
    let dropped = submit(&mut scheduler, greedy(prompt(2, 30), 100));
    scheduler.step();
    let in_use_with_both = scheduler.stats().kv_blocks_in_use;
    drop(dropped);
    scheduler.step();
    assert!(scheduler.stats().kv_blocks_in_use < in_use_with_both);
    assert_eq!(scheduler.stats().running_sequences, 1);
    drop(kept);
    scheduler.step();
    assert_eq!(scheduler.stats().kv_blocks_in_use, 0);
    assert!(!scheduler.has_work());
}

#[test]
fn admission_limits_reject_with_clear_errors() {
    let config = SchedulerConfig {
        max_queued_sequences: 2,
        max_seq_len: 64,
        ..SchedulerConfig::for_test()
    };
    let mut scheduler = scheduler_with(64, 4, config);
    let (events, _receiver) = unbounded_channel();
    assert_eq!(
        scheduler.submit(greedy(prompt(0, 64), 1), events.clone()),
        Err(EngineError::ContextLengthExceeded {
            prompt_tokens: 64,
            max_tokens: 64
        })
    );
    assert_eq!(
        scheduler.submit(greedy(Vec::new(), 1), events.clone()),
        Err(EngineError::EmptyPrompt)
    );
    scheduler
        .submit(greedy(prompt(0, 4), 1), events.clone())
        .expect("queued");
    scheduler
        .submit(greedy(prompt(1, 4), 1), events.clone())
        .expect("queued");
    assert_eq!(
        scheduler.submit(greedy(prompt(2, 4), 1), events),
        Err(EngineError::Overloaded { queued: 2 })
    );
}

#[test]
fn max_running_sequences_bounds_the_batch() {
    let config = SchedulerConfig {
        max_running_sequences: 2,
        ..SchedulerConfig::for_test()
    };
    let mut scheduler = scheduler_with(64, 4, config);
    let _submitted: Vec<Submitted> = (0..5)
        .map(|i| submit(&mut scheduler, greedy(prompt(i, 3), 4)))
        .collect();
    let report = scheduler.step();
    assert_eq!(report.scheduled.len(), 2);
    assert_eq!(scheduler.stats().waiting_sequences, 3);
}

#[test]
fn finish_reasons_follow_eos_stop_tokens_and_max_tokens() {
    let free_run = generate_alone(prompt(3, 8), 10);
    let stop_token = free_run[4];
    let first_stop = free_run
        .iter()
        .position(|&t| t == stop_token)
        .expect("present");

    let mut scheduler = scheduler_with(64, 4, SchedulerConfig::for_test());
    let mut stopped = submit(
        &mut scheduler,
        GenerateRequest {
            prompt_tokens: prompt(3, 8),
            params: SamplingParams {
                stop_token_ids: vec![stop_token],
                ..SamplingParams::greedy(10)
            },
            constraint: None,
        },
    );
    let mut limited = submit(&mut scheduler, greedy(prompt(3, 8), 3));
    run_to_completion(&mut scheduler);
    let (tokens, last) = stopped.drain();
    assert_eq!(tokens, free_run[..=first_stop].to_vec());
    assert!(
        matches!(last, Some(SequenceEvent::Finished(s)) if s.finish_reason == FinishReason::Stop)
    );
    let (tokens, last) = limited.drain();
    assert_eq!(tokens.len(), 3);
    assert!(
        matches!(last, Some(SequenceEvent::Finished(s)) if s.finish_reason == FinishReason::Length && s.completion_tokens == 3 && s.prompt_tokens == 8)
    );

    let eos_config = SchedulerConfig {
        eos_token_ids: vec![stop_token],
        ..SchedulerConfig::for_test()
    };
    let mut scheduler = scheduler_with(64, 4, eos_config);
    let mut eos = submit(&mut scheduler, greedy(prompt(3, 8), 10));
    run_to_completion(&mut scheduler);
    let (tokens, last) = eos.drain();
    assert_eq!(tokens.len(), first_stop + 1);
    assert!(
        matches!(last, Some(SequenceEvent::Finished(s)) if s.finish_reason == FinishReason::Stop)
    );
}

/// Allows only `script[n]` as the n-th generated token; complete after the whole script.
#[derive(Debug)]
struct ScriptConstraint {
    script: Vec<u32>,
    accepted: Vec<u32>,
}

impl TokenConstraint for ScriptConstraint {
    fn mask_logits(&self, logits: &mut [f32]) {
        let allowed = self.script.get(self.accepted.len()).copied();
        for (token, logit) in logits.iter_mut().enumerate() {
            if Some(token as u32) != allowed {
                *logit = f32::NEG_INFINITY;
            }
        }
    }

    fn accept(&mut self, token: u32) {
        self.accepted.push(token);
    }

    fn is_complete(&self) -> bool {
        self.accepted.len() >= self.script.len()
    }
}

#[test]
fn a_constraint_picks_the_tokens_and_ends_the_sequence_when_complete() {
    let free_run = generate_alone(prompt(4, 8), 6);
    // Tokens the unconstrained model would not pick next, in both greedy and seeded sampling.
    let script: Vec<u32> = (1..64)
        .filter(|token| !free_run.contains(token))
        .take(3)
        .collect();
    for params in [
        SamplingParams::greedy(10),
        SamplingParams {
            temperature: 1.5,
            seed: Some(7),
            max_tokens: 10,
            ..SamplingParams::default()
        },
    ] {
        let mut scheduler = scheduler_with(64, 4, SchedulerConfig::for_test());
        let mut constrained = submit(
            &mut scheduler,
            GenerateRequest {
                prompt_tokens: prompt(4, 8),
                params,
                constraint: Some(Box::new(ScriptConstraint {
                    script: script.clone(),
                    accepted: Vec::new(),
                })),
            },
        );
        let mut free = submit(&mut scheduler, greedy(prompt(4, 8), 6));
        run_to_completion(&mut scheduler);
        let (tokens, last) = constrained.drain();
        assert_eq!(tokens, script);
        assert!(
            matches!(last, Some(SequenceEvent::Finished(s)) if s.finish_reason == FinishReason::Stop && s.completion_tokens == 3)
        );
        assert_eq!(
            free.drain().0,
            free_run,
            "the batch companion is unconstrained"
        );
    }
}

#[test]
fn seeded_sampling_is_reproducible_regardless_of_batch_companions() {
    let sampled = |companions: u32| {
        let mut scheduler = scheduler_with(128, 4, SchedulerConfig::for_test());
        let _others: Vec<Submitted> = (0..companions)
            .map(|i| submit(&mut scheduler, greedy(prompt(i + 10, 9), 12)))
            .collect();
        let mut target = submit(
            &mut scheduler,
            GenerateRequest {
                prompt_tokens: prompt(5, 12),
                params: SamplingParams {
                    temperature: 5.0,
                    seed: Some(1234),
                    logprobs: Some(3),
                    max_tokens: 16,
                    ..SamplingParams::default()
                },
                constraint: None,
            },
        );
        run_to_completion(&mut scheduler);
        target.drain().0
    };
    let alone = sampled(0);
    assert_eq!(alone, sampled(5));
    // Temperature 5 flattens the fake model's peaked logits: the draws differ from greedy.
    assert_ne!(alone, generate_alone(prompt(5, 12), 16));
}

#[tokio::test]
async fn engine_actor_streams_tokens_and_frees_blocks_when_the_stream_is_dropped() {
    let executor = FakeExecutor::new(
        KvGeometry {
            block_size: 4,
            num_blocks: 64,
        },
        FakeModelSpec::small(),
    );
    let engine = Engine::spawn(Box::new(executor), SchedulerConfig::for_test(), "test")
        .expect("thread starts");
    let mut stream = engine
        .submit(greedy(prompt(1, 10), 5))
        .await
        .expect("accepted");
    let mut tokens = Vec::new();
    let summary = loop {
        match stream.next().await {
            Some(SequenceEvent::Token { token_id, .. }) => tokens.push(token_id),
            Some(SequenceEvent::Finished(summary)) => break summary,
            other => panic!("unexpected event {other:?}"),
        }
    };
    assert_eq!(tokens, generate_alone(prompt(1, 10), 5));
    assert_eq!(summary.completion_tokens, 5);

    let mut endless = engine
        .submit(greedy(prompt(2, 10), 200))
        .await
        .expect("accepted");
    assert!(matches!(
        endless.next().await,
        Some(SequenceEvent::Token { .. })
    ));
    drop(endless);
    engine
        .wait_for_stats(|stats| stats.running_sequences == 0 && stats.kv_blocks_in_use == 0)
        .await;
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        prompt_len: usize,
        max_tokens: usize,
        seed: u32,
    },
    Cancel(usize),
    Step,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..60, 1usize..30, 0u32..1000).prop_map(|(prompt_len, max_tokens, seed)| Op::Submit { prompt_len, max_tokens, seed }),
        1 => (0usize..64).prop_map(Op::Cancel),
        6 => Just(Op::Step),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Blocks are never double-freed, the token budget is never exceeded, and every block is
    /// free once all sequences finished or were cancelled, whatever the interleaving.
    #[test]
    fn bookkeeping_invariants_hold_under_random_workloads(
        ops in proptest::collection::vec(op_strategy(), 1..120),
        num_blocks in 16usize..48,
        block_size in 1usize..6,
        max_batched_tokens in 1usize..40,
    ) {
        let config = SchedulerConfig {
            max_batched_tokens,
            max_seq_len: 96,
            ..SchedulerConfig::for_test()
        };
        let mut scheduler = scheduler_with(num_blocks, block_size, config);
        let mut live: Vec<Option<Submitted>> = Vec::new();
        for op in ops {
            match op {
                Op::Submit { prompt_len, max_tokens, seed } => {
                    let (events, receiver) = unbounded_channel();
                    let request = greedy(prompt(seed % 4, prompt_len), max_tokens);
                    if scheduler.submit(request, events).is_ok() {
                        live.push(Some(Submitted { receiver }));
                    }
                }
                Op::Cancel(index) => {
                    if !live.is_empty() {
                        let len = live.len();
                        live[index % len] = None;
                    }
                }
                Op::Step => {
                    let report = scheduler.step();
                    prop_assert!(report.batched_tokens <= max_batched_tokens);
                }
            }
            prop_assert_eq!(scheduler.check_invariants(), Ok(()));
        }
        let mut steps = 0;
        while scheduler.has_work() {
            let report = scheduler.step();
            prop_assert!(report.batched_tokens <= max_batched_tokens);
            prop_assert_eq!(scheduler.check_invariants(), Ok(()));
            steps += 1;
            prop_assert!(steps < 10_000);
        }
        prop_assert_eq!(scheduler.stats().kv_blocks_in_use, 0);
        prop_assert_eq!(scheduler.stats().bookkeeping_errors, 0);
        for submitted in live.iter_mut().flatten() {
            let (_, last) = submitted.drain();
            prop_assert!(matches!(last, Some(SequenceEvent::Finished(_))), "got {:?}", last);
        }
    }
}
