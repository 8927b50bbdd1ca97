use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Show what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run_plan(_g: &Global, _a: PlanArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("plan: not built yet")
}

pub fn run_apply(_g: &Global, _a: ApplyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("apply: not built yet")
}
