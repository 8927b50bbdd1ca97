//! The passthrough service: on start and on every device change, scan the host, write
//! the CDI spec, then update the device plugin. The spec is written first, so kubelet
//! is never offered an ID the runtime cannot resolve in CDI.
//!
//! The scan, the CDI write (with fsync) and the status file write run on a blocking
//! thread (`spawn_blocking`), never on the runtime's thread, which keeps answering
//! Allocate and ListAndWatch meanwhile (docs/performance.md).

use crate::cdi;
use crate::config::PluginMode;
use crate::deviceplugin::PluginManager;
use crate::inventory::passthrough::{self, Discovery};

use std::collections::BTreeSet;

use super::status::{self, PassthroughStatus};
use super::{Context, DaemonError};
use crate::observe::events;
use crate::observe::metrics::METRICS;

/// How soon a failed scan is tried again.
const SCAN_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

fn fail(message: impl std::fmt::Display) -> DaemonError {
    DaemonError::Service {
        service: "passthrough".to_string(),
        message: message.to_string(),
    }
}

/// One pass: scan and write the CDI spec. Errors are logged; the last good state stays
/// (a device this scan could not read is carried over from `previous`: issue 13 item 5).
pub(crate) fn scan_and_write(ctx: &Context, previous: Option<&Discovery>) -> Option<Discovery> {
    let cfg = &ctx.config.device_plugin;
    let inv = crate::inventory::gpu::discover_gpus(&ctx.host, &ctx.config.matching);
    let mut scan = match passthrough::discover_in(&ctx.host, &inv, cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "device scan failed; keeping the last state, retrying");
            return None;
        }
    };
    if let Some(prev) = previous {
        for id in passthrough::keep_unreadable(prev, &mut scan) {
            tracing::warn!(id = %id, "device unreadable in this scan; keeping its last state");
        }
    }
    if !ctx.config.cc.modes.is_empty() {
        crate::inventory::cc_split::apply(&mut scan, &cc_split(ctx, &inv));
    }
    for s in &scan.skipped {
        match s.address {
            Some(a) => tracing::info!(address = %a, reason = %s.reason, "not advertised"),
            None => tracing::info!(reason = %s.reason, "not advertised"),
        }
    }
    let kinds: std::collections::BTreeSet<String> = scan.resources().into_iter().collect();
    let ids: std::collections::BTreeSet<String> =
        scan.devices.iter().map(|d| d.id.clone()).collect();
    for c in cdi::foreign::conflicts(&ctx.host, &cfg.cdi_dir, &kinds, &ids) {
        tracing::error!(
            file = %c.path.display(),
            kind = %c.kind,
            "CONFLICTING CDI SPEC: {c}; the runtime cannot resolve these devices while it is there: remove the file"
        );
    }
    match cdi::sync(&ctx.host, &cfg.cdi_dir, &scan) {
        Ok(r) => {
            if !r.written.is_empty() || !r.removed.is_empty() {
                tracing::info!(
                    written = r.written.len(),
                    removed = r.removed.len(),
                    "CDI spec updated"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot write the CDI spec"),
    }
    Some(scan)
}

/// The CC split of a mixed node (`[[cc.modes]]`): the configured modes resolved on this
/// host, and each GPU's firmware mode read through the cache the labeler shares (read
/// now where that is safe, else the last value read: src/labels/cc_mode.rs).
fn cc_split(
    ctx: &Context,
    inv: &crate::inventory::GpuInventory,
) -> crate::inventory::cc_split::CcSplit {
    use crate::inventory::facts::{GpuFacts, NodeFacts};
    let slots = crate::inventory::cc_split::gpu_slots(inv);
    let wanted =
        crate::config::cc_modes::resolve(&ctx.config.cc.modes, &slots).map_err(|e| e.to_string());
    if let Err(e) = &wanted {
        tracing::error!(error = %e, "cc.modes does not fit this host's GPUs; no GPU is served");
    }
    let mut facts = NodeFacts {
        gpus: inv
            .gpus()
            .map(|d| GpuFacts {
                address: d.address.to_string(),
                cc_capable: d.cc_capable,
                ..GpuFacts::default()
            })
            .collect(),
        ..NodeFacts::default()
    };
    let query = crate::labels::cc_mode::live_query(&ctx.host);
    match ctx.cc_modes.lock() {
        Ok(mut cache) => {
            cache.fill(&ctx.host, &ctx.config.matching, &mut facts, &query);
        }
        Err(_) => tracing::error!("CC mode cache poisoned; GPU modes count as unread"),
    }
    let read = facts
        .gpus
        .iter()
        .filter_map(|g| Some((g.address.parse().ok()?, g.cc_mode?)))
        .collect();
    crate::inventory::cc_split::CcSplit {
        wanted,
        non_cc_resource: ctx.config.device_plugin.non_cc_gpu_resource.clone(),
        read,
    }
}

/// One pass off the runtime thread: scan, write the CDI spec, and the status file when
/// it changed. Returns the scan (None when it failed) and what the status file now says.
fn pass(
    ctx: &Context,
    last: Option<PassthroughStatus>,
    previous: Option<&Discovery>,
) -> (Option<Discovery>, Option<PassthroughStatus>) {
    #[cfg(test)]
    tests::record_pass_thread();
    let Some(scan) = scan_and_write(ctx, previous) else {
        return (None, last);
    };
    let now = PassthroughStatus::from_scan(&scan);
    let written = match status::publish(&ctx.host, now, last.as_ref()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the status file");
            None
        }
    };
    (Some(scan), written)
}

/// Metrics of one scan, and Node events for devices that newly turned unhealthy or
/// unreadable (`raised` remembers what was already raised).
fn observe_scan(scan: &Discovery, raised: &mut BTreeSet<String>) {
    let st = PassthroughStatus::from_scan(scan);
    let served: BTreeSet<&str> = st.resources.iter().map(|r| r.resource.as_str()).collect();
    METRICS
        .devices_advertised
        .retain(|k| k.first().is_some_and(|r| served.contains(r.as_str())));
    METRICS
        .devices_unhealthy
        .retain(|k| k.first().is_some_and(|r| served.contains(r.as_str())));
    for r in &st.resources {
        METRICS
            .devices_advertised
            .set(&[&r.resource], r.devices as f64);
        METRICS
            .devices_unhealthy
            .set(&[&r.resource], (r.devices - r.healthy) as f64);
    }
    METRICS
        .devices_skipped
        .set(&["unreadable"], st.skipped_unreadable as f64);
    METRICS.devices_skipped.set(
        &["other"],
        st.skipped.len().saturating_sub(st.skipped_unreadable) as f64,
    );
    let mut now = BTreeSet::new();
    for r in &st.resources {
        for u in &r.unhealthy {
            let key = format!("{}: {u}", r.resource);
            if !raised.contains(&key) {
                events::raise(
                    "DeviceUnhealthy",
                    "AdvertiseDevices",
                    format!("cchost device plugin: {key} (kubelet stops allocating it)"),
                );
            }
            now.insert(key);
        }
    }
    for s in scan.unreadable() {
        let key = format!("unreadable: {}", s.reason);
        if !raised.contains(&key) {
            events::raise(
                "DeviceUnreadable",
                "AdvertiseDevices",
                format!(
                    "cchost device plugin skips a PCI function it cannot read: {}",
                    s.reason
                ),
            );
        }
        now.insert(key);
    }
    *raised = now;
}

pub async fn run(mut ctx: Context) -> Result<(), DaemonError> {
    let cfg = ctx.config.device_plugin.clone();
    let serve = match cfg.mode {
        PluginMode::Off => false,
        PluginMode::On => {
            ctx.host.create_dir_all(&cfg.socket_dir).map_err(fail)?;
            true
        }
        PluginMode::Auto => {
            let there = ctx.host.kind_followed(&cfg.socket_dir) == Some(crate::host::NodeKind::Dir);
            if !there {
                tracing::info!(dir = %cfg.socket_dir, "no kubelet device-plugin directory: device plugin off (CDI spec still written)");
            }
            there
        }
    };
    let mut plugins = if serve {
        Some(
            PluginManager::start(&ctx.host, &cfg, ctx.shutdown.clone())
                .map_err(fail)?
                .with_health(ctx.health.clone()),
        )
    } else {
        None
    };
    let mut last_status: Option<PassthroughStatus> = None;
    let mut raised = BTreeSet::new();
    let mut first = true;
    let mut last_scan: Option<Discovery> = None;
    loop {
        let change = ctx.changes.borrow_and_update().clone();
        tracing::debug!(seq = change.seq, reason = %change.reason, "rescanning devices");
        let job_ctx = ctx.clone();
        let last = last_status.take();
        let previous = last_scan.clone();
        let (scan, written) =
            tokio::task::spawn_blocking(move || pass(&job_ctx, last, previous.as_ref()))
                .await
                .map_err(|e| fail(format!("device scan panicked: {e}")))?;
        last_status = written;
        let failed = scan.is_none();
        if let Some(scan) = scan {
            if let Some(p) = plugins.as_mut() {
                p.update(&scan);
            }
            observe_scan(&scan, &mut raised);
            last_scan = Some(scan);
        }
        if first {
            // Serving from the first pass on; each endpoint is a health part of its
            // own (deviceplugin <resource>).
            ctx.serving();
            first = false;
        }
        // A scan that failed is tried again soon, not only at the next device event.
        tokio::select! {
            _ = ctx.shutdown.wait_for(|s| *s) => break,
            r = ctx.changes.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(SCAN_RETRY), if failed => {
                tracing::info!("retrying the device scan");
            }
        }
    }
    // The CDI spec stays as it is: every write was atomic, and it still describes the
    // devices that running pods use. Endpoints remove their sockets; the status file
    // describes a running daemon and goes.
    status::remove(&ctx.host);
    if let Some(p) = plugins.take() {
        for e in p.join().await {
            tracing::error!(error = %e, "device plugin ended with an error");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;

    use tokio::sync::watch;

    use super::*;
    use crate::config::Config;
    use crate::daemon::Change;
    use crate::host::HostRoot;
    use crate::observe::health::{Health, State};

    static PASS_THREADS: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());

    pub(super) fn record_pass_thread() {
        if let Ok(mut t) = PASS_THREADS.lock() {
            t.push(std::thread::current().id());
        }
    }

    /// Issue 13 item 11: the scan, the CDI write and the status write never run on the
    /// runtime's (only) thread, which must stay free for Allocate.
    #[tokio::test(flavor = "current_thread")]
    async fn scans_and_writes_run_off_the_runtime_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.device_plugin.mode = PluginMode::Off;
        let (stop, shutdown) = watch::channel(false);
        let (_changes_tx, changes) = watch::channel(Change {
            seq: 0,
            reason: "start".into(),
        });
        let health = Arc::new(Health::default());
        let ctx = Context {
            host: HostRoot::new(tmp.path()).unwrap(),
            config: Arc::new(cfg),
            shutdown,
            changes,
            health: health.clone(),
            name: "passthrough".into(),
            cc_modes: Default::default(),
            own_node: Default::default(),
        };
        let runtime_thread = std::thread::current().id();
        let mut seen = health.subscribe();
        let task = tokio::spawn(run(ctx));
        while !health
            .readiness()
            .parts
            .contains(&("passthrough".to_string(), State::Serving))
        {
            seen.changed().await.unwrap();
        }
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
        let threads = PASS_THREADS.lock().unwrap().clone();
        assert!(!threads.is_empty(), "a pass ran");
        assert!(
            threads.iter().all(|t| *t != runtime_thread),
            "a pass ran on the runtime thread"
        );
    }
}
