//! Wire types shared by the control plane, the gateway, harmony, the client and the CLI.
//!
//! Nothing here does I/O: these are the contracts between processes. Keeping them in one small
//! crate (serde only) lets every process depend on them without pulling in a server stack.
//!
//! - [`error`]: the one error vocabulary ([`ErrorCode`]) and the public error bodies.
//! - [`harmony`]: how a harmony replica registers and heartbeats with the control plane.
//! - [`openai`]: the OpenAI-compatible request and response schema spoken by harmony and the
//!   gateway.

pub mod error;
pub mod harmony;
pub mod openai;

pub use error::{ErrorCode, OpenAiErrorBody, OpenAiErrorDetail};
