//! `/run/cchost/passthrough.json`: what `cchost run` advertises and what it skipped, in
//! a machine-readable form, rewritten (atomically) only when it changes and removed
//! when the daemon stops. Its `skipped_unreadable` count is the metric for functions
//! the plugin could not read: a scraper (node-exporter's textfile collector, a script)
//! reads it from here; `cchost check` reports the same faults from its own scan.

use serde::Serialize;

use crate::host::{HostError, HostRoot};
use crate::inventory::passthrough::{Discovery, Skipped, VfioMode};

/// Where `cchost run` keeps its status (under the host root).
pub(crate) const STATUS_FILE: &str = "/run/cchost/passthrough.json";

/// `schema` of the file; a breaking change gets a new value.
pub(crate) const SCHEMA: &str = "cchost.passthrough/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ResourceStatus {
    pub resource: String,
    pub devices: usize,
    pub healthy: usize,
    /// `"<id>: <reason>"` for each unhealthy device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unhealthy: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PassthroughStatus {
    pub schema: &'static str,
    pub mode: VfioMode,
    pub resources: Vec<ResourceStatus>,
    /// Functions skipped in the last scan because a sysfs file could not be read or
    /// parsed (each is in `skipped` with its `unreadable.file`).
    pub skipped_unreadable: usize,
    /// Every matched function that is not advertised, and why.
    pub skipped: Vec<Skipped>,
}

impl PassthroughStatus {
    pub(crate) fn from_scan(scan: &Discovery) -> Self {
        let resources = scan
            .resources()
            .into_iter()
            .map(|resource| {
                let devs: Vec<_> = scan
                    .devices
                    .iter()
                    .filter(|d| d.resource == resource)
                    .collect();
                let unhealthy: Vec<String> = devs
                    .iter()
                    .filter_map(|d| match &d.health {
                        crate::inventory::passthrough::Health::Unhealthy(r) => {
                            Some(format!("{}: {r}", d.id))
                        }
                        crate::inventory::passthrough::Health::Healthy => None,
                    })
                    .collect();
                ResourceStatus {
                    devices: devs.len(),
                    healthy: devs.len() - unhealthy.len(),
                    unhealthy,
                    resource,
                }
            })
            .collect();
        PassthroughStatus {
            schema: SCHEMA,
            mode: scan.mode,
            resources,
            skipped_unreadable: scan.unreadable().count(),
            skipped: scan.skipped.clone(),
        }
    }
}

/// Writes the status file when it differs from `last` (what this process wrote
/// before); returns what is now on disk.
pub(crate) fn publish(
    host: &HostRoot,
    status: PassthroughStatus,
    last: Option<&PassthroughStatus>,
) -> Result<PassthroughStatus, HostError> {
    if last == Some(&status) {
        return Ok(status);
    }
    let mut json = serde_json::to_vec_pretty(&status).unwrap_or_default();
    json.push(b'\n');
    host.write_atomic(STATUS_FILE, &json, 0o644)?;
    Ok(status)
}

/// Removes the file on shutdown: it describes a running daemon.
pub fn remove(host: &HostRoot) {
    if let Err(e) = host.remove_file(STATUS_FILE) {
        tracing::warn!(error = %e, "cannot remove the status file");
    }
}
