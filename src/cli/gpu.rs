use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// NVIDIA GPUs and NVSwitches (as matched by the config) and their state.
    List,
}

pub fn run(_g: &Global, _c: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("gpu: not built yet")
}
