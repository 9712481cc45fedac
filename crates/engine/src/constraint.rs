//! Constrained decoding: which tokens a sequence may produce next.
//!
//! A [`TokenConstraint`] travels with a [`crate::GenerateRequest`] and is owned by its sequence.
//! Before each draw the scheduler lets it mask the logits row (disallowed tokens become `-inf`,
//! so greedy, temperature, top-k/p and min-p all pick among the allowed ones), then tells it the
//! chosen token. Once it reports [`TokenConstraint::is_complete`], the sequence ends with finish
//! reason `stop` without waiting for eos.
//!
//! This is the seam of vLLM's logits processors and guided decoding and of llama.cpp's grammar
//! sampler. The engine has no tokenizer, so constraints that reason about text (a JSON
//! recognizer, a set of allowed names) are built by the caller, which knows each token's text.

/// Restricts which tokens a sequence may produce next; see the module docs.
pub trait TokenConstraint: Send + std::fmt::Debug {
    /// Sets the logits of the tokens that may not come next to `f32::NEG_INFINITY`.
    fn mask_logits(&self, logits: &mut [f32]);

    /// Records the token that was chosen. A token the constraint did not allow (possible only
    /// when it masked every token) must make it complete rather than panic.
    fn accept(&mut self, token: u32);

    /// Whether the constrained output is finished; the sequence then stops.
    fn is_complete(&self) -> bool;
}
