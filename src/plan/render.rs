//! The plan as text an operator reads before approving it.

use std::fmt::Write as _;

use super::build::{Action, Plan};
use crate::hostcfg::boot::BootStep;
use crate::hostcfg::profile::Platform;

pub fn to_text(plan: &Plan) -> String {
    let mut s = String::new();
    let p = &plan.profile;
    let _ = writeln!(
        s,
        "Profile: {}{}",
        match p.platform {
            Platform::Tdx => "Intel TDX",
            Platform::Snp => "AMD SEV-SNP",
            Platform::None => "no TEE",
        },
        if p.gpu { " + GPU passthrough" } else { "" }
    );
    let _ = writeln!(s, "  because: {}", p.why);
    if !plan.arguments.required.is_empty() || !plan.arguments.forbidden.is_empty() {
        let _ = writeln!(s, "Kernel arguments of this profile:");
        for r in &plan.arguments.required {
            let _ = writeln!(s, "  want   {:<22} {}", r.arg.to_string(), r.why);
        }
        for f in &plan.arguments.forbidden {
            let _ = writeln!(s, "  never  {:<22} {}", f.arg.to_string(), f.why);
        }
    }
    if plan.actions.is_empty() {
        let _ = writeln!(s, "\nNothing to change.");
    } else {
        let _ = writeln!(s, "\nChanges (`cchost apply` makes them, in this order):");
        for (i, a) in plan.actions.iter().enumerate() {
            let _ = writeln!(s, "  {}. {}", i + 1, a.summary());
            match a {
                Action::KernelArgs {
                    evidence, steps, ..
                } => {
                    let _ = writeln!(s, "     found: {evidence}");
                    for st in steps {
                        match st {
                            BootStep::EditFiles { files, then } => {
                                for f in files {
                                    let _ = writeln!(s, "     edit {}", f.path.display());
                                }
                                if let Some(t) = then {
                                    let _ = writeln!(s, "     run  {t}");
                                }
                            }
                            BootStep::Tool { call, .. } => {
                                let _ = writeln!(s, "     run  {call}");
                            }
                        }
                    }
                }
                Action::LoadModule { why, .. } => {
                    let _ = writeln!(s, "     why: {why}");
                }
                Action::PersistModules { .. }
                | Action::KataDropin { .. }
                | Action::ModprobeFile { .. } => {}
            }
        }
    }
    if !plan.running_findings.is_empty() {
        let _ = writeln!(s, "\nRunning kernel command line:");
        for f in &plan.running_findings {
            let _ = writeln!(s, "  - {f}");
        }
    }
    if plan.reboot_required {
        let _ = writeln!(
            s,
            "\nReboot required: the new kernel arguments take effect at the next boot (cchost never reboots)."
        );
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(s, "\nNotes:");
        for n in &plan.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    if !plan.labels.is_empty() {
        let _ = writeln!(s, "\nNode labels (kept by `cchost run`):");
        for (k, v) in &plan.labels {
            let _ = writeln!(s, "  {k}={v}");
        }
        for (k, v) in &plan.extended_resources {
            let _ = writeln!(s, "  {k}: {v} (extended resource)");
        }
    }
    s
}
