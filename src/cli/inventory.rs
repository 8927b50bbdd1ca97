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
    let inv = Inventory::collect(&g.host, &g.config);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&inv)?);
    } else {
        print!("{}", render::text(&inv));
    }
    Ok(ExitCode::SUCCESS)
}
