//! Command-line interface: global options, logging, dispatch, exit codes.
//!
//! Exit codes: 0 = success / ready, 1 = not ready (`check`), work to do (`plan`) or a
//! refused change, 2 = usage or I/O error. A closed stdout (`| head`) cuts the output
//! short and changes no exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use cchost::config::{Config, DEFAULT_CONFIG_PATH};
use cchost::host::HostRoot;

mod output;

mod capture;
mod cdi;
mod check;
mod dcap;
mod deviceplugin;
mod gpu;
mod gpu_cc;
mod inventory;
mod plan;
mod render;
mod run;
mod test_hooks;
mod undo;

#[derive(Debug, Parser)]
#[command(
    name = "cchost",
    version,
    about = "Make this host ready for confidential containers (Kata + CoCo), and keep it ready"
)]
pub struct Cli {
    /// The host's root directory (`/host` in a DaemonSet, a fixture or capture tree in tests).
    #[arg(long, global = true, env = "CCHOST_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "CCHOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds to wait for another cchost process's journal lock before giving up.
    #[arg(
        long,
        global = true,
        env = "CCHOST_LOCK_WAIT_S",
        default_value_t = 60.0,
        value_name = "SECONDS"
    )]
    pub lock_wait: f64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Readiness report: a tree of checks with a remedy for every failure.
    Check(check::Args),
    /// Every fact cchost found about this host, with evidence.
    Inventory(inventory::Args),
    /// What `apply` would change, computed from config + inventory. Exit code 0: nothing
    /// to change; 1: `apply` has work to do; 2: usage or I/O error.
    Plan(plan::PlanArgs),
    /// Make the changes of the plan (journaled, idempotent).
    Apply(plan::ApplyArgs),
    /// The daemon: keep the host ready (CDI spec, device plugin, labels, DCAP).
    Run(run::Args),
    /// GPU steps by hand: list, bind, unbind, CC mode.
    #[command(subcommand)]
    Gpu(gpu::Command),
    /// Roll back everything the journal says cchost changed.
    Undo(undo::Args),
    /// Render configuration for other tools (OpenShift MachineConfig).
    #[command(subcommand)]
    Render(render::Command),
    /// The host CDI spec for passthrough GPUs.
    #[command(subcommand)]
    Cdi(cdi::Command),
    /// Ask the running device plugin what it advertises (as kubelet would).
    #[command(subcommand, name = "device-plugin")]
    DevicePlugin(deviceplugin::Command),
    /// Intel DCAP helpers (QGS, PCCS): state and configuration.
    #[command(subcommand)]
    Dcap(dcap::Command),
    /// Copy the host files cchost reads into DIR (a valid --host-root; for bug reports).
    Capture(capture::Args),
}

impl Command {
    /// Commands whose answers come from the host's /sys, /proc and /dev (not `render`,
    /// which writes for another machine, nor `undo`, which only replays the journal).
    fn reads_the_host(&self) -> bool {
        match self {
            Command::Render(_) | Command::Undo(_) | Command::DevicePlugin(_) => false,
            Command::Dcap(c) => dcap::reads_the_host(c),
            // `check --list` prints the registry and reads nothing of the host.
            Command::Check(a) => !a.list,
            _ => true,
        }
    }
}

/// What every command gets: the host door and the configuration.
pub struct Global {
    pub host: HostRoot,
    pub config: Config,
    pub config_path: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);
    output::set_format(cli.log_format);
    if !(cli.lock_wait.is_finite() && (0.0..=86_400.0).contains(&cli.lock_wait)) {
        output::error("--lock-wait must be between 0 and 86400 seconds");
        return ExitCode::from(2);
    }
    cchost::journal::set_lock_wait(std::time::Duration::from_secs_f64(cli.lock_wait));
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            output::error(&format!("{e:#}"));
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CCHOST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colour only for a person at a terminal, never into a file or a journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let host = HostRoot::new(&cli.host_root)
        .with_context(|| format!("cannot open host root {}", cli.host_root.display()))?;
    let (config_path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    if cli.command.reads_the_host() {
        let missing = host.missing_kernel_dirs();
        if !missing.is_empty() {
            anyhow::bail!(
                "host root {} is not a whole host: {} missing or empty; nothing was checked. \
                 Point --host-root at the host's / (in a DaemonSet, mount the host's / at /host \
                 with its /sys, /proc and /dev)",
                host.root().display(),
                missing
                    .iter()
                    .map(|d| format!("{d}/"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if missing.len() == 1 { " is" } else { " are" }
            );
        }
    }
    let config = Config::load(&config_path, explicit)?;
    let g = Global {
        host,
        config,
        config_path,
    };
    match cli.command {
        Command::Check(a) => check::run(&g, a),
        Command::Inventory(a) => inventory::run(&g, a),
        Command::Plan(a) => plan::run_plan(&g, a),
        Command::Apply(a) => plan::run_apply(&g, a),
        Command::Run(a) => run::run(&g, a),
        Command::Gpu(c) => gpu::run(&g, c),
        Command::Undo(a) => undo::run(&g, a),
        Command::Render(c) => render::run(&g, c),
        Command::Cdi(c) => cdi::run(&g, c),
        Command::DevicePlugin(c) => deviceplugin::run(&g, c),
        Command::Dcap(c) => dcap::run(&g, c),
        Command::Capture(a) => capture::run(&g, a),
    }
}
