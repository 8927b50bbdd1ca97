//! AMD SEV, SEV-ES and SEV-SNP host readiness: kvm_amd's `sev`, `sev_es`, `sev_snp`
//! parameters (`Y` or `1`), `/dev/sev` (the ccp driver), ASID counts from
//! misc.capacity, the firmware API version from the kernel log, and the IOMMU
//! passthrough pitfall that silently turns SNP off (docs/facts/cpu-tee.md#sev-linux, #iommu).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cpuinfo::{CpuInfo, CpuVendor};
use super::iommu::IommuInfo;
use super::kernel::KernelInfo;
use super::kernel_log::KernelLogInfo;
use super::misc::MiscCapacity;
use super::modules::ModuleParam;
use super::verdict::{Blocker, Evidence, Tee, Verdict};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SevInfo {
    pub sev: Verdict,
    pub sev_es: Verdict,
    pub snp: Verdict,
    /// kvm_amd parameters as read.
    pub params: BTreeMap<String, String>,
    /// `/dev/sev` exists (platform commands, attestation reports).
    pub dev_sev: bool,
    /// misc.capacity `sev` (SEV ASIDs).
    pub asids: Option<u64>,
    /// misc.capacity `sev_es` (SEV-ES and SNP ASIDs).
    pub es_asids: Option<u64>,
    /// `SEV API:x.y build:z` / `SEV-SNP API:x.y build:z` from the kernel log.
    pub firmware: Vec<String>,
}

/// The kvm_amd parameters, with the cpuinfo flag and the misc key for each level.
pub(crate) const LEVELS: [(&str, &str, &str); 3] = [
    ("sev", "sev", "sev"),
    ("sev_es", "sev_es", "sev_es"),
    ("sev_snp", "sev_snp", "sev_es"),
];

pub struct SevInputs<'a> {
    pub cpu: Option<&'a CpuInfo>,
    pub kernel: &'a KernelInfo,
    pub log: &'a KernelLogInfo,
    pub iommu: &'a IommuInfo,
    /// kvm_amd parameters by name (`sev`, `sev_es`, `sev_snp`); absent = no file.
    pub params: &'a BTreeMap<String, ModuleParam>,
    pub misc: Option<&'a MiscCapacity>,
}

impl SevInfo {
    pub fn judge(i: &SevInputs) -> Self {
        let dev_sev = i.kernel.node("/dev/sev");
        let misc_get = |k: &str| i.misc.and_then(|m| m.get(k));
        let firmware: Vec<String> = i
            .log
            .relevant
            .iter()
            .filter(|l| l.contains("API:") && l.contains("SEV"))
            .cloned()
            .collect();
        let [sev, sev_es, snp] = LEVELS.map(|(param, flag, misc_key)| {
            level_verdict(i, param, flag, misc_key, dev_sev, &firmware)
        });
        SevInfo {
            sev,
            sev_es,
            snp,
            params: i
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.raw.clone()))
                .collect(),
            dev_sev,
            asids: misc_get("sev"),
            es_asids: misc_get("sev_es"),
            firmware,
        }
    }
}

fn level_verdict(
    i: &SevInputs,
    param: &'static str,
    flag: &str,
    misc_key: &str,
    dev_sev: bool,
    firmware: &[String],
) -> Verdict {
    let (name, tee) = match param {
        "sev" => ("SEV", Tee::Sev),
        "sev_es" => ("SEV-ES", Tee::SevEs),
        _ => ("SEV-SNP", Tee::SevSnp),
    };
    let snp = param == "sev_snp";
    let p = i.params.get(param);
    let has_flag = i.cpu.is_some_and(|c| c.has_flag(flag));
    let mut ev = Vec::new();
    if let Some(c) = i.cpu {
        ev.push(Evidence::new(
            "/proc/cpuinfo",
            format!("vendor_id {}", c.vendor_id),
        ));
        ev.push(Evidence::new(
            "/proc/cpuinfo",
            format!(
                "flag {flag} {}",
                if has_flag { "present" } else { "absent" }
            ),
        ));
    }
    match p {
        Some(p) => ev.push(Evidence::new(&p.path, p.raw.clone())),
        None => ev.push(Evidence::new(
            format!("/sys/module/kvm_amd/parameters/{param}"),
            "absent",
        )),
    }
    if let Some(m) = i.misc
        && let Some(n) = m.get(misc_key)
    {
        ev.push(Evidence::new(m.path.clone(), format!("{misc_key} {n}")));
    }
    ev.push(Evidence::new(
        "/dev/sev",
        if dev_sev { "present" } else { "absent" },
    ));
    for f in firmware {
        ev.push(Evidence::new("kernel log", f.clone()));
    }
    let failure = i
        .log
        .relevant
        .iter()
        .rev()
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            let about = if snp {
                lower.contains("snp")
            } else {
                lower.contains("sev") && !lower.contains("snp")
            };
            about
                && (lower.contains("fail")
                    || lower.contains("cannot be supported")
                    || lower.contains("not enabled"))
        })
        .cloned();
    if let Some(f) = &failure {
        ev.push(Evidence::new("kernel log", f.clone()));
    }

    if let Some(c) = i.cpu
        && c.vendor != CpuVendor::Amd
    {
        return Verdict::not_applicable(ev, format!("not an AMD CPU ({})", c.vendor_id));
    }
    if p.is_some_and(ModuleParam::is_on) {
        return Verdict::yes(ev);
    }
    if let Some(c) = i.cpu
        && c.has_flag("hypervisor")
        && !has_flag
    {
        return Verdict::no(
            ev,
            format!(
                "this is a virtual machine (cpuinfo flag hypervisor): a {name} host must be bare metal"
            ),
            Blocker::VirtualMachine,
        );
    }
    // iommu=pt may also clear the CPU flag, so it is named before the BIOS.
    if snp && let Some((reason, blocker)) = i.iommu.snp_blocker() {
        return Verdict::no(ev, format!("SNP off: {reason}"), blocker);
    }
    if i.cpu.is_some() && !has_flag {
        return Verdict::no(
            ev,
            format!("the CPU does not report {flag}: {name} is off in the BIOS or not supported"),
            Blocker::BiosOff { tee },
        );
    }
    if p.is_none() && !i.kernel.module("kvm_amd").available() {
        return Verdict::no(
            ev,
            "kvm_amd is not loaded",
            Blocker::ModuleNotLoaded {
                module: "kvm_amd",
                args: "",
            },
        );
    }
    if p.is_none() {
        return Verdict::no(
            ev,
            format!("this kernel's kvm_amd has no {param} parameter"),
            Blocker::KernelLacks { tee },
        );
    }
    if let Some(f) = failure {
        return Verdict::no(
            ev,
            format!("{name} initialisation failed: {f}"),
            Blocker::InitFailed { tee },
        );
    }
    Verdict::no(
        ev,
        format!(
            "kvm_amd was loaded with {param}={}",
            p.map(|p| p.raw.as_str()).unwrap_or("?")
        ),
        Blocker::ParamOff {
            module: "kvm_amd",
            param,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::cmdline::Cmdline;
    use crate::inventory::iommu::IommuMode;
    use crate::inventory::kernel::ModuleState;
    use crate::inventory::verdict::State;
    use std::path::Path;

    fn iommu(cmdline: &str, groups: usize) -> IommuInfo {
        let t = crate::fixture::Tree::new();
        t.file("/sys/firmware/acpi/tables/IVRS", "");
        for g in 0..groups {
            t.file(
                &format!("/sys/kernel/iommu_groups/{g}/type"),
                if cmdline.contains("pt") {
                    "identity\n"
                } else {
                    "DMA\n"
                },
            );
        }
        let mut p = Vec::new();
        IommuInfo::collect(
            &t.host,
            &Cmdline::parse(Path::new("/proc/cmdline"), cmdline).unwrap(),
            None,
            &KernelLogInfo::default(),
            &mut p,
        )
    }

    fn params(v: &[(&str, &str)]) -> BTreeMap<String, ModuleParam> {
        v.iter()
            .map(|(k, r)| {
                (
                    k.to_string(),
                    ModuleParam {
                        path: format!("/sys/module/kvm_amd/parameters/{k}"),
                        raw: r.to_string(),
                    },
                )
            })
            .collect()
    }

    fn judge(cmdline: &str, groups: usize, p: &[(&str, &str)], log: &[&str]) -> SevInfo {
        judge_flags("svm sev sev_es sev_snp", cmdline, groups, p, log)
    }

    fn judge_flags(
        flags: &str,
        cmdline: &str,
        groups: usize,
        p: &[(&str, &str)],
        log: &[&str],
    ) -> SevInfo {
        let cpu = CpuInfo::parse(
            Path::new("/proc/cpuinfo"),
            &format!("vendor_id : AuthenticAMD\nflags : {flags}\n"),
        )
        .unwrap();
        let mut k = KernelInfo {
            cmdline: Cmdline::parse(Path::new("/proc/cmdline"), cmdline).unwrap(),
            ..Default::default()
        };
        k.modules.insert("kvm_amd".into(), ModuleState::Loaded);
        k.device_nodes.insert("/dev/sev".into(), true);
        let log = KernelLogInfo {
            readable: true,
            relevant: log.iter().map(|s| s.to_string()).collect(),
        };
        let misc = MiscCapacity {
            path: "/sys/fs/cgroup/misc.capacity".to_string(),
            resources: BTreeMap::from([("sev".into(), 99), ("sev_es".into(), 410)]),
        };
        let io = iommu(cmdline, groups);
        let params = params(p);
        SevInfo::judge(&SevInputs {
            cpu: Some(&cpu),
            kernel: &k,
            log: &log,
            iommu: &io,
            params: &params,
            misc: Some(&misc),
        })
    }

    #[test]
    fn snp_host() {
        let s = judge(
            "",
            4,
            &[("sev", "Y"), ("sev_es", "Y"), ("sev_snp", "1")],
            &["ccp 0000:22:00.1: SEV-SNP API:1.55 build:21"],
        );
        assert!(s.sev.is_yes() && s.sev_es.is_yes() && s.snp.is_yes());
        assert_eq!((s.asids, s.es_asids), (Some(99), Some(410)));
        assert_eq!(s.firmware, ["ccp 0000:22:00.1: SEV-SNP API:1.55 build:21"]);
        assert!(s.dev_sev);
    }

    #[test]
    fn iommu_pt_turns_snp_off_with_reason_and_blocker() {
        let s = judge(
            "iommu=pt",
            4,
            &[("sev", "Y"), ("sev_es", "Y"), ("sev_snp", "N")],
            &[
                "AMD-Vi: SNP: IOMMU disabled or configured in passthrough mode, SNP cannot be supported.",
            ],
        );
        assert!(s.sev.is_yes() && s.sev_es.is_yes());
        assert_eq!(s.snp.state, State::No);
        assert_eq!(
            s.snp.reason.as_deref(),
            Some(
                "SNP off: IOMMU in passthrough mode (iommu=pt on the kernel command line) disables SNP"
            )
        );
        assert_eq!(
            s.snp.blocker,
            Some(Blocker::IommuPassthrough {
                argument: Some("iommu=pt".into())
            })
        );
        assert!(iommu("iommu=pt", 1).mode == IommuMode::Passthrough);
    }

    #[test]
    fn firmware_failure_and_plain_off() {
        let s = judge(
            "",
            4,
            &[("sev", "Y"), ("sev_es", "Y"), ("sev_snp", "N")],
            &["SEV-SNP: failed to INIT error 0x3"],
        );
        assert!(s.snp.reason.as_deref().unwrap().contains("failed to INIT"));
        assert_eq!(
            s.snp.blocker,
            Some(Blocker::InitFailed { tee: Tee::SevSnp })
        );
        let s = judge(
            "",
            4,
            &[("sev", "0"), ("sev_es", "N"), ("sev_snp", "N")],
            &[],
        );
        assert_eq!(
            s.sev.blocker,
            Some(Blocker::ParamOff {
                module: "kvm_amd",
                param: "sev"
            })
        );
        assert_eq!(
            s.snp.blocker,
            Some(Blocker::ParamOff {
                module: "kvm_amd",
                param: "sev_snp"
            })
        );
        let s = judge("", 4, &[("sev", "Y")], &[]);
        assert!(
            s.snp
                .reason
                .as_deref()
                .unwrap()
                .contains("no sev_snp parameter")
        );
        assert_eq!(
            s.snp.blocker,
            Some(Blocker::KernelLacks { tee: Tee::SevSnp })
        );
    }

    #[test]
    fn virtual_machine_and_bios_are_named() {
        let s = judge_flags("svm hypervisor", "", 4, &[], &[]);
        assert!(s.snp.reason.as_deref().unwrap().contains("virtual machine"));
        assert_eq!(s.snp.blocker, Some(Blocker::VirtualMachine));
        let s = judge_flags(
            "svm sev",
            "",
            4,
            &[("sev", "Y"), ("sev_es", "N"), ("sev_snp", "N")],
            &[],
        );
        assert!(s.sev.is_yes());
        assert_eq!(
            s.snp.blocker,
            Some(Blocker::BiosOff { tee: Tee::SevSnp }),
            "{:?}",
            s.snp
        );
        // iommu=pt is named even when the CPU flag is gone.
        let s = judge_flags("svm sev sev_es", "iommu=pt", 4, &[("sev_snp", "N")], &[]);
        assert!(s.snp.reason.as_deref().unwrap().contains("iommu=pt"));
        assert!(matches!(
            s.snp.blocker,
            Some(Blocker::IommuPassthrough { argument: Some(ref a) }) if a == "iommu=pt"
        ));
    }
}
