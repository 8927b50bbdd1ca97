//! Kernel uevents -> "devices changed" notifications.
//!
//! A driver bind on eight GPUs is a burst of dozens of uevents; they are folded into
//! one notification after a short quiet gap. A slow timer rescans as a safety net
//! (a missed uevent, a netlink buffer overrun); it is not how changes are normally seen.

use std::time::Duration;

use tokio::sync::watch;

use super::Change;
use crate::host::uevent::{UeventSocket, is_passthrough_relevant};

/// Quiet gap that ends a burst of uevents.
pub const DEBOUNCE: Duration = Duration::from_millis(15);

fn bump(tx: &watch::Sender<Change>, reason: String) {
    tx.send_modify(|c| {
        c.seq += 1;
        c.reason = reason;
    });
}

/// Runs until `shutdown` turns true. `rescan` of zero disables the timer.
pub async fn watch(
    tx: watch::Sender<Change>,
    mut shutdown: watch::Receiver<bool>,
    rescan: Duration,
) {
    let socket = match UeventSocket::open().and_then(UeventSocket::into_async) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen to kernel uevents (in a pod: hostNetwork is needed); relying on the rescan timer");
            None
        }
    };
    // Zero disables the timer: a year is "never" for a daemon.
    let period = if rescan.is_zero() {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        rescan
    };
    let timer = tokio::time::sleep(period);
    tokio::pin!(timer);
    let mut pending: Option<String> = None;
    loop {
        let quiet = tokio::time::sleep(DEBOUNCE);
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = &mut timer => {
                bump(&tx, "rescan timer".to_string());
                timer.as_mut().reset(tokio::time::Instant::now() + period);
            }
            _ = quiet, if pending.is_some() => {
                if let Some(reason) = pending.take() {
                    tracing::debug!(%reason, "devices changed");
                    bump(&tx, reason);
                }
            }
            ready = async {
                match &socket {
                    Some(s) => s.readable().await,
                    None => std::future::pending().await,
                }
            } => {
                let Ok(mut guard) = ready else { continue };
                loop {
                    match guard.get_inner().recv() {
                        Ok(Some(ev)) if is_passthrough_relevant(&ev) => {
                            let reason = format!("uevent {} {} {}", ev.subsystem().unwrap_or("?"), ev.action, ev.devpath);
                            pending.get_or_insert(reason);
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            // ENOBUFS: the kernel dropped uevents; rescan to be safe.
                            tracing::warn!(error = %e, "uevent socket error; rescanning");
                            pending.get_or_insert_with(|| "uevent overrun".to_string());
                            break;
                        }
                    }
                }
            }
        }
    }
}
