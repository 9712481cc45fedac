//! HF chat templates rendered with minijinja.
//!
//! Templates are Jinja written for Python's `jinja2`, so they call Python string methods
//! (`.strip()`, `.startswith()`), which `minijinja-contrib`'s pycompat provides; they call
//! `raise_exception(msg)` to reject conversations, which we turn into an error; and they read
//! `bos_token`, `eos_token`, `add_generation_prompt`, `messages` and optionally `tools`, which we
//! pass the way `transformers`' `apply_chat_template` does.

use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use crate::error::ModelError;

const TEMPLATE_NAME: &str = "chat";

/// A parsed chat template with the special tokens it may reference.
#[derive(Debug)]
pub struct ChatTemplate {
    environment: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// What a template renders: the conversation and HF's switches.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTemplateInput<'a, M: Serialize, T: Serialize = serde_json::Value> {
    pub messages: &'a [M],
    pub add_generation_prompt: bool,
    /// Tool (function) definitions, passed as `tools`; `None` leaves `tools` undefined.
    pub tools: Option<&'a [T]>,
}

/// A minimal chat message; callers may render any serializable message type instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

fn raise_exception(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, ModelError> {
        let mut environment = Environment::new();
        minijinja_contrib::add_to_environment(&mut environment);
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Python's jinja2 keeps a template's trailing newline only on request; HF templates are
        // written for that default.
        environment.set_keep_trailing_newline(false);
        environment.set_trim_blocks(true);
        environment.set_lstrip_blocks(true);
        environment.add_function("raise_exception", raise_exception);
        environment
            .add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ModelError::Template(format!("cannot parse template: {e}")))?;
        Ok(Self {
            environment,
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
        })
    }

    pub fn render<M: Serialize, T: Serialize>(
        &self,
        input: &ChatTemplateInput<'_, M, T>,
    ) -> Result<String, ModelError> {
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ModelError::Template(e.to_string()))?;
        let context = minijinja::context! {
            messages => input.messages,
            add_generation_prompt => input.add_generation_prompt,
            tools => input
                .tools
                .map(minijinja::Value::from_serialize)
                .unwrap_or(minijinja::Value::UNDEFINED),
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        template
            .render(context)
            .map_err(|e| ModelError::Template(format!("cannot render: {e}")))
    }
}
