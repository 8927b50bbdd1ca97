use std::process::ExitCode;

use cchost::inventory::{Inventory, render};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (the serialized `Inventory`; docs/inventory.md).
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let mut inv = Inventory::collect(&g.host, &g.config);
    // The inventory says what blocks each verdict; what to do about it is check's.
    cchost::check::remedy::annotate(&mut inv);
    let text = if a.json {
        format!("{}\n", serde_json::to_string_pretty(&inv)?)
    } else {
        render::text(&inv)
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    super::output::write_out(format_args!("{text}"), false)?;
    Ok(())
}
