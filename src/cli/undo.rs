//! `cchost undo`: revert everything the journal says cchost changed, newest first.

use std::process::ExitCode;

use cchost::journal::{self, FileRestorer, Journal, Restorer};

use super::Global;
use super::output::outln;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// List what would be reverted, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Every kind of journal entry cchost writes, with what restores it. A command that
/// journals a new kind adds its restorer here.
pub fn restorers() -> Vec<&'static dyn Restorer> {
    let mut v: Vec<&'static dyn Restorer> = vec![&FileRestorer];
    v.extend(super::gpu::restorers());
    v.extend(super::plan::restorers());
    v
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    if a.dry_run {
        let entries = Journal::peek(&g.host)?;
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&entries)?);
        } else if entries.is_empty() {
            outln!("nothing to undo");
        } else {
            for e in entries.iter().rev() {
                outln!("would revert {e}: restore {}", e.restore);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut j = Journal::open(&g.host)?;
    let done = match journal::undo_all(&mut j, &restorers()) {
        Ok(d) => d,
        // A restore that was refused (device in use) or failed: exit 1, the rest of the
        // journal is kept for the next undo.
        Err(e @ journal::JournalError::Restore { .. }) => {
            super::output::error(&e.to_string());
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&done)?);
    } else if done.is_empty() {
        outln!("nothing to undo");
    } else {
        for r in &done {
            outln!("reverted #{} {} {}", r.seq, r.kind, r.subject);
        }
    }
    Ok(ExitCode::SUCCESS)
}
