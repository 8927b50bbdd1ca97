use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read the active CC mode of each GPU.
    Query,
}

pub fn run(_g: &Global, _c: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("gpu cc: not built yet")
}
