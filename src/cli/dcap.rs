use std::process::ExitCode;

use anyhow::Context as _;

use cchost::dcap::{collateral, files, status, supervisor};

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The attestation chain on this host: TDX → QGS → QCNL → PCCS → collateral.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write /etc/qgs.conf and the QCNL config from cchost's config.
    Configure {
        /// Show what would be written; change nothing.
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
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
            Ok(ExitCode::from(if report.ready() { 0 } else { 1 }))
        }
        Command::Configure { dry_run } => {
            let key = files::load_api_key(cfg)?;
            let desired = files::desired_files(cfg, key.as_ref());
            if dry_run {
                for f in &desired {
                    println!(
                        "--- {} (mode {:o})\n{}",
                        f.path.display(),
                        f.mode,
                        f.display_contents()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            for ch in files::write_files(&g.host, &desired)? {
                println!(
                    "{} {}",
                    if ch.changed { "wrote    " } else { "unchanged" },
                    ch.path.display()
                );
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
