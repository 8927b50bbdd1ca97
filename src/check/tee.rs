//! The TEE subtree: Intel TDX or AMD SEV-SNP, chosen by the profile. Each level is a
//! precondition of the next, so the first failure is the thing to fix.

use crate::inventory::tdx::TdxModuleState;
use crate::inventory::{Blocker, CpuVendor, State, Tee};

use super::host::{state_word, verdict_fail};
use super::remedy::{of_verdict, remedy};
use super::{Check, CheckId, CheckOutcome, Ctx, Profile};

/// Oldest SEV firmware with a working SNP (snphost; AMDESE/AMDSEV#176).
const MIN_SNP_FIRMWARE: (u32, u32) = (1, 51);

pub(crate) fn tee(profile: Option<Profile>) -> Check {
    match profile {
        Some(Profile::Tdx) => tdx(),
        Some(Profile::Snp) => snp(),
        _ => Check::new(CheckId::Tee, no_tee),
    }
}

fn no_tee(ctx: &Ctx) -> CheckOutcome {
    match ctx.inv.cpu.as_ref() {
        None => CheckOutcome::fail(
            "the CPU could not be identified (/proc/cpuinfo unreadable)",
            "make /proc/cpuinfo readable, or pick one with --profile tdx|snp",
        ),
        Some(c) if c.vendor == CpuVendor::Arm && ctx.inv.cca.verdict.state == State::No => {
            let v = &ctx.inv.cca.verdict;
            CheckOutcome::fail(
                v.reason
                    .clone()
                    .unwrap_or_else(|| "no CPU TEE on this platform".into()),
                of_verdict(v, ctx.inv).unwrap_or_default(),
            )
        }
        Some(c) if c.vendor == CpuVendor::Arm => {
            let v = &ctx.inv.cca.verdict;
            CheckOutcome::warn(
                format!(
                    "Arm CCA: unknown ({})",
                    v.reason.as_deref().unwrap_or("no probe")
                ),
                "cchost cannot confirm Arm CCA yet; check your vendor's RME host kernel documentation",
            )
        }
        Some(c) => CheckOutcome::fail(
            format!("{}: neither Intel TDX nor AMD SEV-SNP", c.vendor_id),
            "use an Intel Xeon (4th gen or newer) with TDX or an AMD EPYC (7003 or newer) with SEV-SNP",
        ),
    }
}

fn tdx() -> Check {
    Check::new(CheckId::TdxCpu, |ctx| {
        vendor_is(ctx, CpuVendor::Intel, "snp")
    })
    .with([Check::new(CheckId::TdxBios, tdx_bios).with([Check::new(
        CheckId::TdxKernel,
        tdx_kernel,
    )
    .with([
        Check::new(CheckId::TdxNohibernate, tdx_nohibernate),
        Check::new(CheckId::TdxModule, tdx_module),
        Check::new(CheckId::TdxKvm, tdx_kvm).with([Check::new(CheckId::TdxKeys, tdx_keys)]),
    ])])])
}

fn vendor_is(ctx: &Ctx, want: CpuVendor, other_profile: &str) -> CheckOutcome {
    match ctx.inv.cpu.as_ref() {
        Some(c) if c.vendor == want => CheckOutcome::pass(c.vendor_id.clone()),
        Some(c) => CheckOutcome::fail(
            format!("this CPU is {}", c.vendor_id),
            format!("check this host with --profile {other_profile} (or auto)"),
        ),
        None => CheckOutcome::fail(
            "/proc/cpuinfo could not be read",
            "make /proc/cpuinfo readable under --host-root",
        ),
    }
}

fn is_vm(ctx: &Ctx) -> bool {
    ctx.inv
        .cpu
        .as_ref()
        .is_some_and(|c| c.has_flag("hypervisor"))
}

fn tdx_bios(ctx: &Ctx) -> CheckOutcome {
    let t = &ctx.inv.tdx;
    if t.host_platform_flag {
        CheckOutcome::pass("cpuinfo flag tdx_host_platform present")
    } else if t.verdict.is_yes() {
        CheckOutcome::pass("kvm_intel tdx=Y (this kernel does not print tdx_host_platform)")
    } else if is_vm(ctx) {
        CheckOutcome::fail(
            "this is a virtual machine (cpuinfo flag hypervisor): TDX hosts are bare metal",
            remedy(&Blocker::VirtualMachine, ctx.inv),
        )
    } else {
        CheckOutcome::fail(
            "no tdx_host_platform CPU flag: the BIOS has not enabled TDX",
            remedy(&Blocker::BiosOff { tee: Tee::Tdx }, ctx.inv),
        )
    }
}

fn tdx_kernel(ctx: &Ctx) -> CheckOutcome {
    let t = &ctx.inv.tdx;
    match &t.kvm_param {
        Some(v) => CheckOutcome::pass(format!("kvm_intel has a tdx parameter (= {v})")),
        None if !ctx.inv.kernel.module("kvm_intel").available() => CheckOutcome::fail(
            "kvm_intel is not loaded",
            remedy(
                &Blocker::ModuleNotLoaded {
                    module: "kvm_intel",
                    args: "tdx=1",
                },
                ctx.inv,
            ),
        ),
        None => CheckOutcome::fail(
            "kvm_intel has no tdx parameter: this kernel lacks TDX host support",
            remedy(&Blocker::KernelLacks { tee: Tee::Tdx }, ctx.inv),
        ),
    }
}

fn tdx_nohibernate(ctx: &Ctx) -> CheckOutcome {
    if ctx.inv.tdx.nohibernate {
        CheckOutcome::pass("nohibernate on the kernel command line")
    } else if ctx.inv.tdx.verdict.is_yes() {
        CheckOutcome::warn(
            "nohibernate missing (TDX is up now, but kernels that check refuse TDX without it)",
            "add nohibernate to the kernel command line",
        )
    } else {
        CheckOutcome::fail(
            "nohibernate missing: TDX initialisation is refused while hibernation is possible",
            remedy(&Blocker::HibernationOn, ctx.inv),
        )
    }
}

fn tdx_module(ctx: &Ctx) -> CheckOutcome {
    let t = &ctx.inv.tdx;
    let mut line = t.module_log.clone().unwrap_or_default();
    if let Some(v) = &t.module_version {
        line = format!("version {v}; {line}");
    }
    let fail = |b: Blocker| CheckOutcome::fail(line.clone(), remedy(&b, ctx.inv));
    match t.module {
        TdxModuleState::Initialized => CheckOutcome::pass(line),
        TdxModuleState::Failed => fail(Blocker::InitFailed { tee: Tee::Tdx }),
        TdxModuleState::HibernationBlocked => fail(Blocker::HibernationOn),
        TdxModuleState::NotLoaded => fail(Blocker::TdxModuleAbsent),
        TdxModuleState::Unknown if t.verdict.is_yes() => {
            CheckOutcome::pass("kvm_intel tdx=Y (the kernel log says nothing more)")
        }
        TdxModuleState::Unknown if !ctx.inv.kernel_log.readable => CheckOutcome::warn(
            "the kernel log could not be read",
            "run as root (or with CAP_SYSLOG) to see the TDX module's state",
        ),
        TdxModuleState::Unknown => CheckOutcome::warn(
            "no TDX module line in the kernel log",
            "check `dmesg | grep -i tdx` (the log may have wrapped since boot)",
        ),
    }
}

fn tdx_kvm(ctx: &Ctx) -> CheckOutcome {
    let v = &ctx.inv.tdx.verdict;
    if v.is_yes() {
        CheckOutcome::pass("kvm_intel tdx = Y")
    } else {
        verdict_fail(ctx, v)
    }
}

fn tdx_keys(ctx: &Ctx) -> CheckOutcome {
    match ctx.inv.tdx.keys {
        Some(0) => CheckOutcome::fail(
            "misc cgroup tdx capacity is 0: no KeyIDs for trust domains",
            "set a TME-MT/TDX key split > 0 in the BIOS",
        ),
        Some(n) => CheckOutcome::pass(format!("{n} KeyIDs (at most {n} trust domains)")),
        None => CheckOutcome::warn(
            "no tdx entry in misc.capacity: KeyIDs cannot be counted",
            "mount cgroup v2 (the misc controller, CONFIG_CGROUP_MISC) at /sys/fs/cgroup",
        ),
    }
}

fn snp() -> Check {
    let snp_kvm = Check::new(CheckId::SnpKvm, |ctx| {
        level(ctx, &ctx.inv.sev.snp, "sev_snp")
    })
    .with([
        Check::new(CheckId::SnpAsids, snp_asids),
        Check::new(CheckId::SnpDevSev, snp_dev_sev),
        Check::new(CheckId::SnpFirmware, snp_firmware),
    ]);
    let sev_es = Check::new(CheckId::SnpSevEs, |ctx| {
        level(ctx, &ctx.inv.sev.sev_es, "sev_es")
    })
    .with([snp_kvm]);
    let sev = Check::new(CheckId::SnpSev, |ctx| level(ctx, &ctx.inv.sev.sev, "sev")).with([sev_es]);
    // The BIOS and IOMMU checks do not need kvm_amd: they explain why it is not
    // enough even when it loads.
    Check::new(CheckId::SnpCpu, |ctx| vendor_is(ctx, CpuVendor::Amd, "tdx")).with([
        Check::new(CheckId::SnpBios, snp_bios),
        Check::new(CheckId::SnpIommu, snp_iommu),
        Check::new(CheckId::SnpKvmAmd, snp_kvm_amd).with([sev]),
    ])
}

fn snp_kvm_amd(ctx: &Ctx) -> CheckOutcome {
    let s = ctx.inv.kernel.module("kvm_amd");
    if s.available() || !ctx.inv.sev.params.is_empty() {
        CheckOutcome::pass(format!("kvm_amd {}", state_word(s)))
    } else {
        CheckOutcome::fail(
            format!("kvm_amd {}", state_word(s)),
            remedy(
                &Blocker::ModuleNotLoaded {
                    module: "kvm_amd",
                    args: "",
                },
                ctx.inv,
            ),
        )
    }
}

fn snp_bios(ctx: &Ctx) -> CheckOutcome {
    let has = |f| ctx.inv.cpu.as_ref().is_some_and(|c| c.has_flag(f));
    if has("sev_snp") {
        CheckOutcome::pass("cpuinfo flags sev_snp present")
    } else if ctx.inv.sev.snp.is_yes() {
        CheckOutcome::pass("kvm_amd sev_snp on (cpuinfo does not show the flag)")
    } else if is_vm(ctx) {
        CheckOutcome::fail(
            "this is a virtual machine (cpuinfo flag hypervisor): SEV-SNP hosts are bare metal",
            remedy(&Blocker::VirtualMachine, ctx.inv),
        )
    } else {
        CheckOutcome::fail(
            format!(
                "no sev_snp CPU flag (sev {}, sev_es {})",
                if has("sev") { "present" } else { "absent" },
                if has("sev_es") { "present" } else { "absent" }
            ),
            remedy(&Blocker::BiosOff { tee: Tee::SevSnp }, ctx.inv),
        )
    }
}

fn snp_iommu(ctx: &Ctx) -> CheckOutcome {
    match ctx.inv.iommu.snp_blocker() {
        None => CheckOutcome::pass(format!("IOMMU mode {:?}", ctx.inv.iommu.mode).to_lowercase()),
        Some((reason, b)) => CheckOutcome::fail(reason, remedy(&b, ctx.inv)),
    }
}

fn level(ctx: &Ctx, v: &crate::inventory::Verdict, param: &str) -> CheckOutcome {
    match v.state {
        State::Yes => CheckOutcome::pass(format!(
            "kvm_amd {param} = {}",
            ctx.inv
                .sev
                .params
                .get(param)
                .map(String::as_str)
                .unwrap_or("on")
        )),
        _ => verdict_fail(ctx, v),
    }
}

fn snp_asids(ctx: &Ctx) -> CheckOutcome {
    match ctx.inv.sev.es_asids {
        Some(0) => CheckOutcome::fail(
            "misc cgroup sev_es capacity is 0: no ASIDs for SEV-ES/SNP guests",
            "raise the SEV-ES ASID count in the BIOS (minimum SEV non-ES ASID)",
        ),
        Some(n) => CheckOutcome::pass(format!("{n} ASIDs (at most {n} SNP guests)")),
        None => CheckOutcome::warn(
            "no sev_es entry in misc.capacity: ASIDs cannot be counted",
            "mount cgroup v2 (the misc controller, CONFIG_CGROUP_MISC) at /sys/fs/cgroup",
        ),
    }
}

fn snp_dev_sev(ctx: &Ctx) -> CheckOutcome {
    if ctx.inv.sev.dev_sev {
        CheckOutcome::pass("/dev/sev present")
    } else {
        CheckOutcome::warn(
            "/dev/sev missing: no platform status or attestation certificates",
            "modprobe ccp",
        )
    }
}

/// `… SEV-SNP API:1.55 build:21` -> (1, 55).
pub(crate) fn parse_api_version(line: &str) -> Option<(u32, u32)> {
    let rest = &line[line.find("API:")? + 4..];
    let ver = rest.split_whitespace().next()?;
    let (maj, min) = ver.split_once('.')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

fn snp_firmware(ctx: &Ctx) -> CheckOutcome {
    let fw = &ctx.inv.sev.firmware;
    let snp_line = fw
        .iter()
        .rev()
        .find(|l| l.contains("SNP"))
        .or_else(|| fw.last());
    match snp_line.and_then(|l| parse_api_version(l).map(|v| (l, v))) {
        Some((l, v)) if v >= MIN_SNP_FIRMWARE => CheckOutcome::pass(l.clone()),
        Some((l, _)) => CheckOutcome::fail(
            format!("{l}: older than 1.51"),
            "update the SEV firmware (a BIOS update, or a newer amd_sev_fam19h_model*.sbin in /lib/firmware/amd)",
        ),
        None if !ctx.inv.kernel_log.readable => CheckOutcome::warn(
            "firmware version unknown: the kernel log could not be read",
            "run as root (or with CAP_SYSLOG)",
        ),
        None => CheckOutcome::warn(
            "no SEV API version line in the kernel log",
            "check `dmesg | grep -i 'SEV.*API'` (the log may have wrapped since boot)",
        ),
    }
}
