//! Service supervision: a service that fails (returns an error, panics, or ends before
//! shutdown) is logged, marked not serving, raised as a Node event, and started again
//! after a backoff that doubles from [`RESTART_INITIAL`] to [`RESTART_MAX`]; a run
//! that lasted [`STABLE_AFTER`] resets the backoff. The other services go on.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Context, DaemonError, ServiceFn};
use crate::observe::events;
use crate::observe::health::State;
use crate::observe::metrics::METRICS;

pub(crate) const RESTART_INITIAL: Duration = Duration::from_secs(1);
pub(crate) const RESTART_MAX: Duration = Duration::from_secs(60);
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Restart delays: `initial`, doubling up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Runs one service until shutdown, restarting it when it fails. Returns the last
/// failure when the service was not serving at shutdown.
pub async fn supervise(name: String, f: Arc<ServiceFn>, ctx: Context) -> Result<(), DaemonError> {
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Backoff::new(RESTART_INITIAL, RESTART_MAX);
    loop {
        let started = Instant::now();
        let run = tokio::spawn(f(ctx.clone()));
        let outcome = run.await;
        if *shutdown.borrow() {
            return match outcome {
                Ok(r) => r,
                Err(e) => Err(DaemonError::Service {
                    service: name,
                    message: format!("panicked: {e}"),
                }),
            };
        }
        let why = match outcome {
            Ok(Ok(())) => "ended without being asked to stop".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("panicked: {e}"),
        };
        if started.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::error!(service = %name, error = %why, retry_in = ?delay, "service failed; restarting it");
        ctx.health.set(
            &name,
            State::NotServing(format!("failed ({why}); restarting in {delay:?}")),
        );
        events::raise(
            "ServiceFailed",
            "Restart",
            format!("cchost run: service {name} failed: {why}; restarting in {delay:?}"),
        );
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => {
                return Err(DaemonError::Service { service: name, message: why });
            }
            () = tokio::time::sleep(delay) => {}
        }
        METRICS.service_restarts_total.inc(&[&name]);
        tracing::info!(service = %name, "restarting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let s: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
    }
}
