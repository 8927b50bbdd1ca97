//! `cchost capture DIR`: the host files cchost reads, copied into DIR (a valid
//! `--host-root`; docs/capture.md says what is in it).
use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the capture into (created; must be empty).
    pub dir: std::path::PathBuf,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let (_, s) = cchost::capture::capture(&g.host, &g.config, &a.dir)?;
    eprintln!(
        "captured {} files, {} links, {} directories into {} ({} paths cchost looked for were absent)",
        s.files,
        s.links,
        s.dirs,
        a.dir.display(),
        s.absent
    );
    Ok(ExitCode::SUCCESS)
}
