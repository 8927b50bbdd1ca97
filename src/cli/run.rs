use std::process::ExitCode;

use anyhow::Context as _;
use cchost::daemon::Daemon;
use cchost::gpu::cc::switch::Status;
use cchost::observe::events;
use cchost::observe::metrics::METRICS;
use cchost::observe::sd_notify::{self, Notifier};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Held by the one `cchost run` of a host root for as long as it runs.
pub const RUN_LOCK: &str = "/run/cchost/run.lock";

pub fn run(g: &Global, _a: Args) -> anyhow::Result<ExitCode> {
    // One daemon per host root: a second would fight over the plugin sockets, the CDI
    // spec and the status file (and remove the first one's on exit).
    let _one = match g.host.lock_exclusive(RUN_LOCK, cchost::host::LockWait::No) {
        Ok(l) => l,
        Err(cchost::host::HostError::Locked { .. }) => anyhow::bail!(
            "another `cchost run` is already running on host root {} (it holds {}); not starting a second one",
            g.host.root().display(),
            g.host.lexical(RUN_LOCK).display()
        ),
        Err(e) => return Err(e).context("cannot take the daemon lock"),
    };
    // One thread: the daemon mostly sleeps, and a small idle footprint matters on a
    // node (docs/performance.md).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // A killed `cchost gpu bind` or `apply` may have left a step half done: finish or
    // roll it back before serving anything, as the journal promises.
    {
        let mut journal = cchost::journal::Journal::open(&g.host)?;
        for r in cchost::journal::recover(&mut journal, &super::undo::restorers())? {
            tracing::warn!(kind = %r.kind, subject = %r.subject, "recovered an interrupted step of an earlier run");
        }
        if g.config.vfio.bind_on_start {
            let done =
                cchost::daemon::bind_on_start::bind_matched(&g.host, &mut journal, &g.config);
            tracing::info!(bound = ?done.bound, already = ?done.already, "vfio.bind_on_start");
            for r in &done.refused {
                tracing::warn!("vfio.bind_on_start: {r}");
                events::raise(
                    "GPUBindRefused",
                    "BindVfio",
                    format!("cchost vfio.bind_on_start refused: {r}"),
                );
            }
            for r in &done.failed {
                tracing::warn!("vfio.bind_on_start: {r}");
                events::raise(
                    "GPUBindFailed",
                    "BindVfio",
                    format!("cchost vfio.bind_on_start failed: {r}"),
                );
            }
        }
        let opener = cchost::gpu::cc::live::MmioOpener::default();
        let start =
            if let Some(mode) = cchost::gpu::cc::TargetMode::requested(g.config.cc.mode_on_start) {
                Some((
                    format!("cc.mode_on_start = {mode}"),
                    cchost::daemon::cc_on_start::set_mode(
                        &g.host,
                        &mut journal,
                        &g.config,
                        mode,
                        &opener,
                    ),
                ))
            } else if !g.config.cc.modes.is_empty() {
                let inv = cchost::inventory::Inventory::collect(&g.host, &g.config);
                let facts = cchost::inventory::facts::NodeFacts::from_inventory(&inv);
                Some((
                    "cc.modes".to_string(),
                    cchost::daemon::cc_on_start::set_modes(
                        &g.host,
                        &mut journal,
                        &g.config,
                        facts.tdx.enabled != facts.snp.enabled,
                        &opener,
                    ),
                ))
            } else {
                None
            };
        if let Some((what, done)) = start {
            for o in &done.outcomes {
                METRICS.cc_switches_total.inc(&[match o.status {
                    Status::Switched => "switched",
                    Status::Unchanged => "unchanged",
                    Status::Failed | Status::Skipped => "failed",
                }]);
                match &o.error {
                    None => {
                        tracing::info!(device = %o.device, status = ?o.status, "{what}")
                    }
                    Some(e) => {
                        tracing::error!(device = %o.device, error = %e, "{what} failed");
                        events::raise(
                            "CCModeSwitchFailed",
                            "SetCCMode",
                            format!("cchost {what} failed on {}: {e}", o.device),
                        );
                    }
                }
            }
            for r in &done.refused {
                METRICS.cc_switches_total.inc(&["refused"]);
                tracing::warn!("{what}: {r}");
                events::raise(
                    "CCModeSwitchRefused",
                    "SetCCMode",
                    format!("cchost {what} refused: {r}"),
                );
            }
        }
    }
    let mut daemon = Daemon::new(g.host.clone(), g.config.clone()).with_default_services();
    // Under systemd with Type=notify (docs/observability.md).
    match Notifier::from_env() {
        Some(Ok(n)) => daemon = daemon.with_notifier(n, sd_notify::watchdog_from_env()),
        Some(Err(e)) => tracing::warn!(error = %e, "cannot notify systemd"),
        None => {}
    }
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        // Start-up is over within milliseconds; then the pages of code that only it
        // ran are handed back (src/daemon/trim.rs, docs/performance.md).
        tokio::spawn(async {
            tokio::time::sleep(cchost::daemon::TRIM_AFTER).await;
            let t = cchost::daemon::trim::trim_executable();
            tracing::debug!(
                bytes = t.bytes,
                paged_out = t.paged_out,
                "start-up pages trimmed"
            );
        });
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        };
        daemon.run(stop).await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
