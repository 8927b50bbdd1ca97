use std::process::ExitCode;

use cchost::check::{CHECK_LIST, Profile, Report, registry, render};
use cchost::inventory::Inventory;

use super::Global;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProfileArg {
    Tdx,
    Snp,
    Auto,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (documented in docs/check-json.md).
    #[arg(long)]
    pub json: bool,
    /// Which TEE to check for; `auto` picks TDX on Intel and SEV-SNP on AMD.
    #[arg(long, value_enum, default_value_t = ProfileArg::Auto)]
    pub profile: ProfileArg,
    /// List every check (id, category, remedy kinds, title) instead of running them.
    #[arg(long)]
    pub list: bool,
}

/// Exit 0 when ready, 1 when not (2, usage or I/O errors, comes from the caller).
pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    if a.list {
        let text = if a.json {
            format!("{}\n", serde_json::to_string_pretty(CHECK_LIST)?)
        } else {
            registry::list_text()
        };
        super::inventory::write_stdout(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let profile = match a.profile {
        ProfileArg::Tdx => Profile::Tdx,
        ProfileArg::Snp => Profile::Snp,
        ProfileArg::Auto => Profile::Auto,
    };
    let inv = Inventory::collect(&g.host, &g.config);
    let report = Report::new_on(&inv, &g.config, profile, Some(&g.host));
    let text = if a.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        render::text(&report)
    };
    super::inventory::write_stdout(&text)?;
    Ok(ExitCode::from(if report.ready { 0 } else { 1 }))
}
