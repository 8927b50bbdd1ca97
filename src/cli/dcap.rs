use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// QGS and PCCS state.
    Status,
}

pub fn run(_g: &Global, _c: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("dcap: not built yet")
}
