//! NVIDIA's host daemons that hold GPUs open on a host with the driver pre-installed
//! (`nvidia-persistenced`, `nvidia-fabricmanager`): which units they are, stopping them
//! over systemd's D-Bus API before a bind, and starting them again on undo
//! (docs/facts/systemd-dbus.md).
//!
//! The bus sits behind the small [`Units`] trait so that the plan and apply layers can be
//! tested without one; [`SystemBus`] is the real client. A stop is journaled (kind
//! `systemd.stop`) before it is asked for, so `cchost undo` (and the recovery of an
//! interrupted run) starts exactly the units cchost stopped.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;
use crate::host::systemd::{ManagerProxy, UnitProxy};
use crate::journal::{Entry, Journal, JournalError, RestoreError, Restorer};

/// The journal kind of a stopped unit.
pub const STOP_KIND: &str = "systemd.stop";

/// How long a stop or start may take by default (config `[vfio] stop_services_timeout_ms`).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a unit's `ActiveState` is read while waiting for its job.
const POLL: Duration = Duration::from_millis(50);

/// The systemd unit that runs a known NVIDIA host daemon, from the process name in
/// `/proc/<pid>/comm` (cut to 15 characters by the kernel, proc(5)).
pub(crate) fn unit_of_comm(comm: &str) -> Option<&'static str> {
    match comm {
        // Keeps every GPU's /dev/nvidiaN open.
        "nvidia-persiste" | "nvidia-persistenced" => Some("nvidia-persistenced.service"),
        // Fabric Manager holds the NVSwitches' (and GPUs') nodes on HGX boards.
        "nv-fabricmanage" | "nv-fabricmanager" => Some("nvidia-fabricmanager.service"),
        _ => None,
    }
}

/// Why a unit could not be stopped or started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("no system bus at {address}: {reason}")]
    NoBus { address: String, reason: String },
    #[error(
        "{unit}: systemd refused ({reason}); cchost needs root (or a polkit rule) to manage units"
    )]
    Denied { unit: String, reason: String },
    #[error("{unit}: still {state} after {waited_ms} ms")]
    Timeout {
        unit: String,
        state: String,
        waited_ms: u64,
    },
    #[error("{unit}: {reason}")]
    Failed { unit: String, reason: String },
}

impl UnitError {
    /// True when nothing can have been changed (no bus, or systemd said no).
    pub fn untouched(&self) -> bool {
        matches!(self, UnitError::NoBus { .. } | UnitError::Denied { .. })
    }
}

/// systemd's units, as much as cchost needs of them.
pub trait Units {
    /// The unit's `ActiveState` (`active`, `inactive`, `failed`, `activating`, ...).
    fn active_state(&self, unit: &str) -> Result<String, UnitError>;
    /// Stops the unit and waits until it is `inactive` or `failed`.
    fn stop(&self, unit: &str) -> Result<(), UnitError>;
    /// Starts the unit and waits until it is `active`.
    fn start(&self, unit: &str) -> Result<(), UnitError>;
}

/// Stopped, as far as a bind is concerned: no process of the unit is left.
pub(crate) fn is_stopped(state: &str) -> bool {
    state == "inactive" || state == "failed"
}

/// The real client: systemd's manager on a bus (`StopUnit`/`StartUnit` with mode
/// `replace`, then the unit's `ActiveState` polled until the job's outcome shows).
#[derive(Debug, Clone)]
pub struct SystemBus {
    address: Result<String, String>,
    timeout: Duration,
}

impl SystemBus {
    /// The host's system bus (its socket under the host root).
    pub fn for_host(host: &HostRoot, timeout: Duration) -> Self {
        SystemBus {
            address: crate::host::systemd::bus_address(host).map_err(|e| e.to_string()),
            timeout,
        }
    }

    /// A bus at an explicit address (`unix:path=...`).
    pub fn at(address: &str, timeout: Duration) -> Self {
        SystemBus {
            address: Ok(address.to_string()),
            timeout,
        }
    }

    /// Runs one exchange on a runtime of its own, in a thread of its own (callers may be
    /// inside another tokio runtime, or none), bounded by the timeout plus a margin.
    fn exchange<T: Send>(
        &self,
        unit: &str,
        f: impl AsyncFnOnce(&zbus::Connection) -> Result<T, UnitError> + Send,
    ) -> Result<T, UnitError> {
        let address = match &self.address {
            Ok(a) => a.clone(),
            Err(reason) => {
                return Err(UnitError::NoBus {
                    address: crate::host::systemd::SYSTEM_BUS_SOCKET.to_string(),
                    reason: reason.clone(),
                });
            }
        };
        let limit = self.timeout + Duration::from_secs(5);
        let no_bus = |reason: String| UnitError::NoBus {
            address: address.clone(),
            reason,
        };
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| no_bus(format!("no runtime: {e}")))?;
                rt.block_on(async {
                    let conn = tokio::time::timeout(limit, async {
                        zbus::connection::Builder::address(address.as_str())?
                            .build()
                            .await
                    })
                    .await
                    .map_err(|_| no_bus("no answer".into()))?
                    .map_err(|e| no_bus(e.to_string()))?;
                    match tokio::time::timeout(limit, f(&conn)).await {
                        Ok(r) => r,
                        Err(_) => Err(UnitError::Failed {
                            unit: unit.to_string(),
                            reason: format!(
                                "systemd did not answer within {} ms",
                                limit.as_millis()
                            ),
                        }),
                    }
                })
            });
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// A D-Bus error as a [`UnitError`]: access refusals apart from the rest.
fn classify(unit: &str, e: zbus::Error) -> UnitError {
    let denied = match &e {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.AccessDenied"
                | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
        ),
        zbus::Error::FDO(f) => matches!(
            **f,
            zbus::fdo::Error::AccessDenied(_)
                | zbus::fdo::Error::InteractiveAuthorizationRequired(_)
        ),
        _ => false,
    };
    if denied {
        UnitError::Denied {
            unit: unit.to_string(),
            reason: e.to_string(),
        }
    } else {
        UnitError::Failed {
            unit: unit.to_string(),
            reason: e.to_string(),
        }
    }
}

async fn state_of(conn: &zbus::Connection, unit: &str) -> Result<String, UnitError> {
    let c = |e| classify(unit, e);
    let path = ManagerProxy::new(conn)
        .await
        .map_err(c)?
        .load_unit(unit)
        .await
        .map_err(c)?;
    UnitProxy::builder(conn)
        .path(path)
        .map_err(c)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(c)?
        .active_state()
        .await
        .map_err(c)
}

/// Polls `ActiveState` until `done` says so, `fail` says the job failed, or the time is up.
async fn wait_for(
    conn: &zbus::Connection,
    unit: &str,
    timeout: Duration,
    done: fn(&str) -> bool,
    fail: fn(&str) -> bool,
) -> Result<(), UnitError> {
    let start = Instant::now();
    loop {
        let state = state_of(conn, unit).await?;
        if done(&state) {
            return Ok(());
        }
        if fail(&state) {
            return Err(UnitError::Failed {
                unit: unit.to_string(),
                reason: format!("the unit went {state}"),
            });
        }
        if start.elapsed() >= timeout {
            return Err(UnitError::Timeout {
                unit: unit.to_string(),
                state,
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Units for SystemBus {
    fn active_state(&self, unit: &str) -> Result<String, UnitError> {
        self.exchange(unit, async |conn| state_of(conn, unit).await)
    }

    fn stop(&self, unit: &str) -> Result<(), UnitError> {
        self.job(unit, Job::Stop)
    }

    fn start(&self, unit: &str) -> Result<(), UnitError> {
        self.job(unit, Job::Start)
    }
}

/// The two jobs cchost asks systemd for, each queued with mode "replace"
/// (docs/facts/systemd-dbus.md).
#[derive(Clone, Copy)]
enum Job {
    Stop,
    Start,
}

impl SystemBus {
    /// Queues the job, then waits until `ActiveState` shows it done (`inactive` or
    /// `failed` after a stop, `active` after a start; `failed` after a start is an error).
    fn job(&self, unit: &str, job: Job) -> Result<(), UnitError> {
        let timeout = self.timeout;
        self.exchange(unit, async |conn| {
            let c = |e| classify(unit, e);
            let manager = ManagerProxy::new(conn).await.map_err(c)?;
            match job {
                Job::Stop => manager.stop_unit(unit, "replace").await.map_err(c)?,
                Job::Start => manager.start_unit(unit, "replace").await.map_err(c)?,
            };
            match job {
                Job::Stop => wait_for(conn, unit, timeout, is_stopped, |_| false).await,
                Job::Start => {
                    wait_for(conn, unit, timeout, |s| s == "active", |s| s == "failed").await
                }
            }
        })
    }
}

/// The journal data of a stop: the unit to start again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStop {
    pub unit: String,
}

/// Why a journaled stop did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(
        "{stop}; starting it again failed too ({start}): the journal keeps it for `cchost undo`"
    )]
    Stranded { stop: UnitError, start: UnitError },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Stops `unit` when it is running; returns whether it was. The journal entry is on
/// disk before the stop is asked for. A stop that fails leaves the unit running (started
/// again when it got as far as stopping) and no entry behind.
pub(crate) fn stop_journaled(
    journal: &mut Journal,
    units: &dyn Units,
    unit: &str,
) -> Result<bool, ServiceError> {
    if is_stopped(&units.active_state(unit)?) {
        return Ok(false);
    }
    let data = UnitStop {
        unit: unit.to_string(),
    };
    let seq = journal.begin(STOP_KIND, unit, &data, &data)?;
    match units.stop(unit) {
        Ok(()) => {
            journal.applied(seq)?;
            Ok(true)
        }
        Err(e) if e.untouched() => {
            journal.forget(seq)?;
            Err(e.into())
        }
        Err(e) => match start_if_down(units, unit) {
            Ok(()) => {
                journal.forget(seq)?;
                Err(e.into())
            }
            Err(start) => {
                journal.applied(seq)?;
                Err(ServiceError::Stranded { stop: e, start })
            }
        },
    }
}

/// Starts a unit again when it is not running (after a stop that went wrong).
fn start_if_down(units: &dyn Units, unit: &str) -> Result<(), UnitError> {
    match units.active_state(unit) {
        Ok(s) if s == "active" => Ok(()),
        _ => units.start(unit),
    }
}

/// Starts a unit this run stopped and forgets its entry (the bind did not go ahead).
pub(crate) fn start_again(
    journal: &mut Journal,
    units: &dyn Units,
    unit: &str,
) -> Result<(), String> {
    units.start(unit).map_err(|e| e.to_string())?;
    match journal.find(STOP_KIND, unit).map(|e| e.seq) {
        Some(seq) => journal.forget(seq).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Restores `systemd.stop` entries: starts the unit again.
#[derive(Clone, Copy)]
pub struct ServiceRestorer {
    /// The bus to use for a host.
    pub connect: fn(&HostRoot) -> Box<dyn Units>,
}

impl std::fmt::Debug for ServiceRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceRestorer")
    }
}

/// The host's system bus with the default timeout.
pub(crate) fn host_bus(host: &HostRoot) -> Box<dyn Units> {
    Box::new(SystemBus::for_host(host, DEFAULT_TIMEOUT))
}

impl ServiceRestorer {
    /// Over the host's system bus.
    pub const SYSTEM: ServiceRestorer = ServiceRestorer { connect: host_bus };
}

impl Restorer for ServiceRestorer {
    fn kind(&self) -> &str {
        STOP_KIND
    }

    fn restore(&self, host: &HostRoot, entry: &Entry) -> Result<(), RestoreError> {
        let stop: UnitStop = entry.restore_as()?;
        let units = (self.connect)(host);
        units.start(&stop.unit).map_err(|e| {
            let msg = format!("starting {} again: {e}", stop.unit);
            if e.untouched() {
                RestoreError::refused(msg)
            } else {
                RestoreError::new(msg)
            }
        })
    }
}

#[cfg(test)]
mod tests;
