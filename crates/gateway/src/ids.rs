//! Random (version 4) ids for completions and sessions.
//!
//! Drawn from rand's thread-local generator (a CSPRNG seeded from the OS) instead of
//! `Uuid::new_v4`, which makes one `getrandom` system call per id: two per request.

pub fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}
