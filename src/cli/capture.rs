use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the capture into (created; must be empty).
    pub dir: std::path::PathBuf,
}

pub fn run(_g: &Global, _a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("capture: not built yet")
}
