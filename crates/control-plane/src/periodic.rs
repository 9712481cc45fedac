//! The loop of the background sweepers (abandoned uploads, unclaimed datasets).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `run` at once and then every `interval` until `shutdown`. A run that takes longer than
/// the interval delays the next one rather than bunching missed ones together.
pub(crate) async fn every<F, Fut>(interval: Duration, shutdown: &CancellationToken, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        run().await;
    }
}
