//! The control plane: configuration, metadata store, domain, GraphQL and REST management API, harmony registry
