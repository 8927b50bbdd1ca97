use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write the host CDI spec for passthrough GPUs and NVSwitches.
    Generate,
}

pub fn run(_g: &Global, _c: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("cdi: not built yet")
}
