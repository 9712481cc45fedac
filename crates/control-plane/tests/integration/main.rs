//! Integration tests of the control plane: one binary (quick to link), one module per concern.
//!
//! PostgreSQL and Redis are the real servers at `ADAPTIVE_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432`) and `ADAPTIVE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). Every test makes its own database or key prefix and removes it.

mod harness;

mod api_keys;
mod config_docs;
mod datasets;
mod feedback;
mod http_api;
mod model_deletion;
mod permissions;
mod postgres_failures;
mod registry_conformance;
mod store_conformance;
mod uploads;
mod usage;
