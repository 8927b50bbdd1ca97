use std::process::ExitCode;

use anyhow::Context as _;

use cchost::dcap::{collateral, configure, files, status, supervisor};

use super::Global;
use super::output::{out, outln};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The attestation chain on this host: TDX → QGS → QCNL → PCCS → collateral.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write /etc/qgs.conf and the QCNL config where they are missing, and fix only what
    /// `dcap status` names in an existing one (journaled: `cchost undo` restores).
    Configure {
        /// Show the changes as a diff; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Keep QGS running in the foreground ([dcap.supervise] mode child or systemd).
    Supervise,
}

/// `status` and `supervise` read /sys (TDX state); `configure` only writes /etc files.
pub fn reads_the_host(c: &Command) -> bool {
    !matches!(c, Command::Configure { .. })
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cfg = &g.config.dcap;
    match c {
        Command::Status { json } => {
            let key = files::load_api_key(cfg)?;
            let report = rt.block_on(status::report(&g.host, cfg, key, collateral::now_unix()));
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", report.render_text());
            }
            Ok(ExitCode::from(if report.ready() { 0 } else { 1 }))
        }
        Command::Configure { dry_run } => {
            let key = files::load_api_key(cfg)?;
            // Under the journal lock from the start: what is planned is what is written.
            let mut journal = if dry_run {
                None
            } else {
                Some(cchost::journal::Journal::open(&g.host)?)
            };
            let plans = configure::plan(&g.host, cfg, key.as_ref())?;
            for f in &plans {
                let verb = match (f.changes(), dry_run) {
                    (false, _) => "unchanged",
                    (true, true) => "would change",
                    (true, false) => "wrote",
                };
                if let (true, Some(j), Some(after)) = (f.changes(), journal.as_mut(), &f.after) {
                    cchost::journal::write_file(
                        &g.host,
                        j,
                        &f.path.to_string_lossy(),
                        after,
                        f.mode,
                    )?;
                }
                outln!("{verb} {}: {}", f.path.display(), f.why);
                if f.changes() && dry_run {
                    out!("{}", f.diff());
                }
            }
            if dry_run {
                outln!("(dry run: nothing changed)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Supervise if cfg.supervise.mode == cchost::config::SuperviseMode::Off => {
            eprintln!("dcap.supervise.mode is \"off\": set it to \"child\" or \"systemd\"");
            Ok(ExitCode::from(2))
        }
        Command::Supervise => rt.block_on(async {
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
            });
            supervisor::run(g.host.clone(), cfg.clone(), rx).await?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}
