use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// NVIDIA GPUs and NVSwitches (as matched by the config) and their state.
    List,
    /// Confidential Computing mode: query or set.
    #[command(subcommand)]
    Cc(super::gpu_cc::Command),
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Cc(cc) => super::gpu_cc::run(g, cc),
        Command::List => anyhow::bail!("gpu list: not built yet"),
    }
}
