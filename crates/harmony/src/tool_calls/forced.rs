//! `tool_choice: "required"` and a named function, enforced while generating.
//!
//! Asking nicely is not enough: a small model often answers in prose. So the reply is made to be
//! a call, in the format the model's chat template teaches ([`ToolCallFormat`]):
//!
//! 1. **Forced opener.** The call's opening text (Hermes: `<tool_call>\n{"name": "<fn>",
//!    "arguments":`; Llama 3 JSON: `{"name": "<fn>", "parameters":`) is tokenized for every
//!    allowed function. The tokens all the openers share are appended to the prompt, as if the
//!    assistant had already written them (with one allowed function, that is the whole opener).
//! 2. **Name among the tools.** The rest of each opener is a path of tokens; until one path is
//!    complete, [`ToolCallConstraint`] masks every token that continues none of them, so the model
//!    picks one of the listed names, by its own likelihood (a token trie, as in vLLM's and
//!    llama.cpp's grammar-constrained decoding).
//! 3. **Arguments are one JSON object.** Then only tokens whose text keeps the arguments a prefix
//!    of a JSON object ([`JsonObjectPrefix`]) are allowed, and the sequence stops the moment the
//!    object closes. The format's closing text (`}` and `</tool_call>`) is never generated.
//! 4. **Its keys are the function's parameters.** When the function declares
//!    `parameters.properties` (and not `additionalProperties: true`), the top-level keys are
//!    limited to those names, each at most once, and the object closes only once the `required`
//!    ones are there ([`ArgumentSchema`]). Without this a small model rambles on in invented keys
//!    until max_tokens. Values are any JSON: their types are not checked against the schema.
//!
//! One call per reply: parallel calls are not forced. vLLM (guided decoding with the tools'
//! schemas) and llama.cpp (a grammar built from them, in the template's native format) constrain
//! the values too; that is a possible next step on the same seam.

use std::sync::Arc;

use adaptive_engine::TokenConstraint;

use super::json_prefix::JsonObjectPrefix;
use crate::model::{ChatTemplate, ModelError, TextTokenizer};

/// Whitespace characters in a row allowed outside strings in forced arguments: enough for
/// pretty-printed JSON, not for a model stuck emitting newlines until max_tokens.
const MAX_WHITESPACE_RUN: u32 = 32;

/// How a model writes a tool call, as its chat template teaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallFormat {
    /// `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>` (Hermes, Qwen 2.5+, SmolLM3).
    Hermes,
    /// `{"name": .., "parameters": {..}}` as the whole reply (Llama 3.1+).
    Llama3Json,
}

impl ToolCallFormat {
    /// Renders a probe conversation with one tool and looks for the format's markers in the
    /// instructions the template writes. Templates that ignore tools get Hermes, the most widely
    /// trained convention (and the one [`super::parse_tool_calls`] tries first).
    pub fn detect(template: &dyn ChatTemplate) -> Self {
        let probe_tools = serde_json::json!([{
            "type": "function",
            "function": {
                "name": "probe_function",
                "description": "probe",
                "parameters": {"type": "object", "properties": {}}
            }
        }]);
        let messages = [adaptive_api_types::openai::ChatMessage::new(
            "user", "probe",
        )];
        let Ok(rendered) = template.render(&messages, Some(&probe_tools), true) else {
            return ToolCallFormat::Hermes;
        };
        if rendered.contains("<tool_call>") {
            return ToolCallFormat::Hermes;
        }
        if rendered.contains("\"parameters\": dictionary")
            || rendered.contains("<|python_tag|>")
            || rendered.contains("ipython")
        {
            return ToolCallFormat::Llama3Json;
        }
        ToolCallFormat::Hermes
    }

    /// The text of a call up to (not including) its arguments.
    pub fn opener(self, function_name: &str) -> String {
        let quoted_name =
            serde_json::to_string(function_name).unwrap_or_else(|_| format!("\"{function_name}\""));
        match self {
            ToolCallFormat::Hermes => {
                format!("<tool_call>\n{{\"name\": {quoted_name}, \"arguments\":")
            }
            ToolCallFormat::Llama3Json => format!("{{\"name\": {quoted_name}, \"parameters\":"),
        }
    }
}

/// Every token's text, decoded alone (special tokens decode to nothing), indexed by id.
pub struct TokenTexts(Vec<String>);

impl std::fmt::Debug for TokenTexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenTexts({} tokens)", self.0.len())
    }
}

impl TokenTexts {
    pub fn build(tokenizer: &dyn TextTokenizer) -> Result<Self, ModelError> {
        (0..tokenizer.vocab_size())
            .map(|token| tokenizer.decode(&[token as u32]))
            .collect::<Result<Vec<_>, _>>()
            .map(TokenTexts)
    }

    fn get(&self, token: usize) -> Option<&str> {
        self.0.get(token).map(String::as_str)
    }
}

/// What the top-level keys of a function's arguments may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentSchema {
    /// None: any keys. Some: only these, each at most once (at most [`MAX_KEYS`]).
    keys: Option<Vec<String>>,
    /// Bit `i`: `keys[i]` must be present before the object closes.
    required: u64,
}

/// Declared parameters beyond this many are not enforced (the key set is a 64-bit mask).
pub const MAX_KEYS: usize = 64;

impl ArgumentSchema {
    pub fn any() -> Self {
        Self {
            keys: None,
            required: 0,
        }
    }

    /// From a function's `parameters` JSON schema; see the module docs.
    pub fn from_parameters(parameters: Option<&serde_json::Value>) -> Self {
        let Some(parameters) = parameters else {
            return Self::any();
        };
        let Some(properties) = parameters
            .get("properties")
            .and_then(serde_json::Value::as_object)
        else {
            return Self::any();
        };
        let open = parameters.get("additionalProperties") == Some(&serde_json::Value::Bool(true));
        let plain = |key: &String| !key.chars().any(|c| c == '"' || c == '\\' || c.is_control());
        if open || properties.len() > MAX_KEYS || !properties.keys().all(plain) {
            return Self::any();
        }
        let keys: Vec<String> = properties.keys().cloned().collect();
        let required = parameters
            .get("required")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .filter_map(|name| keys.iter().position(|key| key == name))
            .fold(0u64, |mask, index| mask | (1 << index));
        Self {
            keys: Some(keys),
            required,
        }
    }

    fn all_keys(&self) -> u64 {
        match &self.keys {
            Some(keys) if keys.len() < 64 => (1u64 << keys.len()) - 1,
            Some(_) => u64::MAX,
            None => 0,
        }
    }
}

/// Where forced arguments stand: the JSON object and which of its schema's keys it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ArgumentsPrefix {
    json: JsonObjectPrefix,
    used_keys: u64,
    /// Inside a top-level key: the keys still matching it, and its bytes so far.
    key_candidates: u64,
    key_bytes: usize,
}

/// The character breaks the arguments' JSON or their schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NotAllowed;

impl ArgumentsPrefix {
    fn new() -> Self {
        Self {
            json: JsonObjectPrefix::new(),
            used_keys: 0,
            key_candidates: 0,
            key_bytes: 0,
        }
    }

    fn push_str(&mut self, text: &str, schema: &ArgumentSchema) -> Result<(), NotAllowed> {
        text.chars()
            .try_for_each(|character| self.push(character, schema))
    }

    fn push(&mut self, character: char, schema: &ArgumentSchema) -> Result<(), NotAllowed> {
        let before = self.json;
        self.json.push(character).map_err(|_| NotAllowed)?;
        let Some(keys) = &schema.keys else {
            return Ok(());
        };
        let unused = schema.all_keys() & !self.used_keys;
        if before.depth() == 1 && before.expects_key().is_some() && self.json.in_key() {
            // A top-level key opens: it must be one not used yet.
            self.key_candidates = unused;
            self.key_bytes = 0;
            return if unused == 0 { Err(NotAllowed) } else { Ok(()) };
        }
        if before.depth() == 1 && before.in_key() {
            if !self.json.in_key() {
                // The key closed: it must be a whole key.
                let whole = (0..keys.len()).find(|&index| {
                    self.key_candidates & (1 << index) != 0 && keys[index].len() == self.key_bytes
                });
                let Some(index) = whole else {
                    return Err(NotAllowed);
                };
                self.used_keys |= 1 << index;
                return Ok(());
            }
            if character == '\\' {
                return Err(NotAllowed);
            }
            let mut buffer = [0u8; 4];
            let bytes = character.encode_utf8(&mut buffer).as_bytes();
            for (index, key) in keys.iter().enumerate() {
                let continues = key
                    .as_bytes()
                    .get(self.key_bytes..)
                    .is_some_and(|rest| rest.starts_with(bytes));
                if !continues {
                    self.key_candidates &= !(1 << index);
                }
            }
            self.key_bytes += bytes.len();
            return if self.key_candidates == 0 {
                Err(NotAllowed)
            } else {
                Ok(())
            };
        }
        if self.json.is_complete() && schema.required & !self.used_keys != 0 {
            return Err(NotAllowed);
        }
        if self.json.depth() == 1 && self.json.expects_key() == Some(false) && unused == 0 {
            // A `,` with no key left to write.
            return Err(NotAllowed);
        }
        Ok(())
    }
}

/// A function a forced call may name.
#[derive(Debug, Clone)]
pub struct ForcedFunction {
    pub name: String,
    pub arguments: ArgumentSchema,
}

/// A forced call, prepared for one request: the prompt's extra tokens and the constraint's
/// name paths.
#[derive(Debug, Clone)]
pub struct ForcedToolCall {
    /// The functions the call may name.
    pub function_names: Vec<String>,
    /// Appended to the prompt: the tokens every opener starts with.
    pub prefix_tokens: Vec<u32>,
    /// The text of `prefix_tokens`, which the reply's parser sees before the generated text.
    pub prefix_text: String,
    /// For each function, the rest of its opener's tokens.
    name_paths: Vec<Vec<u32>>,
    /// For each function, its arguments' keys.
    schemas: Vec<Arc<ArgumentSchema>>,
    vocabulary: Arc<TokenTexts>,
}

impl ForcedToolCall {
    /// `functions` must not be empty; a repeated name keeps its first declaration.
    pub fn prepare(
        format: ToolCallFormat,
        functions: &[ForcedFunction],
        tokenizer: &dyn TextTokenizer,
        vocabulary: Arc<TokenTexts>,
    ) -> Result<Self, ModelError> {
        let mut names: Vec<String> = Vec::new();
        let mut schemas: Vec<Arc<ArgumentSchema>> = Vec::new();
        for function in functions {
            if !names.contains(&function.name) {
                names.push(function.name.clone());
                schemas.push(Arc::new(function.arguments.clone()));
            }
        }
        let openers: Vec<String> = names.iter().map(|name| format.opener(name)).collect();
        let tokenized: Vec<Vec<u32>> = openers
            .iter()
            .map(|opener| tokenizer.encode(opener, false))
            .collect::<Result<_, _>>()?;
        let shared = common_prefix_len(&tokenized);
        let prefix_tokens = tokenized
            .first()
            .map_or_else(Vec::new, |first| first[..shared].to_vec());
        let name_paths: Vec<Vec<u32>> = tokenized
            .iter()
            .map(|tokens| tokens[shared..].to_vec())
            .collect();
        // The prefix's text is the opener minus what its remaining tokens decode to; decoding the
        // prefix alone could drop a special token such as `<tool_call>`.
        let first_opener = openers.first().map_or("", String::as_str);
        let rest_text = match name_paths.first() {
            Some(path) if !path.is_empty() => tokenizer.decode(path)?,
            _ => String::new(),
        };
        let prefix_text = match first_opener.strip_suffix(rest_text.as_str()) {
            Some(prefix) => prefix.to_owned(),
            None => tokenizer.decode(&prefix_tokens)?,
        };
        Ok(Self {
            function_names: names,
            prefix_tokens,
            prefix_text,
            name_paths,
            schemas,
            vocabulary,
        })
    }

    /// A fresh constraint for one generation.
    pub fn constraint(&self) -> ToolCallConstraint {
        let chosen = self.name_paths.iter().position(Vec::is_empty);
        ToolCallConstraint {
            vocabulary: Arc::clone(&self.vocabulary),
            name_paths: match chosen {
                Some(_) => Vec::new(),
                None => self
                    .name_paths
                    .iter()
                    .cloned()
                    .zip(self.schemas.iter().cloned())
                    .collect(),
            },
            position: 0,
            arguments: chosen
                .map(|index| (ArgumentsPrefix::new(), Arc::clone(&self.schemas[index]))),
            finished: false,
        }
    }
}

fn common_prefix_len(sequences: &[Vec<u32>]) -> usize {
    let Some(first) = sequences.first() else {
        return 0;
    };
    (0..first.len())
        .take_while(|&index| {
            sequences
                .iter()
                .all(|sequence| sequence.get(index) == first.get(index))
        })
        .count()
}

/// The constraint of one forced call; see the module docs.
#[derive(Debug)]
pub struct ToolCallConstraint {
    vocabulary: Arc<TokenTexts>,
    /// While choosing the name: the openers' remaining tokens still possible, with the schema
    /// of each one's arguments.
    name_paths: Vec<(Vec<u32>, Arc<ArgumentSchema>)>,
    /// Tokens of the name paths accepted so far.
    position: usize,
    /// Some once the name is chosen.
    arguments: Option<(ArgumentsPrefix, Arc<ArgumentSchema>)>,
    /// The object closed, or a token broke the constraint (only when every token was masked).
    finished: bool,
}

impl ToolCallConstraint {
    fn allows_in_arguments(
        &self,
        arguments: &ArgumentsPrefix,
        schema: &ArgumentSchema,
        token: usize,
    ) -> bool {
        let Some(text) = self.vocabulary.get(token) else {
            return false;
        };
        if text.is_empty() {
            return false;
        }
        let mut next = *arguments;
        for character in text.chars() {
            if next.push(character, schema).is_err()
                || next.json.whitespace_run() > MAX_WHITESPACE_RUN
            {
                return false;
            }
        }
        true
    }
}

impl TokenConstraint for ToolCallConstraint {
    fn mask_logits(&self, logits: &mut [f32]) {
        match &self.arguments {
            None => {
                let allowed: Vec<u32> = self
                    .name_paths
                    .iter()
                    .filter_map(|(path, _)| path.get(self.position).copied())
                    .collect();
                for (token, logit) in logits.iter_mut().enumerate() {
                    if !allowed.contains(&(token as u32)) {
                        *logit = f32::NEG_INFINITY;
                    }
                }
            }
            Some((arguments, schema)) => {
                for (token, logit) in logits.iter_mut().enumerate() {
                    if *logit != f32::NEG_INFINITY
                        && !self.allows_in_arguments(arguments, schema, token)
                    {
                        *logit = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }

    fn accept(&mut self, token: u32) {
        if self.finished {
            return;
        }
        let Some((arguments, schema)) = &mut self.arguments else {
            let position = self.position;
            self.name_paths
                .retain(|(path, _)| path.get(position) == Some(&token));
            self.position += 1;
            let chosen = self
                .name_paths
                .iter()
                .find(|(path, _)| path.len() == self.position);
            match chosen {
                Some((_, schema)) => {
                    self.arguments = Some((ArgumentsPrefix::new(), Arc::clone(schema)));
                }
                None if self.name_paths.is_empty() => self.finished = true,
                None => {}
            }
            return;
        };
        let text = self.vocabulary.get(token as usize).unwrap_or_default();
        // Done when the object closed, or broken by a token the mask did not allow.
        if text.is_empty()
            || arguments.push_str(text, schema).is_err()
            || arguments.json.is_complete()
        {
            self.finished = true;
        }
    }

    fn is_complete(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_model::{ByteTokenizer, PlainChatTemplate};

    fn byte_vocabulary() -> Arc<TokenTexts> {
        Arc::new(TokenTexts::build(&ByteTokenizer).expect("decodes"))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    /// Functions that take any arguments.
    fn functions(list: &[&str]) -> Vec<ForcedFunction> {
        list.iter()
            .map(|name| ForcedFunction {
                name: (*name).to_owned(),
                arguments: ArgumentSchema::any(),
            })
            .collect()
    }

    /// Drives the constraint like the sampler does, with a "model" that prefers the bytes of
    /// `preferred` in order, else `{`, then `}`, then the lowest allowed id.
    fn generate(forced: &ForcedToolCall, preferred: &str, max_tokens: usize) -> String {
        let mut constraint = forced.constraint();
        let mut output = Vec::new();
        let mut wanted = preferred.bytes().peekable();
        while !constraint.is_complete() && output.len() < max_tokens {
            let mut logits = vec![0.0f32; 300];
            logits[usize::from(b'{')] = 2.0;
            logits[usize::from(b'}')] = 1.0;
            if let Some(&byte) = wanted.peek() {
                logits[usize::from(byte)] = 10.0;
            }
            constraint.mask_logits(&mut logits);
            let token = adaptive_engine::sampler::argmax(&logits);
            if wanted.peek() == Some(&(token as u8)) {
                wanted.next();
            }
            constraint.accept(token);
            output.push(token);
        }
        ByteTokenizer.decode(&output).expect("bytes")
    }

    #[test]
    fn templates_that_teach_no_format_get_hermes() {
        assert_eq!(
            ToolCallFormat::detect(&PlainChatTemplate),
            ToolCallFormat::Hermes
        );
        assert_eq!(
            ToolCallFormat::Llama3Json.opener("get_weather"),
            "{\"name\": \"get_weather\", \"parameters\":"
        );
    }

    #[test]
    fn one_function_is_forced_whole_and_the_arguments_stop_at_the_object_end() {
        let forced = ForcedToolCall::prepare(
            ToolCallFormat::Hermes,
            &functions(&["get_weather"]),
            &ByteTokenizer,
            byte_vocabulary(),
        )
        .expect("prepared");
        assert_eq!(
            forced.prefix_text,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\":"
        );
        assert_eq!(
            ByteTokenizer.decode(&forced.prefix_tokens).expect("bytes"),
            forced.prefix_text
        );
        // The model "wants" to add prose after the object: it is cut at the object's end.
        let reply = generate(&forced, " {\"city\": \"Paris\"}}\n</tool_call> Done!", 200);
        assert_eq!(reply, " {\"city\": \"Paris\"}");
    }

    #[test]
    fn the_name_is_one_of_the_tools_even_when_the_model_prefers_another() {
        let forced = ForcedToolCall::prepare(
            ToolCallFormat::Llama3Json,
            &functions(&["get_weather", "get_time", "get_time"]),
            &ByteTokenizer,
            byte_vocabulary(),
        )
        .expect("prepared");
        assert_eq!(forced.function_names, names(&["get_weather", "get_time"]));
        assert_eq!(forced.prefix_text, "{\"name\": \"get_");
        let chosen = generate(&forced, "time\", \"parameters\": {}", 200);
        assert_eq!(chosen, "time\", \"parameters\": {}");
        // Prose instead of a name: the mask steers to a listed name, then to a JSON object.
        let steered = generate(&forced, "I think the answer is 42", 200);
        let full = format!("{}{steered}", forced.prefix_text);
        let call: serde_json::Value = serde_json::from_str(&format!("{full}}}")).expect("json");
        assert!(["get_weather", "get_time"].contains(&call["name"].as_str().expect("name")));
        assert!(call["parameters"].is_object(), "{full}");
    }

    #[test]
    fn whitespace_runs_and_special_tokens_are_masked_in_the_arguments() {
        let forced = ForcedToolCall::prepare(
            ToolCallFormat::Hermes,
            &functions(&["f"]),
            &ByteTokenizer,
            byte_vocabulary(),
        )
        .expect("prepared");
        let constraint = forced.constraint();
        let mut logits = vec![0.0f32; 300];
        constraint.mask_logits(&mut logits);
        let allowed: Vec<usize> = (0..300).filter(|&t| logits[t].is_finite()).collect();
        assert_eq!(allowed, vec![9, 10, 13, 32, usize::from(b'{')]);

        let mut stuck = forced.constraint();
        for _ in 0..MAX_WHITESPACE_RUN {
            stuck.accept(u32::from(b'\n'));
        }
        let mut logits = vec![0.0f32; 300];
        stuck.mask_logits(&mut logits);
        let allowed: Vec<usize> = (0..300).filter(|&t| logits[t].is_finite()).collect();
        assert_eq!(allowed, vec![usize::from(b'{')]);
        // A token the mask did not allow ends the constrained output instead of panicking.
        stuck.accept(u32::from(b'x'));
        assert!(stuck.is_complete());
    }

    fn with_schema(parameters: serde_json::Value) -> ForcedToolCall {
        let function = ForcedFunction {
            name: "get_weather".to_owned(),
            arguments: ArgumentSchema::from_parameters(Some(&parameters)),
        };
        ForcedToolCall::prepare(
            ToolCallFormat::Hermes,
            &[function],
            &ByteTokenizer,
            byte_vocabulary(),
        )
        .expect("prepared")
    }

    #[test]
    fn argument_keys_are_the_declared_parameters_each_once_required_ones_first() {
        let forced = with_schema(serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"]
        }));
        // Invented keys are steered to declared ones.
        let reply = generate(&forced, "{\"description\": 1}", 200);
        let arguments: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&reply).expect("an object");
        assert!(
            arguments.keys().all(|key| key == "city" || key == "unit"),
            "{reply}"
        );
        // A key already written is not allowed again.
        let reply = generate(&forced, "{\"city\": 1, \"city\": 2}", 200);
        assert_eq!(reply.matches("\"city\"").count(), 1, "{reply}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&reply).is_ok(),
            "{reply}"
        );
        // `{}` is what the "model" wants, but `city` is required.
        let reply = generate(&forced, "{}", 200);
        let arguments: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&reply).expect("an object");
        assert!(arguments.contains_key("city"), "{reply}");
        // With every key written, the object can only close.
        let reply = generate(
            &forced,
            "{\"unit\": \"C\", \"city\": \"Paris\", \"more\": 1}",
            200,
        );
        assert_eq!(reply, "{\"unit\": \"C\", \"city\": \"Paris\"}");

        let no_parameters = with_schema(serde_json::json!({"type": "object", "properties": {}}));
        assert_eq!(generate(&no_parameters, "{\"x\": 1}", 200), "{}");
        let open = with_schema(serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "additionalProperties": true
        }));
        assert_eq!(generate(&open, "{\"x\": 1}", 200), "{\"x\": 1}");
    }
}
