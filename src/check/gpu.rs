//! The GPU subtree: the GPUs and NVSwitches the `[match]` config selects, and what
//! passthrough to a confidential guest needs from each of them.

use crate::inventory::{GpuDevice, GpuKind, IommuMode};

use super::{Check, CheckId, CheckOutcome, Ctx};

pub fn gpus() -> Check {
    Check::new(CheckId::Gpu, found).with([
        Check::new(CheckId::GpuCc, cc),
        Check::new(CheckId::GpuIommuGroup, groups),
        Check::new(CheckId::GpuBootVga, boot_vga),
        Check::new(CheckId::GpuBarAccess, bar_access),
        Check::new(CheckId::GpuVfioModule, vfio_module),
        Check::new(CheckId::GpuVfioBound, vfio_bound),
    ])
}

fn describe(d: &GpuDevice) -> String {
    d.model
        .clone()
        .unwrap_or_else(|| format!("{:04x}:{:04x}", d.vendor, d.device))
}

fn found(ctx: &Ctx) -> CheckOutcome {
    let g = &ctx.inv.gpus;
    if g.devices.is_empty() {
        return CheckOutcome::skip("none matched (CPU-only confidential containers)");
    }
    // "8 × GH100 [H100 SXM5 80GB], 4 × GH100 [H100 NVSwitch]"
    let mut counts: Vec<(String, usize)> = Vec::new();
    for d in &g.devices {
        let name = describe(d);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    let mut numa: Vec<u32> = g.devices.iter().filter_map(|d| d.numa_node).collect();
    numa.sort_unstable();
    numa.dedup();
    let list: Vec<String> = counts.iter().map(|(n, c)| format!("{c} × {n}")).collect();
    CheckOutcome::pass(format!(
        "{}{}",
        list.join(", "),
        if numa.is_empty() {
            String::new()
        } else {
            format!(" on NUMA node(s) {numa:?}")
        }
    ))
}

fn cc(ctx: &Ctx) -> CheckOutcome {
    let gpus: Vec<&GpuDevice> = ctx.inv.gpus.gpus().collect();
    if gpus.is_empty() {
        return CheckOutcome::pass("no GPUs (NVSwitches only)");
    }
    let bad: Vec<String> = gpus
        .iter()
        .filter(|d| !d.cc_capable)
        .map(|d| format!("{} ({})", d.address, describe(d)))
        .collect();
    if !bad.is_empty() {
        return CheckOutcome::warn(
            format!("not CC-capable: {}", bad.join(", ")),
            "use Hopper or Blackwell GPUs for confidential guests (or add the chip to [[match.chip]] if it is one)",
        );
    }
    let chips: std::collections::BTreeSet<&str> =
        gpus.iter().filter_map(|d| d.chip.as_deref()).collect();
    let mut message = format!(
        "{} GPU(s), chip(s) {}",
        gpus.len(),
        chips.into_iter().collect::<Vec<_>>().join(", ")
    );
    // A mixed node: the per-GPU modes must fit this host's GPUs, or `cchost run`
    // switches and serves none of them (docs/config.md, `[[cc.modes]]`).
    if !ctx.config.cc.modes.is_empty() {
        use crate::config::{RequestedMode, cc_modes::resolve};
        let slots = crate::inventory::cc_split::gpu_slots(&ctx.inv.gpus);
        match resolve(&ctx.config.cc.modes, &slots) {
            Err(e) => {
                return CheckOutcome::fail(
                    e.to_string(),
                    "make [[cc.modes]] name every GPU of this host exactly once \
                     (docs/config.md); until then `cchost run` switches and serves no GPU",
                );
            }
            Ok(m) => {
                let on = m.values().filter(|v| **v == RequestedMode::On).count();
                message.push_str(&format!(
                    "; cc.modes: {on} CC (on), {} non-CC (off)",
                    m.len() - on
                ));
            }
        }
    }
    CheckOutcome::pass(message)
}

/// Native CC mode needs user-space BAR0 mappings (sysfs `resource0`), which kernel
/// lockdown refuses (inventory/lockdown.rs). Binding and passthrough are unaffected.
fn bar_access(ctx: &Ctx) -> CheckOutcome {
    if ctx.inv.gpus.gpus().all(|d| !d.cc_capable) {
        return CheckOutcome::skip("no CC-capable GPU");
    }
    let l = &ctx.inv.lockdown;
    let evidence = l.evidence.clone().unwrap_or_default();
    if l.blocks_bar_mappings() {
        return CheckOutcome::warn(
            format!(
                "kernel lockdown is on ({evidence}): the kernel refuses mappings of resource0, \
                 so `cchost gpu cc` cannot query or switch CC mode here (passthrough still works)"
            ),
            "query and switch CC mode from a boot without kernel lockdown (Secure Boot \
             off, or `mokutil --disable-validation`)",
        );
    }
    match l.mode {
        Some(_) => CheckOutcome::pass(evidence),
        None => CheckOutcome::pass("no lockdown reported (no securityfs file, no log line)"),
    }
}

fn groups(ctx: &Ctx) -> CheckOutcome {
    let devs = &ctx.inv.gpus.devices;
    let no_group: Vec<String> = devs
        .iter()
        .filter(|d| d.iommu_group.is_none())
        .map(|d| d.address.to_string())
        .collect();
    if !no_group.is_empty() {
        let remedy = if ctx.inv.iommu.mode == IommuMode::Off {
            super::remedy::of_verdict(&ctx.inv.iommu.enabled, ctx.inv)
                .unwrap_or_else(|| "enable the IOMMU".into())
        } else {
            "enable the IOMMU for these devices (check the BIOS and the kernel log)".into()
        };
        return CheckOutcome::fail(
            format!(
                "no IOMMU group (passthrough impossible): {}",
                no_group.join(", ")
            ),
            remedy,
        );
    }
    let shared: Vec<String> = devs
        .iter()
        .filter_map(|d| {
            let f = d.foreign_group_members();
            (!f.is_empty()).then(|| {
                let who: Vec<String> = f
                    .iter()
                    .map(|m| {
                        format!(
                            "{} ({})",
                            m.address,
                            m.driver.as_deref().unwrap_or("no driver")
                        )
                    })
                    .collect();
                format!("{} shares group with {}", d.address, who.join(", "))
            })
        })
        .collect();
    if !shared.is_empty() {
        return CheckOutcome::fail(
            shared.join("; "),
            "move the card to another slot, or enable ACS on the upstream bridge in the BIOS",
        );
    }
    // VFIO hands out a group only when every device in it is on a vfio driver, on
    // pci-stub, or on none (bridges on pcieport are allowed): drivers/vfio/group.c,
    // vfio_group_viable / vfio_dev_driver_allowed. One NVSwitch of four on vfio-pci
    // with the others on a host driver is a group no guest can open.
    let mut not_viable: Vec<String> = Vec::new();
    let mut fix: Vec<String> = Vec::new();
    for d in devs.iter().filter(|d| d.is_on_vfio()) {
        let Some(g) = &d.iommu_group else { continue };
        for m in &g.others {
            let Some(drv) = m.driver.as_deref() else {
                continue;
            };
            if m.bridge || drv.contains("vfio") || drv == "pci-stub" {
                continue;
            }
            not_viable.push(format!(
                "group {}: {} is on {} but {} is on {drv}",
                g.number,
                d.address,
                d.driver.as_deref().unwrap_or("vfio"),
                m.address
            ));
            fix.push(m.address.to_string());
        }
    }
    if !not_viable.is_empty() {
        fix.sort();
        fix.dedup();
        return CheckOutcome::fail(
            format!("not viable for VFIO: {}", not_viable.join("; ")),
            format!(
                "put the whole group on vfio: cchost gpu bind {} (or release the group with cchost gpu unbind)",
                fix.join(" ")
            ),
        );
    }
    let mut sizes: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
    for d in devs {
        if let Some(g) = &d.iommu_group {
            *sizes.entry(g.number).or_default() += 1;
        }
    }
    let shared_groups: Vec<String> = sizes
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(g, n)| format!("group {g} holds {n} (passed through together)"))
        .collect();
    CheckOutcome::pass(if shared_groups.is_empty() {
        format!(
            "{} device(s), one group each, no foreign members",
            devs.len()
        )
    } else {
        format!(
            "{} device(s) in {} group(s), no foreign members; {}",
            devs.len(),
            sizes.len(),
            shared_groups.join(", ")
        )
    })
}

fn boot_vga(ctx: &Ctx) -> CheckOutcome {
    match ctx.inv.gpus.devices.iter().find(|d| d.boot_vga) {
        Some(d) => CheckOutcome::warn(
            format!(
                "{} drives the boot console; cchost will not bind it",
                d.address
            ),
            "use another display adapter (BMC/iGPU) if this GPU should go to a guest",
        ),
        None => CheckOutcome::pass("none"),
    }
}

fn vfio_module(ctx: &Ctx) -> CheckOutcome {
    let k = &ctx.inv.kernel;
    let s = k.module("vfio_pci");
    if s.available() {
        CheckOutcome::pass(format!("vfio_pci {}", super::host::state_word(s)))
    } else {
        CheckOutcome::warn(
            format!("vfio_pci {}", super::host::state_word(s)),
            "modprobe vfio-pci (cchost apply loads it when binding)",
        )
    }
}

fn vfio_bound(ctx: &Ctx) -> CheckOutcome {
    let want: Vec<&GpuDevice> = ctx
        .inv
        .gpus
        .devices
        .iter()
        .filter(|d| d.kind == GpuKind::Gpu && !d.boot_vga)
        .collect();
    let bad: Vec<String> = want
        .iter()
        .filter(|d| !d.is_on_vfio())
        .map(|d| {
            format!(
                "{} ({})",
                d.address,
                d.driver.as_deref().unwrap_or("no driver")
            )
        })
        .collect();
    if want.is_empty() {
        CheckOutcome::pass("no GPU to pass through")
    } else if !bad.is_empty() {
        // Only offer `gpu bind --all` when that command would do it: the same plan it
        // makes, with the same refusals.
        let refusal = ctx.bind_all.and_then(|r| r.as_ref().err());
        let remedy = match refusal {
            Some(crate::plan::vfio::PlanError::Refused(why)) => format!(
                "`cchost gpu bind --all` refuses this host now; first fix: {}",
                why.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Some(e) => format!("`cchost gpu bind --all` cannot plan here: {e}"),
            None => {
                "cchost gpu bind --all (or set vfio.bind_on_start = true for `cchost run`)".into()
            }
        };
        CheckOutcome::warn(
            format!(
                "{} of {} not on vfio: {}",
                bad.len(),
                want.len(),
                bad.join(", ")
            ),
            remedy,
        )
    } else {
        CheckOutcome::pass(format!("{} device(s) on vfio", want.len()))
    }
}
