use std::process::ExitCode;

use cchost::cdi;
use cchost::inventory::passthrough;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write the host CDI spec for passthrough GPUs and NVSwitches.
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Print the specs on stdout instead of writing them.
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
        for spec in &specs {
            print!("{}", String::from_utf8_lossy(&cdi::render(spec)?));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dir = a.dir.as_deref().unwrap_or(&cfg.cdi_dir);
    let report = cdi::write_specs(&g.host, dir, &specs)?;
    for p in &report.written {
        println!("wrote {}", p.display());
    }
    for p in &report.unchanged {
        println!("unchanged {}", p.display());
    }
    for p in &report.removed {
        println!("removed {}", p.display());
    }
    if specs.is_empty() {
        println!("no passthrough devices: {}", scan.why_empty());
    }
    Ok(ExitCode::SUCCESS)
}
