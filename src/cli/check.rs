use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (documented in docs/check-json.md).
    #[arg(long)]
    pub json: bool,
}

pub fn run(_g: &Global, _a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check: not built yet")
}
