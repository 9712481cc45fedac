//! From generated token ids to streamed text: incremental detokenization and stop strings.
//!
//! [`IncrementalDecoder`] follows TGI's and vLLM's approach: decode a short window of recent
//! tokens twice (with and without the newest) and emit the difference. Byte-fallback tokens that
//! end in the middle of a UTF-8 character decode to U+FFFD; such text is held back until the
//! character completes, so clients never see broken characters. Decoding a window rather than
//! single tokens keeps SentencePiece's leading-space handling right.
//!
//! [`StopStringFilter`] runs on that text: it holds back any tail that could still become a stop
//! string, and on a match returns the text before it and reports the stop.

use std::sync::Arc;

use crate::model::{ModelError, TextTokenizer};

/// Tokens of the prompt kept as left context for the first decoded tokens.
const PROMPT_CONTEXT_TOKENS: usize = 5;

pub struct IncrementalDecoder {
    tokenizer: Arc<dyn TextTokenizer>,
    tokens: Vec<u32>,
    /// Start of the window decoded for comparison.
    prefix_offset: usize,
    /// End of the text already emitted.
    read_offset: usize,
}

impl IncrementalDecoder {
    pub fn new(tokenizer: Arc<dyn TextTokenizer>, prompt_tokens: &[u32]) -> Self {
        let context_start = prompt_tokens.len().saturating_sub(PROMPT_CONTEXT_TOKENS);
        let tokens = prompt_tokens[context_start..].to_vec();
        Self {
            tokenizer,
            read_offset: tokens.len(),
            prefix_offset: 0,
            tokens,
        }
    }

    /// Adds a token; returns the text that became final (possibly empty).
    pub fn push(&mut self, token: u32) -> Result<String, ModelError> {
        self.tokens.push(token);
        let emitted = self
            .tokenizer
            .decode(&self.tokens[self.prefix_offset..self.read_offset])?;
        let with_new = self.tokenizer.decode(&self.tokens[self.prefix_offset..])?;
        if with_new.len() <= emitted.len() || with_new.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let Some(delta) = with_new.get(emitted.len()..) else {
            // The window re-segmented differently; wait for more tokens.
            return Ok(String::new());
        };
        let delta = delta.to_owned();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.tokens.len();
        Ok(delta)
    }

    /// The text still held back (an incomplete character at the very end).
    pub fn flush(&mut self) -> Result<String, ModelError> {
        let emitted = self
            .tokenizer
            .decode(&self.tokens[self.prefix_offset..self.read_offset])?;
        let all = self.tokenizer.decode(&self.tokens[self.prefix_offset..])?;
        self.prefix_offset = self.tokens.len();
        self.read_offset = self.tokens.len();
        Ok(all.get(emitted.len()..).unwrap_or_default().to_owned())
    }
}

/// Holds back text that may be the start of a stop string; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct StopStringFilter {
    stops: Vec<String>,
    pending: String,
}

/// What to send after feeding text to the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    pub text: String,
    pub stopped: bool,
}

impl StopStringFilter {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|stop| !stop.is_empty()).collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Filtered {
        self.pending.push_str(text);
        if self.stops.is_empty() {
            return Filtered {
                text: std::mem::take(&mut self.pending),
                stopped: false,
            };
        }
        let earliest_match = self
            .stops
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()))
            .min();
        if let Some(position) = earliest_match {
            let text = self.pending[..position].to_owned();
            self.pending.clear();
            return Filtered {
                text,
                stopped: true,
            };
        }
        let hold_from = self.partial_match_start();
        let text = self.pending[..hold_from].to_owned();
        self.pending.drain(..hold_from);
        Filtered {
            text,
            stopped: false,
        }
    }

    /// The held-back text, once the sequence ended without completing a stop string.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// The earliest char boundary from which the pending text is a prefix of a stop string.
    fn partial_match_start(&self) -> usize {
        self.pending
            .char_indices()
            .map(|(index, _)| index)
            .find(|&index| {
                let tail = &self.pending[index..];
                self.stops.iter().any(|stop| stop.starts_with(tail))
            })
            .unwrap_or(self.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_model::ByteTokenizer;

    #[test]
    fn multibyte_characters_are_held_until_complete() {
        let mut decoder = IncrementalDecoder::new(Arc::new(ByteTokenizer), &[]);
        let bytes = "é😀".as_bytes();
        let mut out = Vec::new();
        for &byte in bytes {
            out.push(decoder.push(u32::from(byte)).expect("decodes"));
        }
        assert_eq!(out, vec!["", "é", "", "", "", "😀"]);
        assert_eq!(decoder.flush().expect("decodes"), "");
    }

    #[test]
    fn stop_strings_are_trimmed_even_when_split_across_deltas() {
        let mut filter = StopStringFilter::new(vec!["STOP".to_owned(), "\n\n".to_owned()]);
        assert_eq!(filter.push("hello S").text, "hello ");
        assert_eq!(filter.push("T").text, "");
        let last = filter.push("OP and more");
        assert_eq!(
            last,
            Filtered {
                text: String::new(),
                stopped: true
            }
        );

        let mut filter = StopStringFilter::new(vec!["STOP".to_owned()]);
        assert_eq!(filter.push("a S").text, "a ");
        assert_eq!(filter.push("x").text, "Sx");
        assert_eq!(filter.push("ST").text, "");
        assert_eq!(filter.flush(), "ST");
    }
}
