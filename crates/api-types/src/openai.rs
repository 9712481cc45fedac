//! OpenAI-compatible request and response types (chat completions, completions, models).
//! Owned by the harmony work; the gateway relays these mostly as bytes.
