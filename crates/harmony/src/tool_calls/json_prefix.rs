//! A recognizer for prefixes of one JSON object, one character at a time.
//!
//! [`JsonObjectPrefix`] answers "can this text still become a JSON object?" (RFC 8259: strings
//! with escapes, numbers, literals, nested arrays and objects) and "is the object complete?".
//! It is `Copy` (the container stack is a bit set, at most [`MAX_DEPTH`] deep), so the forced
//! tool-call constraint can try every vocabulary token's text from the current state at each
//! step without allocating: the approach of llama.cpp's grammar sampler and of outlines /
//! xgrammar in vLLM, specialised to the one grammar tool arguments need.

/// Nesting deeper than this is rejected.
pub const MAX_DEPTH: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberPart {
    Minus,
    Zero,
    Integer,
    Dot,
    Fraction,
    Exponent,
    ExponentSign,
    ExponentDigits,
}

impl NumberPart {
    fn can_end(self) -> bool {
        matches!(
            self,
            NumberPart::Zero
                | NumberPart::Integer
                | NumberPart::Fraction
                | NumberPart::ExponentDigits
        )
    }

    fn next(self, character: char) -> Option<NumberPart> {
        use NumberPart::*;
        match (self, character) {
            (Minus, '0') => Some(Zero),
            (Minus, '1'..='9') => Some(Integer),
            (Integer, '0'..='9') => Some(Integer),
            (Zero | Integer, '.') => Some(Dot),
            (Dot | Fraction, '0'..='9') => Some(Fraction),
            (Zero | Integer | Fraction, 'e' | 'E') => Some(Exponent),
            (Exponent, '+' | '-') => Some(ExponentSign),
            (Exponent | ExponentSign | ExponentDigits, '0'..='9') => Some(ExponentDigits),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Backslash,
    /// Hex digits still expected after `\u`.
    Unicode(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level `{`.
    Start,
    /// Where a value must come; `closing_allowed` right after `[`.
    Value {
        closing_allowed: bool,
    },
    /// Where an object key must come; `closing_allowed` right after `{`.
    Key {
        closing_allowed: bool,
    },
    String {
        is_key: bool,
        escape: Escape,
    },
    Colon,
    /// After a value inside a container: `,` or the container's close.
    AfterValue,
    Number(NumberPart),
    Literal {
        word: &'static str,
        matched: u8,
    },
    Complete,
}

/// Where a JSON object's text stands; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonObjectPrefix {
    state: State,
    depth: u32,
    /// Bit `i` set: the container at depth `i + 1` is an array.
    arrays: u64,
    /// Whitespace characters in a row outside strings.
    whitespace_run: u32,
}

/// The character cannot continue a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

impl Default for JsonObjectPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonObjectPrefix {
    pub fn new() -> Self {
        Self {
            state: State::Start,
            depth: 0,
            arrays: 0,
            whitespace_run: 0,
        }
    }

    /// Containers open: 1 inside the top-level object.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Whether an object key must come next (after `{` or `,`); `closing_allowed` after `{`.
    pub fn expects_key(&self) -> Option<bool> {
        match self.state {
            State::Key { closing_allowed } => Some(closing_allowed),
            _ => None,
        }
    }

    /// Whether inside an object key's string (escapes included).
    pub fn in_key(&self) -> bool {
        matches!(self.state, State::String { is_key: true, .. })
    }

    /// Whether the top-level object has been closed.
    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }

    /// Whitespace characters in a row at the end, outside strings.
    pub fn whitespace_run(&self) -> u32 {
        self.whitespace_run
    }

    pub fn push(&mut self, character: char) -> Result<(), NotJson> {
        let in_string = matches!(self.state, State::String { .. });
        if !in_string {
            if is_json_whitespace(character) {
                self.whitespace_run += 1;
            } else {
                self.whitespace_run = 0;
            }
        }
        match self.state {
            State::Complete => Err(NotJson),
            State::Start => match character {
                '{' => self.open(false),
                _ if is_json_whitespace(character) => Ok(()),
                _ => Err(NotJson),
            },
            State::Value { closing_allowed } => match character {
                ']' if closing_allowed => self.close(true),
                _ if is_json_whitespace(character) => Ok(()),
                _ => self.start_value(character),
            },
            State::Key { closing_allowed } => match character {
                '}' if closing_allowed => self.close(false),
                '"' => {
                    self.state = State::String {
                        is_key: true,
                        escape: Escape::None,
                    };
                    Ok(())
                }
                _ if is_json_whitespace(character) => Ok(()),
                _ => Err(NotJson),
            },
            State::String { is_key, escape } => self.string_character(is_key, escape, character),
            State::Colon => match character {
                ':' => {
                    self.state = State::Value {
                        closing_allowed: false,
                    };
                    Ok(())
                }
                _ if is_json_whitespace(character) => Ok(()),
                _ => Err(NotJson),
            },
            State::AfterValue => self.after_value(character),
            State::Number(part) => match part.next(character) {
                Some(next) => {
                    self.state = State::Number(next);
                    Ok(())
                }
                None if part.can_end() => {
                    self.value_done();
                    self.after_value(character)
                }
                None => Err(NotJson),
            },
            State::Literal { word, matched } => {
                if word.as_bytes().get(usize::from(matched)) != Some(&(character as u8))
                    || !character.is_ascii()
                {
                    return Err(NotJson);
                }
                let matched = matched + 1;
                if usize::from(matched) == word.len() {
                    self.value_done();
                } else {
                    self.state = State::Literal { word, matched };
                }
                Ok(())
            }
        }
    }

    fn start_value(&mut self, character: char) -> Result<(), NotJson> {
        self.state = match character {
            '{' => return self.open(false),
            '[' => return self.open(true),
            '"' => State::String {
                is_key: false,
                escape: Escape::None,
            },
            '-' => State::Number(NumberPart::Minus),
            '0' => State::Number(NumberPart::Zero),
            '1'..='9' => State::Number(NumberPart::Integer),
            't' => State::Literal {
                word: "true",
                matched: 1,
            },
            'f' => State::Literal {
                word: "false",
                matched: 1,
            },
            'n' => State::Literal {
                word: "null",
                matched: 1,
            },
            _ => return Err(NotJson),
        };
        Ok(())
    }

    fn string_character(
        &mut self,
        is_key: bool,
        escape: Escape,
        character: char,
    ) -> Result<(), NotJson> {
        let next_escape = match (escape, character) {
            (Escape::None, '"') => {
                if is_key {
                    self.state = State::Colon;
                } else {
                    self.value_done();
                }
                return Ok(());
            }
            (Escape::None, '\\') => Escape::Backslash,
            (Escape::None, _) if (character as u32) < 0x20 => return Err(NotJson),
            (Escape::None, _) => Escape::None,
            (Escape::Backslash, '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => Escape::None,
            (Escape::Backslash, 'u') => Escape::Unicode(4),
            (Escape::Unicode(left), _) if character.is_ascii_hexdigit() => match left {
                1 => Escape::None,
                _ => Escape::Unicode(left - 1),
            },
            _ => return Err(NotJson),
        };
        self.state = State::String {
            is_key,
            escape: next_escape,
        };
        Ok(())
    }

    fn after_value(&mut self, character: char) -> Result<(), NotJson> {
        let in_array = self.innermost_is_array();
        match character {
            ',' if in_array => {
                self.state = State::Value {
                    closing_allowed: false,
                };
                Ok(())
            }
            ',' => {
                self.state = State::Key {
                    closing_allowed: false,
                };
                Ok(())
            }
            ']' if in_array => self.close(true),
            '}' if !in_array => self.close(false),
            _ if is_json_whitespace(character) && self.state != State::Complete => Ok(()),
            _ => Err(NotJson),
        }
    }

    fn open(&mut self, is_array: bool) -> Result<(), NotJson> {
        if self.depth >= MAX_DEPTH {
            return Err(NotJson);
        }
        if is_array {
            self.arrays |= 1 << self.depth;
        } else {
            self.arrays &= !(1 << self.depth);
        }
        self.depth += 1;
        self.state = if is_array {
            State::Value {
                closing_allowed: true,
            }
        } else {
            State::Key {
                closing_allowed: true,
            }
        };
        Ok(())
    }

    fn close(&mut self, is_array: bool) -> Result<(), NotJson> {
        if self.depth == 0 || self.innermost_is_array() != is_array {
            return Err(NotJson);
        }
        self.depth -= 1;
        self.value_done();
        Ok(())
    }

    fn value_done(&mut self) {
        self.state = if self.depth == 0 {
            State::Complete
        } else {
            State::AfterValue
        };
    }

    fn innermost_is_array(&self) -> bool {
        self.depth > 0 && self.arrays & (1 << (self.depth - 1)) != 0
    }
}

fn is_json_whitespace(character: char) -> bool {
    matches!(character, ' ' | '\t' | '\n' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> Option<bool> {
        let mut prefix = JsonObjectPrefix::new();
        text.chars()
            .try_for_each(|character| prefix.push(character))
            .ok()?;
        Some(prefix.is_complete())
    }

    #[test]
    fn complete_objects_are_complete_and_their_prefixes_are_accepted() {
        for text in [
            "{}",
            " {\"city\": \"Paris\"}",
            "{\"a\": [1, -2.5e+3, 0, true, false, null, {\"b\": []}], \"c\": \"\\u00e9\\n\\\"\"}",
            "{\"nested\": {\"deeper\": {\"x\": 0.1E5}}}",
            "{\"emoji\": \"🌧️ ünïcode\"}",
        ] {
            assert_eq!(accepts(text), Some(true), "{text}");
            for (end, _) in text.char_indices() {
                assert_eq!(
                    accepts(&text[..end]),
                    Some(false),
                    "prefix of {text}: {end}"
                );
            }
            // The recognizer agrees with serde_json on what a complete object is.
            assert!(
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok()
            );
        }
    }

    #[test]
    fn text_that_cannot_become_an_object_is_rejected() {
        for text in [
            "[",
            "\"a\"",
            "{a",
            "{\"a\" 1",
            "{\"a\": }",
            "{\"a\": 01",
            "{\"a\": 1.}",
            "{\"a\": -}",
            "{\"a\": tru}",
            "{\"a\": 1,}",
            "{\"a\": [1,]",
            "{\"a\": [}",
            "{\"a\": \"\\x\"",
            "{\"a\": \"\\u12g\"",
            "{\"a\": \"tab\tinside\"}",
            "{} ",
            "{}}",
            "{]",
        ] {
            assert_eq!(accepts(text), None, "{text}");
            assert!(
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_err()
                    || text.ends_with(' '),
                "{text}"
            );
        }
    }

    #[test]
    fn depth_is_bounded_and_whitespace_runs_are_counted_outside_strings() {
        let deep = format!("{{\"a\": {}", "[".repeat(MAX_DEPTH as usize));
        assert_eq!(accepts(&deep), None);
        let mut prefix = JsonObjectPrefix::new();
        "{\n\n   "
            .chars()
            .for_each(|c| prefix.push(c).expect("whitespace is fine"));
        assert_eq!(prefix.whitespace_run(), 5);
        "\"  "
            .chars()
            .for_each(|c| prefix.push(c).expect("a string"));
        assert_eq!(prefix.whitespace_run(), 0);
    }
}
