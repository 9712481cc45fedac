//! Turning one logits row into the next token.
//!
//! The order follows HF transformers' and vLLM's logits processors: penalties on the raw
//! logits (repetition over prompt and output, frequency and presence over the output, as OpenAI
//! defines them), then logprobs (of the penalized distribution, before temperature, which is what
//! OpenAI's `logprobs` reports), then greedy argmax when `temperature == 0`, otherwise
//! temperature, top-k, top-p, min-p and a draw from the sequence's own RNG.
//!
//! Each sequence carries its own [`SequenceRng`], seeded from the request's `seed`: the draw for
//! a sequence never depends on which other sequences share its batch, so the same seed and request
//! give the same output.

use std::collections::HashMap;

/// Sampling and stopping parameters of one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables the repetition penalty (HF semantics: divide positive logits, multiply
    /// negative ones, for every token seen in the prompt or the output).
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// None draws a seed at random.
    pub seed: Option<u64>,
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// Tokens that end the sequence (finish reason `stop`), besides eos.
    pub stop_token_ids: Vec<u32>,
    /// When true, eos tokens do not end the sequence (benchmarks).
    pub ignore_eos: bool,
    /// Some(n): report the chosen token's logprob and the `n` most likely alternatives.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            max_tokens: 16,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens,
            ..Self::default()
        }
    }

    fn is_greedy(&self) -> bool {
        self.temperature <= 1e-5
    }
}

/// The logprob of the chosen token and of the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    /// Most likely first.
    pub top: Vec<(u32, f32)>,
}

/// A small, fast, seedable generator (SplitMix64). Statistical quality is ample for sampling and
/// it keeps the engine free of RNG crates whose streams may change between versions.
#[derive(Debug, Clone)]
pub struct SequenceRng {
    state: u64,
}

impl SequenceRng {
    pub fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Per-sequence sampling state: the RNG and counts of generated tokens for the penalties.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: SequenceRng,
    output_counts: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, fallback_seed: u64) -> Self {
        let seed = params.seed.unwrap_or(fallback_seed);
        Self {
            params,
            rng: SequenceRng::seeded(seed),
            output_counts: HashMap::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `context` is the prompt plus the tokens generated so far (for the
    /// repetition penalty). Returns the token and, when requested, its logprobs.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> (u32, Option<TokenLogprobs>) {
        self.apply_penalties(logits, context);
        let token = if self.params.is_greedy() {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        let logprobs = self
            .params
            .logprobs
            .map(|top_n| token_logprobs(logits, token, top_n));
        *self.output_counts.entry(token).or_insert(0) += 1;
        (token, logprobs)
    }

    fn apply_penalties(&self, logits: &mut [f32], context: &[u32]) {
        let repetition = self.params.repetition_penalty;
        if repetition != 1.0 && repetition > 0.0 {
            let mut seen = std::collections::HashSet::new();
            for &token in context {
                if !seen.insert(token) {
                    continue;
                }
                if let Some(logit) = logits.get_mut(token as usize) {
                    *logit = if *logit > 0.0 {
                        *logit / repetition
                    } else {
                        *logit * repetition
                    };
                }
            }
        }
        let frequency = self.params.frequency_penalty;
        let presence = self.params.presence_penalty;
        if frequency != 0.0 || presence != 0.0 {
            for (&token, &count) in &self.output_counts {
                if let Some(logit) = logits.get_mut(token as usize) {
                    *logit -= frequency * count as f32 + presence;
                }
            }
        }
    }

    /// Temperature, then top-k, top-p and min-p over the survivors, then one draw.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let inverse_temperature = 1.0 / self.params.temperature;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, logit)| logit.is_finite())
            .map(|(index, &logit)| (index as u32, logit * inverse_temperature))
            .collect();
        if candidates.is_empty() {
            return 0;
        }
        let top_k = self.params.top_k;
        if top_k > 0 && top_k < candidates.len() {
            candidates.select_nth_unstable_by(top_k - 1, |a, b| b.1.total_cmp(&a.1));
            candidates.truncate(top_k);
        }
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max_logit = candidates[0].1;
        let mut probabilities: Vec<f64> = candidates
            .iter()
            .map(|(_, logit)| f64::from(logit - max_logit).exp())
            .collect();
        let total: f64 = probabilities.iter().sum();
        probabilities.iter_mut().for_each(|p| *p /= total);

        let mut keep = probabilities.len();
        let top_p = f64::from(self.params.top_p);
        if top_p < 1.0 {
            let mut cumulative = 0.0;
            for (index, p) in probabilities.iter().enumerate() {
                cumulative += p;
                if cumulative >= top_p {
                    keep = index + 1;
                    break;
                }
            }
        }
        let min_p = f64::from(self.params.min_p);
        if min_p > 0.0 {
            let threshold = min_p * probabilities[0];
            let above = probabilities
                .iter()
                .take_while(|&&p| p >= threshold)
                .count();
            keep = keep.min(above.max(1));
        }
        let kept_mass: f64 = probabilities[..keep].iter().sum();
        let mut target = self.rng.next_f64() * kept_mass;
        for index in 0..keep {
            target -= probabilities[index];
            if target < 0.0 {
                return candidates[index].0;
            }
        }
        candidates[keep - 1].0
    }
}

/// Index of the largest logit; the lowest index wins ties so greedy output is reproducible.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_logit = f32::NEG_INFINITY;
    for (index, &logit) in logits.iter().enumerate() {
        if logit > best_logit {
            best_logit = logit;
            best = index;
        }
    }
    best as u32
}

fn token_logprobs(logits: &[f32], token: u32, top_n: usize) -> TokenLogprobs {
    let max_logit = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_total = logits
        .iter()
        .map(|&logit| f64::from(logit - max_logit).exp())
        .sum::<f64>()
        .ln() as f32;
    let logprob_of = |logit: f32| logit - max_logit - log_total;
    let chosen = logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&logit| logprob_of(logit));
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(top_n);
    if top_n > 0 {
        let mut indexed: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(index, &logit)| (index as u32, logit))
            .collect();
        let n = top_n.min(indexed.len());
        if n < indexed.len() {
            indexed.select_nth_unstable_by(n - 1, |a, b| b.1.total_cmp(&a.1));
            indexed.truncate(n);
        }
        indexed.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        top = indexed
            .into_iter()
            .map(|(index, logit)| (index, logprob_of(logit)))
            .collect();
    }
    TokenLogprobs {
        logprob: chosen,
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_and_reports_logprobs() {
        let mut sampler = Sampler::new(
            SamplingParams {
                logprobs: Some(2),
                ..SamplingParams::greedy(1)
            },
            0,
        );
        let mut logits = vec![0.0, 3.0, 1.0, 3.0];
        let (token, logprobs) = sampler.sample(&mut logits, &[]);
        assert_eq!(token, 1);
        let logprobs = logprobs.expect("requested");
        assert_eq!(logprobs.top.len(), 2);
        assert_eq!(logprobs.top[0].0, 1);
        assert_eq!(logprobs.top[1].0, 3);
        let total: f32 = [0.0f32, 3.0, 1.0, 3.0].iter().map(|l| l.exp()).sum();
        assert!((logprobs.logprob - (3.0f32.exp() / total).ln()).abs() < 1e-5);
    }

    #[test]
    fn same_seed_gives_same_draws_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 * 0.3).collect();
        let params = SamplingParams {
            temperature: 1.0,
            seed: Some(42),
            ..SamplingParams::default()
        };
        let draw = |params: &SamplingParams| {
            let mut sampler = Sampler::new(params.clone(), 0);
            (0..20)
                .map(|_| sampler.sample(&mut logits.clone(), &[]).0)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        let other_seed = SamplingParams {
            seed: Some(43),
            ..params.clone()
        };
        assert_ne!(draw(&params), draw(&other_seed));
        let top_k_one = SamplingParams {
            top_k: 1,
            ..params.clone()
        };
        assert!(draw(&top_k_one).iter().all(|&t| t == argmax(&logits)));
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Token 0 holds almost all of the mass; top_p 0.5 and min_p 0.5 both keep only it.
        let logits = vec![10.0, 0.0, 0.0, 0.0];
        for params in [
            SamplingParams {
                top_p: 0.5,
                seed: Some(1),
                ..SamplingParams::default()
            },
            SamplingParams {
                min_p: 0.5,
                seed: Some(1),
                ..SamplingParams::default()
            },
        ] {
            let mut sampler = Sampler::new(params, 0);
            for _ in 0..200 {
                assert_eq!(sampler.sample(&mut logits.clone(), &[]).0, 0);
            }
        }
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let mut sampler = Sampler::new(
            SamplingParams {
                presence_penalty: 5.0,
                ..SamplingParams::greedy(4)
            },
            0,
        );
        let logits = vec![1.0, 2.0, 0.0];
        assert_eq!(sampler.sample(&mut logits.clone(), &[]).0, 1);
        // Token 1 was generated: 2.0 - 5.0 < 1.0, so token 0 wins now.
        assert_eq!(sampler.sample(&mut logits.clone(), &[1]).0, 0);

        let mut repetition = Sampler::new(
            SamplingParams {
                repetition_penalty: 4.0,
                ..SamplingParams::greedy(1)
            },
            0,
        );
        assert_eq!(repetition.sample(&mut logits.clone(), &[1]).0, 0);
    }
}
