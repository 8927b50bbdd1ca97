//! Does the running kernel have the arguments of the host's kernel profile? The same
//! profile and rules `cchost plan` uses (hostcfg::profile), checked against
//! /proc/cmdline: a check that turns green after `cchost apply` and a reboot.

use crate::hostcfg::profile::{ArgProfile, Platform};
use crate::inventory::NodeFacts;
use crate::plan::build::choose;

use super::{Check, CheckId, CheckOutcome, Ctx};

pub fn kernel_args() -> Check {
    Check::new(CheckId::KernelArgs, kernel_args_check)
}

fn kernel_args_check(ctx: &Ctx) -> CheckOutcome {
    let facts = NodeFacts::from_inventory(ctx.inv);
    let choice = choose(ctx.config, &facts);
    let profile = ArgProfile::new(
        choice.platform,
        choice.gpu,
        facts.cpu_vendor,
        &ctx.config.kernel,
    );
    let name = match (choice.platform, choice.gpu) {
        (Platform::None, false) => {
            return CheckOutcome::skip(format!("no kernel profile: {}", choice.why));
        }
        (p, true) => format!("profile {} + GPU passthrough", p.as_str()),
        (p, false) => format!("profile {}", p.as_str()),
    };
    let findings = profile.findings(&facts.cmdline, Some(&facts));
    if findings.is_empty() {
        let edit = profile.edit(Some(&facts));
        let args: Vec<String> = edit.add.iter().map(ToString::to_string).collect();
        let have = if args.is_empty() {
            "nothing to add (already in effect)".to_string()
        } else {
            args.join(" ")
        };
        return CheckOutcome::pass(format!("{name}: {have}"));
    }
    let list: Vec<String> = findings.iter().map(ToString::to_string).collect();
    CheckOutcome::fail(
        format!("{name}: {}", list.join("; ")),
        "run `cchost plan`, then `cchost apply` (plain hosts) or apply `cchost render \
         machineconfig` (OpenShift), and reboot",
    )
}
