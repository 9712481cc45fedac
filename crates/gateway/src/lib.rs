//! The inference gateway: OpenAI-compatible API, routing to harmony replicas, stream relay, interaction recording
