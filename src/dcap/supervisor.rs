//! Keeping QGS running.
//!
//! - **child** (DaemonSet / standalone): cchost runs `qgs --no-daemon -n=N` itself with
//!   `QCNL_CONF_PATH` set, prepares `/var/run/tdx-qgs` (a stale socket stops old QGS
//!   from starting), restarts it with backoff when it exits or its liveness probe
//!   (GET_PLATFORM_INFO) keeps failing, and optionally on a schedule: QGS is known to
//!   stop producing quotes after a few days (docs/facts/dcap.md#qgs-stops-quoting).
//! - **systemd**: the same probe and schedule, acted on through `qgsd.service` over
//!   D-Bus ([`super::systemd`]).
//!
//! The child is spawned directly, not through the host root: QGS ships beside cchost
//! (the DaemonSet image carries both); only its inputs — the QCNL file, the socket
//! directory — are host paths and go through [`HostRoot`].

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use super::DcapError;
use super::qgs::{self, Endpoint};
use super::status::endpoint;
use crate::config::{DcapConfig, SuperviseMode};
use crate::host::{HostRoot, NodeKind};

/// Supervision settings (from `[dcap.supervise]`; tests build them directly).
#[derive(Debug, Clone)]
pub struct Settings {
    pub program: String,
    pub args: Vec<String>,
    pub threads: u32,
    pub endpoint: Endpoint,
    /// Host path of the QCNL config handed to the child as `QCNL_CONF_PATH`.
    pub qcnl_conf_path: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub probe_failures: u32,
    pub restart_every: Option<Duration>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How long a stopping child gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// systemd unit (systemd mode).
    pub unit: String,
    /// How to ask PCCS whether it is up, when a probe of QGS times out (`None`: never
    /// asked, every timeout counts).
    pub pccs: Option<super::pccs::ProbeSettings>,
}

impl Settings {
    pub fn from_config(cfg: &DcapConfig) -> Self {
        let s = &cfg.supervise;
        Settings {
            program: s.program.clone(),
            args: s.args.clone(),
            threads: cfg.threads,
            endpoint: endpoint(cfg),
            qcnl_conf_path: cfg.qcnl_conf_path.clone(),
            cache_dir: s.cache_dir.clone(),
            socket_group: s.socket_group.clone(),
            probe_interval: Duration::from_secs(s.probe_interval_s.max(1)),
            probe_timeout: Duration::from_millis(cfg.probe_timeout_ms),
            probe_failures: s.probe_failures.max(1),
            restart_every: (s.restart_every_h > 0)
                .then(|| Duration::from_secs(s.restart_every_h * 3600)),
            backoff_initial: Duration::from_millis(s.backoff_initial_ms.max(1)),
            backoff_max: Duration::from_secs(s.backoff_max_s.max(1)),
            stop_grace: Duration::from_secs(5),
            unit: s.unit.clone(),
            pccs: None,
        }
    }

    /// The next backoff delay after `failures` consecutive bad runs.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// Why QGS was (re)started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Initial,
    Exited,
    ProbeFailed,
    Scheduled,
    UnitNotActive,
}

/// What the supervisor has seen (published on a watch channel for the daemon's
/// metrics and for tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// Starts (child) or restart requests (systemd) so far, including the first.
    pub starts: u64,
    pub pid: Option<u32>,
    /// Did the last probe succeed?
    pub healthy: bool,
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub last_reason: Option<Reason>,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
}

/// Runs the configured supervision mode until `shutdown` turns true.
pub async fn run(
    host: HostRoot,
    cfg: DcapConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DcapError> {
    let (tx, _rx) = watch::channel(State::default());
    run_with_state(host, cfg, shutdown, tx).await
}

/// [`run`], publishing what the supervisor sees on `tx` (the daemon's metrics and
/// readiness follow it).
pub(crate) async fn run_with_state(
    host: HostRoot,
    cfg: DcapConfig,
    shutdown: watch::Receiver<bool>,
    tx: watch::Sender<State>,
) -> Result<(), DcapError> {
    let mut settings = Settings::from_config(&cfg);
    settings.pccs = pccs_probe_settings(&host, &cfg);
    match cfg.supervise.mode {
        SuperviseMode::Off => Ok(()),
        SuperviseMode::Child => run_child(host, settings, shutdown, tx).await,
        SuperviseMode::Systemd => {
            let driver = super::systemd::Driver::connect_host(&host).await?;
            super::systemd::supervise(host, settings, driver, shutdown, tx).await
        }
    }
}

/// Makes `/var/run/tdx-qgs` ready: the directory exists (0755, group set when
/// configured) and no stale socket is left. A socket that still answers means another
/// QGS runs: that is an error, not something to delete.
pub async fn prepare_socket(host: &HostRoot, s: &Settings) -> Result<(), DcapError> {
    let path = match &s.endpoint {
        Endpoint::Unix { path } => path,
        Endpoint::Vsock { .. } => {
            // QGS in vsock mode needs the host side of vsock; probing from the host
            // itself (CID 1) needs the loopback transport (docs/facts/dcap.md#qgs-service).
            // modprobe runs a process and waits: not on the runtime's thread.
            let host = host.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                for m in ["vhost_vsock", "vsock_loopback"] {
                    if let Err(e) = host.modprobe(m) {
                        tracing::warn!(module = m, error = %e, "cannot load vsock module");
                    }
                }
            });
            let _ = loaded.await;
            return Ok(());
        }
    };
    let dir = path.parent().ok_or_else(|| {
        DcapError::Config(format!("socket path {} has no directory", path.display()))
    })?;
    host.create_dir_all(dir)?;
    if let Some(g) = &s.socket_group {
        match host.host_group_gid(g)? {
            Some(gid) => {
                host.chown_group(dir, gid)?;
                host.set_mode(dir, 0o750)?;
            }
            None => {
                tracing::warn!(group = %g, "socket group not in the host's /etc/group; left unchanged")
            }
        }
    }
    if host.kind(path) == Some(NodeKind::Socket) {
        match host.connect_unix(path).await {
            Ok(_) => {
                return Err(DcapError::Config(format!(
                    "{}: another QGS already answers on this socket; stop it (systemctl stop qgsd) or use dcap.supervise.mode = \"systemd\"",
                    path.display()
                )));
            }
            Err(_) => {
                // Old QGS (≤1.23) does not remove a stale socket and fails to bind.
                tracing::info!(path = %path.display(), "removing stale QGS socket");
                host.remove_file(path)?;
            }
        }
    }
    Ok(())
}

/// After QGS made its socket: mode 0660 and the configured group (QEMU connects to it).
fn fix_socket_perms(host: &HostRoot, s: &Settings) {
    let Endpoint::Unix { path } = &s.endpoint else {
        return;
    };
    if let Some(g) = &s.socket_group
        && let Ok(Some(gid)) = host.host_group_gid(g)
    {
        if let Err(e) = host.chown_group(path, gid) {
            tracing::warn!(error = %e, "cannot set the QGS socket group");
        }
        if let Err(e) = host.set_mode(path, 0o660) {
            tracing::warn!(error = %e, "cannot set the QGS socket mode");
        }
    }
}

fn spawn(host: &HostRoot, s: &Settings) -> Result<Child, DcapError> {
    let mut cmd = Command::new(&s.program);
    cmd.arg("--no-daemon")
        .arg(format!("-n={}", s.threads))
        .args(&s.args)
        .env("QCNL_CONF_PATH", host.lexical(&s.qcnl_conf_path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(c) = &s.cache_dir {
        cmd.env("XDG_CACHE_HOME", host.lexical(c));
    }
    let mut child = cmd.spawn().map_err(|source| DcapError::Spawn {
        program: s.program.clone(),
        source,
    })?;
    // QGS logs to stdout with --no-daemon; keep its lines in cchost's log.
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err));
    }
    Ok(child)
}

async fn forward_lines<R: tokio::io::AsyncRead + Unpin>(r: R) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "qgs", "{line}");
    }
}

/// SIGTERM, then SIGKILL after the grace period.
async fn stop(child: &mut Child, grace: Duration) -> String {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(st)) => st.to_string(),
        _ => {
            let _ = child.start_kill();
            child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string())
        }
    }
}

enum Outcome {
    Shutdown,
    Restart(Reason),
}

/// Child mode: run, probe, restart, until shutdown.
pub async fn run_child(
    host: HostRoot,
    s: Settings,
    mut shutdown: watch::Receiver<bool>,
    state: watch::Sender<State>,
) -> Result<(), DcapError> {
    let mut bad_runs: u32 = 0;
    let mut reason = Reason::Initial;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let started = prepare_socket(&host, &s)
            .await
            .and_then(|()| spawn(&host, &s));
        let mut child = match started {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot start QGS");
                state.send_modify(|st| st.last_error = Some(e.to_string()));
                bad_runs += 1;
                if wait_or_shutdown(s.backoff(bad_runs - 1), &mut shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        let pid = child.id();
        tracing::info!(?pid, ?reason, program = %s.program, "QGS started");
        state.send_modify(|st| {
            st.starts += 1;
            st.pid = pid;
            st.healthy = false;
            st.last_reason = Some(reason);
        });
        let (outcome, was_healthy) =
            watch_child(&host, &s, &mut child, &mut shutdown, &state).await;
        let exit = match outcome {
            Outcome::Restart(Reason::Exited) => child
                .try_wait()
                .ok()
                .flatten()
                .map(|st| st.to_string())
                .unwrap_or_else(|| "exited".into()),
            _ => stop(&mut child, s.stop_grace).await,
        };
        tracing::warn!(exit = %exit, "QGS stopped");
        state.send_modify(|st| {
            st.pid = None;
            st.healthy = false;
            st.last_exit = Some(exit);
        });
        match outcome {
            Outcome::Shutdown => return Ok(()),
            Outcome::Restart(r) => {
                reason = r;
                // A run that answered probes resets the backoff; a scheduled restart is
                // not a failure.
                if was_healthy || r == Reason::Scheduled {
                    bad_runs = 0;
                } else {
                    bad_runs += 1;
                }
                let delay = if r == Reason::Scheduled {
                    Duration::ZERO
                } else {
                    s.backoff(bad_runs.saturating_sub(1))
                };
                tracing::info!(?r, delay_ms = delay.as_millis() as u64, "restarting QGS");
                if wait_or_shutdown(delay, &mut shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

async fn watch_child(
    host: &HostRoot,
    s: &Settings,
    child: &mut Child,
    shutdown: &mut watch::Receiver<bool>,
    state: &watch::Sender<State>,
) -> (Outcome, bool) {
    let mut probe = tokio::time::interval_at(Instant::now() + s.probe_interval, s.probe_interval);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = s.restart_every.map(|d| Instant::now() + d);
    let mut failures = 0u32;
    let mut healthy = false;
    let mut perms_fixed = false;
    loop {
        let scheduled = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = shutdown.changed() => {
                // A dropped sender means the daemon is gone: stop too.
                if r.is_err() || *shutdown.borrow() { return (Outcome::Shutdown, healthy); }
            }
            _ = child.wait() => return (Outcome::Restart(Reason::Exited), healthy),
            _ = scheduled => return (Outcome::Restart(Reason::Scheduled), healthy),
            _ = probe.tick() => {
                match qgs::platform_info(host, &s.endpoint, s.probe_timeout).await {
                    Ok(_) => {
                        failures = 0;
                        healthy = true;
                        if !perms_fixed {
                            fix_socket_perms(host, s);
                            perms_fixed = true;
                        }
                        state.send_modify(|st| { st.healthy = true; st.probes_ok += 1; st.last_error = None; });
                    }
                    Err(e) if busy_waiting_on_pccs(s, &e).await => {
                        state.send_modify(|st| { st.last_error = Some(e.to_string()); });
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, failures, "QGS liveness probe failed");
                        state.send_modify(|st| { st.healthy = false; st.probes_failed += 1; st.last_error = Some(e.to_string()); });
                        if failures >= s.probe_failures {
                            return (Outcome::Restart(Reason::ProbeFailed), healthy);
                        }
                    }
                }
            }
        }
    }
}

/// The PCCS probe settings from the config (QCNL's trust rules), when they can be made.
pub(crate) fn pccs_probe_settings(
    host: &HostRoot,
    cfg: &DcapConfig,
) -> Option<super::pccs::ProbeSettings> {
    use super::pccs::{ProbeSettings, Url};
    let base = Url::parse(&cfg.pccs.url).ok()?;
    let trust = ProbeSettings::trust_for(
        host,
        cfg.pccs.ca_bundle.as_deref(),
        cfg.pccs.use_secure_cert,
    )
    .ok()?;
    Some(ProbeSettings {
        base,
        trust,
        connect_timeout: Duration::from_millis(cfg.pccs.connect_timeout_ms),
        answer_timeout: Duration::from_millis(cfg.pccs.answer_timeout_ms),
        api_key: None,
    })
}

/// A probe that timed out while PCCS is down or hanging: QGS accepted the connection,
/// and its workers are most likely all waiting on PCCS for quote requests (a LAZY
/// PCCS without a route to Intel holds each one about a minute). Restarting QGS would
/// not bring PCCS back and would drop the TDs' requests in flight, so this is logged
/// and not counted as a liveness failure. With PCCS answering, a timeout counts (the
/// known multi-day stall).
pub(crate) async fn busy_waiting_on_pccs(s: &Settings, e: &qgs::QgsError) -> bool {
    use super::pccs::Verdict;
    let (qgs::QgsError::Timeout { .. }, Some(p)) = (e, &s.pccs) else {
        return false;
    };
    let root = p
        .base
        .with_path(&super::pccs::join(&p.base.path, "rootcacrl"));
    let probe = super::pccs::probe(p, &root).await;
    let pccs_down = !probe.verdict.pccs_up()
        || matches!(
            probe.verdict,
            Verdict::UpstreamHangSuspected | Verdict::UpstreamUnreachable
        );
    if pccs_down {
        tracing::warn!(qgs = %e, pccs = %probe.message,
            "QGS did not answer in time while PCCS is down: not restarting QGS (it is waiting on PCCS)");
    }
    pccs_down
}

/// Sleeps, or returns true early when shutdown is requested.
pub(crate) async fn wait_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut s = Settings::from_config(&DcapConfig::default());
        s.backoff_initial = Duration::from_millis(100);
        s.backoff_max = Duration::from_millis(1000);
        let v: Vec<u128> = (0..6).map(|i| s.backoff(i).as_millis()).collect();
        assert_eq!(v, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(s.backoff(1000), Duration::from_millis(1000));
    }
}
