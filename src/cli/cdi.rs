use std::process::ExitCode;

use cchost::cdi;
use cchost::inventory::passthrough;

use super::Global;
use super::output::{out, outln};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write the host CDI spec for passthrough GPUs and NVSwitches.
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Print the specs on stdout (one JSON array, a spec per kind) instead of writing them.
    #[arg(long)]
    pub stdout: bool,
    /// Directory to write into (a host path; default: device_plugin.cdi_dir).
    #[arg(long)]
    pub dir: Option<String>,
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let Command::Generate(a) = c;
    let cfg = &g.config.device_plugin;
    let scan = passthrough::discover(&g.host, &g.config.matching, cfg)?;
    for s in &scan.skipped {
        match s.address {
            Some(addr) => eprintln!("skipped {addr}: {}", s.reason),
            None => eprintln!("skipped: {}", s.reason),
        }
    }
    let specs = cdi::specs_for(&scan)?;
    if a.stdout {
        // One JSON document: an array with one spec per kind (a spec file holds one
        // kind, so several cannot be concatenated into one valid document).
        let mut text = serde_json::to_string_pretty(&specs)?;
        text.push('\n');
        out!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let dir = a.dir.as_deref().unwrap_or(&cfg.cdi_dir);
    cchost::config::paths::under_one_of(
        "--dir",
        std::path::Path::new(dir),
        &["/etc/cdi", "/var/run/cdi", "/run/cdi"],
    )
    .map_err(anyhow::Error::msg)?;
    let report = cdi::write_specs(&g.host, dir, &specs)?;
    for p in &report.written {
        outln!("wrote {}", p.display());
    }
    for p in &report.unchanged {
        outln!("unchanged {}", p.display());
    }
    for p in &report.removed {
        outln!("removed {}", p.display());
    }
    if specs.is_empty() {
        outln!("no passthrough devices: {}", scan.why_empty());
    }
    Ok(ExitCode::SUCCESS)
}
