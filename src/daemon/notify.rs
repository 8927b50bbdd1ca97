//! `cchost run` under systemd (`Type=notify`, `WatchdogSec=`): `READY=1` once start-up
//! is done (every service has reported: serving, or not serving and why, in
//! `STATUS=`), `STATUS=` again whenever readiness changes, `WATCHDOG=1` at half the
//! watchdog interval from the runtime's own thread (a runtime that stops turning stops
//! the pings, and systemd restarts cchost), and `STOPPING=1` at shutdown. The
//! protocol: [`crate::observe::sd_notify`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::observe::health::Health;
use crate::observe::sd_notify::{Notifier, status_line};

fn status(health: &Health) -> String {
    let r = health.readiness();
    if r.ready {
        status_line("serving")
    } else {
        status_line(&format!("not serving: {}", r.not_serving().join("; ")))
    }
}

fn send(n: &Notifier, msg: &str) {
    if let Err(e) = n.notify(msg) {
        tracing::warn!(error = %e, "sd_notify");
    }
}

pub async fn run(
    n: Notifier,
    watchdog: Option<Duration>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = health.subscribe();
    let mut ready_sent = false;
    let mut last_status = String::new();
    // A year is "never" when the watchdog is off.
    let period = watchdog.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now_status = status(&health);
        if !ready_sent && health.readiness().started {
            send(&n, &format!("READY=1\n{now_status}"));
            tracing::info!("told systemd: ready");
            ready_sent = true;
            last_status = now_status;
        } else if ready_sent && now_status != last_status {
            send(&n, &now_status);
            last_status = now_status;
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => {
                send(&n, "STOPPING=1");
                return;
            }
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick(), if watchdog.is_some() => send(&n, "WATCHDOG=1"),
        }
    }
}
