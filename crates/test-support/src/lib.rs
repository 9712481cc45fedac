//! Test harnesses shared by the crates' integration tests.
//!
//! - [`fake_harmony`]: a **fake** harmony replica (no model: it streams a fixed reply) for
//!   gateway, routing and benchmark work. Never a stand-in for the real engine in its own tests.
//! - [`wait_for`]: poll a condition instead of sleeping.

pub mod fake_harmony;

use std::future::Future;
use std::time::Duration;

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_for<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
