use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// OpenShift MachineConfig YAML (kernel arguments, modules).
    Machineconfig,
}

pub fn run(_g: &Global, _c: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("render: not built yet")
}
