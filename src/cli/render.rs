use std::process::ExitCode;

use cchost::hostcfg::machineconfig::{self, Role};
use cchost::hostcfg::profile::Platform;

use super::Global;
use super::output::out;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// OpenShift MachineConfig YAML (kernel arguments, modules-load.d file).
    Machineconfig(MachineconfigArgs),
}

#[derive(Debug, clap::Args)]
pub struct MachineconfigArgs {
    /// The TEE the pool's nodes run.
    #[arg(long, value_enum)]
    pub platform: Platform,
    /// The nodes pass GPUs through to confidential VMs (IOMMU on).
    #[arg(long)]
    pub gpu: bool,
    /// The MachineConfigPool role.
    #[arg(long, value_enum, default_value_t = Role::Worker)]
    pub role: Role,
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Machineconfig(a) => {
            let yaml = machineconfig::render(a.platform, a.gpu, a.role, &g.config)?;
            out!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
