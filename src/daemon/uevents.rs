//! Kernel uevents -> "devices changed" notifications.
//!
//! Also watched with inotify: `/dev/vfio` and `/dev/vfio/devices` under the host root,
//! so a vfio node that vanishes or comes back is seen even without a uevent (a node
//! removed by hand, a `/dev` that is a bind mount), as NVIDIA's plugins do.
//!
//! A driver bind on eight GPUs is a burst of dozens of uevents; they are folded into
//! one notification after a short quiet gap. A slow timer rescans as a safety net
//! (a missed uevent, a netlink buffer overrun); it is not how changes are normally seen.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Change;
use crate::config::EventSource;
use crate::host::HostRoot;
use crate::host::device_events;
use crate::host::uevent::is_passthrough_relevant;
use crate::inventory::passthrough::VFIO_DEVICES_DIR;

/// Directories of vfio nodes whose entries are watched.
const NODE_DIRS: [&str; 2] = ["/dev/vfio", VFIO_DEVICES_DIR];

/// Starts an inotify watch task for every node directory that exists and is not
/// watched yet (vfio creates `/dev/vfio` only when it loads). A task ends when its
/// directory goes away.
fn ensure_node_watches(
    host: &HostRoot,
    watches: &mut BTreeMap<&'static str, JoinHandle<()>>,
    tx: &mpsc::UnboundedSender<String>,
) {
    for dir in NODE_DIRS {
        if watches.get(dir).is_some_and(|t| !t.is_finished()) {
            continue;
        }
        let Ok(w) = host.watch_dir(dir).and_then(|w| {
            w.into_async()
                .map_err(|e| crate::host::HostError::io(dir, e))
        }) else {
            continue;
        };
        let tx = tx.clone();
        watches.insert(
            dir,
            tokio::spawn(async move {
                loop {
                    let Ok(mut guard) = w.readable().await else {
                        return;
                    };
                    match guard.get_inner().read() {
                        Ok(events) if events.is_empty() => guard.clear_ready(),
                        Ok(events) => {
                            for ev in events {
                                if ev == crate::host::unix::DirEvent::DirGone {
                                    let _ = tx.send(format!("{dir} is gone"));
                                    return;
                                }
                                if tx.send(format!("{dir}: {ev:?}")).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(_) => return,
                    }
                }
            }),
        );
    }
}

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
    host: HostRoot,
    tx: watch::Sender<Change>,
    mut shutdown: watch::Receiver<bool>,
    rescan: Duration,
    source: EventSource,
) {
    let (node_tx, mut node_rx) = mpsc::unbounded_channel();
    let mut node_watches = BTreeMap::new();
    ensure_node_watches(&host, &mut node_watches, &node_tx);
    let opened = match source {
        EventSource::Netlink => device_events::open_netlink(),
        EventSource::Udev => device_events::open_udev(),
    };
    let socket = match opened.and_then(|s| s.into_async()) {
        Ok(s) => {
            tracing::debug!(source = s.get_ref().0.name(), "listening to device events");
            Some(s)
        }
        Err(e) => {
            tracing::warn!(error = %e, ?source, "cannot listen to device events (in a pod: hostNetwork is needed); relying on the rescan timer");
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
            _ = shutdown.wait_for(|s| *s) => {
                for t in node_watches.values() {
                    t.abort();
                }
                return;
            }
            Some(reason) = node_rx.recv() => {
                pending.get_or_insert(reason);
            }
            _ = &mut timer => {
                bump(&tx, "rescan timer".to_string());
                timer.as_mut().reset(tokio::time::Instant::now() + period);
            }
            _ = quiet, if pending.is_some() => {
                if let Some(reason) = pending.take() {
                    tracing::debug!(%reason, "devices changed");
                    ensure_node_watches(&host, &mut node_watches, &node_tx);
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
                    match guard.get_inner().0.recv() {
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
                            tracing::warn!(error = %e, "device event source error; rescanning");
                            pending.get_or_insert_with(|| "uevent overrun".to_string());
                            break;
                        }
                    }
                }
            }
        }
    }
}
