//! The harmony worker: OpenAI-shaped HTTP over the engine on port 50053, registration and heartbeats with the control plane
