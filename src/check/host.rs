//! Host checks every confidential-container host needs: CPU and KVM, the IOMMU, vsock,
//! and whether the inventory itself could read everything.

use crate::inventory::{Blocker, CpuVendor, IommuMode};

use super::remedy::{of_verdict, remedy};
use super::{Check, CheckId, CheckOutcome, Ctx};

pub(crate) fn cpu_and_kvm() -> Check {
    Check::new(CheckId::Cpu, cpu).with([Check::new(CheckId::Kvm, kvm)])
}

fn cpu(ctx: &Ctx) -> CheckOutcome {
    match &ctx.inv.cpu {
        Some(c) => CheckOutcome::pass(format!(
            "{} ({}, {} logical CPUs{})",
            c.model_name.as_deref().unwrap_or("unknown model"),
            c.vendor_id,
            c.logical_cpus,
            if c.has_flag("hypervisor") {
                ", virtual machine"
            } else {
                ""
            }
        )),
        None => {
            // Missing is a mount problem; anything else (permission, a FIFO, garbage)
            // is about the file itself, and mounting /proc would not help.
            let why = ctx
                .inv
                .problems
                .iter()
                .find(|p| p.path == std::path::Path::new("/proc/cpuinfo"));
            match why {
                Some(p) if !p.message.contains("No such file") => CheckOutcome::fail(
                    format!("/proc/cpuinfo could not be read: {}", p.message),
                    "run cchost as root, with the host's own /proc (not a copy or a stand-in)",
                ),
                _ => CheckOutcome::fail(
                    "/proc/cpuinfo could not be read",
                    "run cchost with /proc mounted (in a container: mount the host's /proc under --host-root)",
                ),
            }
        }
    }
}

fn kvm(ctx: &Ctx) -> CheckOutcome {
    if ctx.inv.kernel.node("/dev/kvm") {
        return CheckOutcome::pass("/dev/kvm present");
    }
    let flag = match ctx.inv.cpu.as_ref().map(|c| c.vendor) {
        Some(CpuVendor::Intel) => "vmx",
        Some(CpuVendor::Amd) => "svm",
        _ => "",
    };
    let has_flag = ctx
        .inv
        .cpu
        .as_ref()
        .is_some_and(|c| !flag.is_empty() && c.has_flag(flag));
    if !flag.is_empty() && !has_flag {
        return CheckOutcome::fail(
            format!("/dev/kvm missing and the CPU does not report {flag}"),
            "enable hardware virtualisation (VT-x / AMD-V) in the BIOS; nested guests need it exposed",
        );
    }
    let module = match ctx.inv.cpu.as_ref().map(|c| c.vendor) {
        Some(CpuVendor::Amd) => "kvm_amd",
        _ => "kvm_intel",
    };
    CheckOutcome::fail(
        "/dev/kvm missing",
        remedy(&Blocker::ModuleNotLoaded { module, args: "" }, ctx.inv),
    )
}

pub(super) fn state_word(s: crate::inventory::ModuleState) -> &'static str {
    use crate::inventory::ModuleState::*;
    match s {
        Loaded => "loaded",
        BuiltIn => "built in",
        Present => "present",
        Absent => "absent",
        Unknown => "state unknown",
    }
}

pub fn iommu() -> Check {
    Check::new(CheckId::IommuFirmware, iommu_firmware).with([Check::new(
        CheckId::IommuEnabled,
        iommu_enabled,
    )
    .with([Check::new(CheckId::IommuMode, iommu_mode)])])
}

pub(crate) fn iommu_cmdline() -> Check {
    Check::new(CheckId::IommuCmdline, iommu_cmdline_check)
}

fn iommu_firmware(ctx: &Ctx) -> CheckOutcome {
    let i = &ctx.inv.iommu;
    if i.present.is_yes() {
        let mut what: Vec<String> = i.acpi_tables.iter().map(|t| format!("ACPI {t}")).collect();
        what.extend(i.units.iter().cloned());
        CheckOutcome::pass(what.join(", "))
    } else {
        verdict_fail(ctx, &i.present)
    }
}

fn iommu_enabled(ctx: &Ctx) -> CheckOutcome {
    let i = &ctx.inv.iommu;
    if i.enabled.is_yes() {
        CheckOutcome::pass(format!(
            "{} IOMMU groups; iommufd (/dev/iommu) {}",
            i.groups,
            if i.iommufd { "present" } else { "absent" }
        ))
    } else {
        verdict_fail(ctx, &i.enabled)
    }
}

fn iommu_mode(ctx: &Ctx) -> CheckOutcome {
    let i = &ctx.inv.iommu;
    let types: Vec<String> = i
        .group_types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    let detail = if types.is_empty() {
        String::new()
    } else {
        format!(" (groups: {})", types.join(", "))
    };
    match i.mode {
        IommuMode::Translated => CheckOutcome::pass(format!("translated{detail}")),
        IommuMode::Passthrough | IommuMode::Mixed if ctx.profile != Some(super::Profile::Snp) => {
            CheckOutcome::pass(format!(
                "{}{detail}: identity-mapped default domains (fine for VFIO; SEV-SNP would need translation)",
                if i.mode == IommuMode::Mixed {
                    "partly passthrough"
                } else {
                    "passthrough"
                }
            ))
        }
        IommuMode::Passthrough | IommuMode::Mixed => {
            let blocker = i.snp_blocker();
            let (remedy, what) = match blocker {
                Some((_, b)) => (remedy(&b, ctx.inv), "passthrough"),
                None => (
                    "remove iommu=pt / iommu.passthrough=1 from the kernel command line"
                        .to_string(),
                    "partly passthrough",
                ),
            };
            CheckOutcome::warn(
                format!("{what}{detail}: fine for VFIO, but SEV-SNP needs translation"),
                remedy,
            )
        }
        IommuMode::Unknown => CheckOutcome::pass(format!(
            "mode not reported by this kernel (no iommu_groups/*/type){}",
            i.default_domain_log
                .as_deref()
                .map(|l| format!("; log: {l}"))
                .unwrap_or_default()
        )),
        IommuMode::Off => CheckOutcome::fail(
            "no IOMMU groups",
            of_verdict(&i.enabled, ctx.inv).unwrap_or_else(|| "enable the IOMMU".into()),
        ),
    }
}

fn iommu_cmdline_check(ctx: &Ctx) -> CheckOutcome {
    let i = &ctx.inv.iommu;
    if let Some(w) = i.cmdline_warnings.first() {
        return CheckOutcome::warn(
            w.clone(),
            "remove amd_iommu=on from the kernel command line (cchost apply does)",
        );
    }
    if i.cmdline_args.is_empty() {
        CheckOutcome::pass("none given (kernel defaults)")
    } else {
        CheckOutcome::pass(i.cmdline_args.join(" "))
    }
}

pub fn vsock() -> Check {
    Check::new(CheckId::Vsock, vsock_check)
}

fn vsock_check(ctx: &Ctx) -> CheckOutcome {
    let k = &ctx.inv.kernel;
    let m = k.module("vhost_vsock");
    if k.node("/dev/vhost-vsock") {
        return CheckOutcome::pass(format!(
            "/dev/vhost-vsock present; vhost_vsock {}",
            state_word(m)
        ));
    }
    if m.available() {
        return CheckOutcome::warn(
            format!(
                "vhost_vsock {} but /dev/vhost-vsock is missing",
                state_word(m)
            ),
            "check that devtmpfs is mounted on /dev (or mknod /dev/vhost-vsock c 10 241)",
        );
    }
    let remedy = if k.modules_supported {
        "modprobe vhost_vsock and persist it: echo vhost_vsock > /etc/modules-load.d/vhost-vsock.conf".to_string()
    } else {
        remedy(
            &Blocker::ModuleNotLoaded {
                module: "vhost_vsock",
                args: "",
            },
            ctx.inv,
        )
    };
    CheckOutcome::fail(
        format!("vhost_vsock {} and /dev/vhost-vsock missing", state_word(m)),
        remedy,
    )
}

pub(crate) fn inventory_health() -> Check {
    Check::new(CheckId::Inventory, inventory_check)
}

fn inventory_check(ctx: &Ctx) -> CheckOutcome {
    let inv = ctx.inv;
    let problems: Vec<_> = inv.problems.iter().chain(&inv.gpus.problems).collect();
    if let Some(p) = problems.first() {
        return CheckOutcome::warn(
            format!(
                "{} file(s) unreadable or malformed, first: {}: {}",
                problems.len(),
                p.path.display(),
                p.message
            ),
            "see `cchost inventory` for the list; run as root with the host's /sys, /proc and /dev visible",
        );
    }
    if !inv.kernel_log.readable {
        return CheckOutcome::warn(
            "the kernel log (/dev/kmsg) could not be read; some failure reasons may be missing",
            "run as root (or with CAP_SYSLOG)",
        );
    }
    CheckOutcome::pass("every file read and understood")
}

/// A negative inventory verdict as a FAIL (its reason, and the remedy for its blocker).
pub(super) fn verdict_fail(ctx: &Ctx, v: &crate::inventory::Verdict) -> CheckOutcome {
    CheckOutcome::fail(
        v.reason.clone().unwrap_or_else(|| "not available".into()),
        of_verdict(v, ctx.inv).unwrap_or_else(|| "see `cchost inventory` for the evidence".into()),
    )
}
