//! Supervision mode (b): drive `qgsd.service` over D-Bus (org.freedesktop.systemd1)
//! instead of spawning QGS. The same liveness probe and schedule as child mode; the
//! actions are `RestartUnit(name, "replace")`.

use tokio::sync::watch;
use tokio::time::Instant;

use super::DcapError;
use super::qgs;
use super::supervisor::{Reason, Settings, State, wait_or_shutdown};
use crate::host::HostRoot;
use crate::host::systemd::{ManagerProxy, UnitProxy};

pub use crate::host::systemd::SYSTEM_BUS_SOCKET;

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
}

/// A connection to systemd.
pub struct Driver {
    conn: zbus::Connection,
}

impl Driver {
    /// Connects to a bus address (`unix:path=...`).
    pub async fn connect(address: &str) -> Result<Self, DcapError> {
        let conn = zbus::connection::Builder::address(address)?.build().await?;
        Ok(Driver { conn })
    }

    /// Connects to the host's system bus through the host root.
    pub(crate) async fn connect_host(host: &HostRoot) -> Result<Self, DcapError> {
        Self::connect(&crate::host::systemd::bus_address(host)?).await
    }

    async fn unit(&self, name: &str) -> Result<UnitProxy<'_>, DcapError> {
        let path = ManagerProxy::new(&self.conn).await?.load_unit(name).await?;
        Ok(UnitProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?)
    }

    pub async fn state(&self, name: &str) -> Result<UnitState, DcapError> {
        let u = self.unit(name).await?;
        Ok(UnitState {
            load: u.load_state().await?,
            active: u.active_state().await?,
            sub: u.sub_state().await?,
        })
    }

    /// `RestartUnit(name, "replace")`; returns the job path.
    pub(crate) async fn restart(&self, name: &str) -> Result<String, DcapError> {
        let job = ManagerProxy::new(&self.conn)
            .await?
            .restart_unit(name, "replace")
            .await?;
        Ok(job.to_string())
    }
}

/// systemd mode: probe QGS and the unit; restart the unit when it is not active, when
/// probes keep failing, or on schedule.
pub async fn supervise(
    host: HostRoot,
    s: Settings,
    driver: Driver,
    mut shutdown: watch::Receiver<bool>,
    state: watch::Sender<State>,
) -> Result<(), DcapError> {
    let mut deadline = s.restart_every.map(|d| Instant::now() + d);
    let mut failures = 0u32;
    loop {
        if wait_or_shutdown(s.probe_interval, &mut shutdown).await {
            return Ok(());
        }
        let mut reason = None;
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            reason = Some(Reason::Scheduled);
        }
        match driver.state(&s.unit).await {
            Ok(u)
                if u.active == "active" || u.active == "activating" || u.active == "reloading" => {}
            Ok(u) => {
                tracing::warn!(unit = %s.unit, active = %u.active, sub = %u.sub, "QGS unit not active");
                reason.get_or_insert(Reason::UnitNotActive);
            }
            Err(e) => {
                tracing::warn!(unit = %s.unit, error = %e, "cannot read the QGS unit state");
                state.send_modify(|st| st.last_error = Some(e.to_string()));
            }
        }
        if reason.is_none() {
            match qgs::platform_info(&host, &s.endpoint, s.probe_timeout).await {
                Ok(_) => {
                    failures = 0;
                    state.send_modify(|st| {
                        st.healthy = true;
                        st.probes_ok += 1;
                        st.last_error = None;
                    });
                }
                Err(e) if super::supervisor::busy_waiting_on_pccs(&s, &e).await => {
                    state.send_modify(|st| st.last_error = Some(e.to_string()));
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "QGS liveness probe failed");
                    state.send_modify(|st| {
                        st.healthy = false;
                        st.probes_failed += 1;
                        st.last_error = Some(e.to_string());
                    });
                    if failures >= s.probe_failures {
                        reason = Some(Reason::ProbeFailed);
                    }
                }
            }
        }
        if let Some(r) = reason {
            match driver.restart(&s.unit).await {
                Ok(job) => {
                    tracing::info!(unit = %s.unit, ?r, %job, "restarted QGS unit");
                    failures = 0;
                    deadline = s.restart_every.map(|d| Instant::now() + d);
                    state.send_modify(|st| {
                        st.starts += 1;
                        st.last_reason = Some(r);
                        st.healthy = false;
                    });
                }
                Err(e) => {
                    tracing::error!(unit = %s.unit, error = %e, "RestartUnit failed");
                    state.send_modify(|st| st.last_error = Some(e.to_string()));
                }
            }
        }
    }
}
