//! The device plugin's view: a PCI function whose sysfs attributes cannot be read or
//! parsed is skipped by the plugin (it never blocks the others), and this check says
//! which one, which file, and what to do. Same scan as `cchost run`
//! (`inventory::passthrough::unreadable_from_inventory`), from the checked inventory.

use super::{Check, CheckId, CheckOutcome, Ctx};
use crate::inventory::passthrough::unreadable_from_inventory;

pub fn passthrough() -> Check {
    Check::new(CheckId::DevicepluginReadable, readable)
}

/// No other CDI spec claims cchost's kinds (cdi::foreign).
pub(crate) fn cdi_conflicts() -> Check {
    Check::new(CheckId::CdiConflicts, no_conflicts)
}

fn no_conflicts(ctx: &Ctx) -> CheckOutcome {
    use crate::cdi::foreign;
    let Some(found) = ctx.cdi_conflicts else {
        return CheckOutcome::skip("not read (no host)");
    };
    let kinds = foreign::planned_kinds(&ctx.config.device_plugin, &ctx.inv.gpus);
    let Some(first) = found.first() else {
        return CheckOutcome::pass(format!(
            "no other spec in {} or {} defines {}",
            foreign::SPEC_DIRS[0],
            foreign::SPEC_DIRS[1],
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        ));
    };
    let list: Vec<String> = found.iter().map(ToString::to_string).collect();
    CheckOutcome::fail(
        format!(
            "{}: a device defined by two CDI specs is unresolvable, so pods asking for it fail",
            list.join("; ")
        ),
        format!(
            "remove {} (left by the stack cchost replaces, e.g. NVIDIA's sandbox device plugin), or give cchost other names (device_plugin.gpu_resource / nvswitch_resource)",
            first.path.display()
        ),
    )
}

fn readable(ctx: &Ctx) -> CheckOutcome {
    let skipped = unreadable_from_inventory(&ctx.inv.gpus);
    let Some(first) = skipped.first() else {
        let n = ctx.inv.gpus.devices.len();
        return if n == 0 {
            CheckOutcome::pass("no GPU or NVSwitch matched; nothing unreadable")
        } else {
            CheckOutcome::pass(format!("{n} matched function(s) read in full"))
        };
    };
    let list: Vec<String> = skipped
        .iter()
        .map(|s| {
            let (file, error) = s
                .unreadable
                .as_ref()
                .map(|u| (u.file.display().to_string(), u.error.as_str()))
                .unwrap_or_default();
            match s.address {
                Some(a) => format!("{a} ({file}: {error})"),
                None => format!("{file}: {error}"),
            }
        })
        .collect();
    let file = first
        .unreadable
        .as_ref()
        .map(|u| u.file.display().to_string())
        .unwrap_or_default();
    CheckOutcome::warn(
        format!(
            "{} PCI function(s) skipped by the device plugin as unreadable: {}",
            skipped.len(),
            list.join("; ")
        ),
        format!(
            "read the file by hand (cat {file}) and check the kernel log for the device; a \
             malformed or failing attribute is a driver or device fault: reset or rebind the \
             device, or reboot; `cchost run` advertises it at the next device event"
        ),
    )
}
