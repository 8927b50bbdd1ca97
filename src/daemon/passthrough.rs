//! The passthrough service: on start and on every device change, scan the host, write
//! the CDI spec, then update the device plugin. The spec is written first, so kubelet
//! is never offered an ID the runtime cannot resolve in CDI.

use crate::cdi;
use crate::config::PluginMode;
use crate::deviceplugin::PluginManager;
use crate::deviceplugin::devices::{self, Discovery};

use super::status::{self, PassthroughStatus};
use super::{Context, DaemonError};

/// How soon a failed scan is tried again.
const SCAN_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

fn fail(message: impl std::fmt::Display) -> DaemonError {
    DaemonError::Service {
        service: "passthrough".to_string(),
        message: message.to_string(),
    }
}

/// One pass: scan and write the CDI spec. Errors are logged; the last good state stays
/// (a device this scan could not read is carried over from `previous`).
pub fn scan_and_write(ctx: &Context, previous: Option<&Discovery>) -> Option<Discovery> {
    let cfg = &ctx.config.device_plugin;
    let mut scan = match devices::discover(&ctx.host, &ctx.config.matching, cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "device scan failed; keeping the last state, retrying");
            return None;
        }
    };
    if let Some(prev) = previous {
        for id in devices::keep_unreadable(prev, &mut scan) {
            tracing::warn!(id = %id, "device unreadable in this scan; keeping its last state");
        }
    }
    for s in &scan.skipped {
        match s.address {
            Some(a) => tracing::info!(address = %a, reason = %s.reason, "not advertised"),
            None => tracing::info!(reason = %s.reason, "not advertised"),
        }
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
        Some(PluginManager::start(&ctx.host, &cfg, ctx.shutdown.clone()).map_err(fail)?)
    } else {
        None
    };
    let mut last_status: Option<PassthroughStatus> = None;
    let mut last_scan: Option<Discovery> = None;
    loop {
        let change = ctx.changes.borrow_and_update().clone();
        tracing::debug!(seq = change.seq, reason = %change.reason, "rescanning devices");
        let scanned = scan_and_write(&ctx, last_scan.as_ref());
        let failed = scanned.is_none();
        if let Some(scan) = scanned {
            if let Some(p) = plugins.as_mut() {
                p.update(&scan);
            }
            let now = PassthroughStatus::from_scan(&scan);
            match status::publish(&ctx.host, now.clone(), last_status.as_ref()) {
                Ok(s) => last_status = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the status file");
                    last_status = None;
                }
            }
            last_scan = Some(scan);
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
