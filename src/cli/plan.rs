use std::process::ExitCode;

use anyhow::Context as _;
use cchost::hostcfg::journaled::{KernelArgsRestorer, ModuleRestorer};
use cchost::inventory::Inventory;
use cchost::inventory::NodeFacts;
use cchost::journal::{self, FileRestorer, Journal, Restorer};
use cchost::plan::{self, Plan};

use super::Global;
use super::output::{out, outln};

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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Restorers for the journal kinds `apply` writes (kernel arguments, module loads).
pub fn restorers() -> Vec<&'static dyn Restorer> {
    vec![&KernelArgsRestorer, &ModuleRestorer]
}

fn make_plan(g: &Global) -> Plan {
    let inv = Inventory::collect(&g.host, &g.config);
    for p in &inv.problems {
        tracing::warn!(path = %p.path.display(), "{}", p.message);
    }
    let mut facts = NodeFacts::from_inventory(&inv);
    facts.duties = cchost::labels::duties::duties(&g.config, &g.host);
    if g.config.labels.nvidia {
        // The CC mode labels, as `cchost run` would set them now (read-only queries;
        // plan never wakes a suspended GPU, it says what it could not read).
        let query = cchost::labels::cc_mode::live_query_no_wake(&g.host);
        let unread = cchost::labels::cc_mode::CcModeCache::default().fill(
            &g.host,
            &g.config.matching,
            &mut facts,
            &query,
        );
        for (address, why) in unread {
            tracing::warn!(device = %address, "CC mode not read: {why}");
        }
    }
    let inputs = plan::gather(&g.host, &g.host, &g.config, facts);
    plan::build(&g.config, &inputs)
}

/// `cchost plan`: exit 0 when nothing needs changing, 1 when `apply` has work.
pub fn run_plan(g: &Global, a: PlanArgs) -> anyhow::Result<ExitCode> {
    let p = make_plan(g);
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        out!("{}", plan::render::to_text(&p));
    }
    Ok(if p.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cchost apply [--dry-run]`: makes the plan's changes; exit 0 when done (a reboot may
/// still be required: it is said, never done).
pub fn run_apply(g: &Global, a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let p = make_plan(g);
    if a.dry_run {
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&p)?);
        } else {
            out!("{}", plan::render::to_text(&p));
            outln!("\n(dry run: nothing changed)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if p.is_empty() {
        if a.json {
            outln!(
                "{}",
                serde_json::json!({"done": [], "reboot_required": p.reboot_required})
            );
        } else {
            outln!("Nothing to change.");
            if p.reboot_required {
                outln!(
                    "Reboot required: the boot configuration is ready, the running kernel is not (cchost never reboots)."
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut journal = Journal::open(&g.host).context("opening the journal")?;
    // Finish or roll back what an interrupted earlier apply left half done.
    let mut kinds = restorers();
    kinds.push(&FileRestorer);
    let recovered = journal::recover(&mut journal, &kinds)?;
    for r in &recovered {
        tracing::warn!(seq = r.seq, kind = %r.kind, subject = %r.subject, "recovered an interrupted step");
    }
    // Recovery changed the host: plan again.
    let p = if recovered.is_empty() {
        p
    } else {
        make_plan(g)
    };
    let report = cchost::apply::node::apply(&g.host, &g.host, &mut journal, &p);
    match report {
        Ok(r) => {
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for d in &r.done {
                    outln!("{} {}", if d.changed { "done:" } else { "ok:  " }, d.action);
                }
                if r.reboot_required {
                    outln!(
                        "\nReboot required: the new kernel arguments take effect at the next boot (cchost never reboots)."
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            super::output::error(&e.to_string());
            Ok(ExitCode::from(1))
        }
    }
}
