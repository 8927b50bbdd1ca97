//! Intel TDX host readiness. `/sys/module/kvm_intel/parameters/tdx` = `Y` is the
//! authoritative "initialised and usable" signal: on any failure kvm_intel still loads
//! with the parameter reading `N` (docs/facts/cpu-tee.md#tdx-linux). The CPU flag, the
//! kernel log and the command line only explain *why* it is off.

use serde::{Deserialize, Serialize};

use super::cpuinfo::{CpuInfo, CpuVendor};
use super::kernel::KernelInfo;
use super::kernel_log::KernelLogInfo;
use super::misc::MiscCapacity;
use super::modules::ModuleParam;
use super::verdict::{Blocker, Evidence, Tee, Verdict};

pub(crate) const TDX_PARAM: &str = "/sys/module/kvm_intel/parameters/tdx";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TdxModuleState {
    Initialized,
    Failed,
    /// Initialisation refused because hibernation is enabled (`nohibernate` missing).
    HibernationBlocked,
    NotLoaded,
    /// The kernel log says nothing (or cannot be read).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxInfo {
    /// TDX can run trust domains on this host.
    pub verdict: Verdict,
    /// `kvm_intel` `tdx` parameter as read (`None`: kvm_intel not loaded or no such param).
    pub kvm_param: Option<String>,
    /// cpuinfo `tdx_host_platform` (the BIOS enabled TDX).
    pub host_platform_flag: bool,
    pub module: TdxModuleState,
    /// The kernel-log line the module state comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_log: Option<String>,
    /// The TDX module's version when the kernel log shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_version: Option<String>,
    /// Total TDX KeyIDs (misc.capacity `tdx`).
    pub keys: Option<u64>,
    /// `nohibernate` on the kernel command line (TDX refuses to initialise without it).
    pub nohibernate: bool,
}

/// Reads the module state from the log, loosely: the wording differs by kernel
/// (`module initialized`, `TDX-Module initialized`, `initialization failed (-5)`,
/// `module not loaded`, `initialization failed: Hibernation support is enabled`).
pub(crate) fn module_state(log: &KernelLogInfo) -> (TdxModuleState, Option<String>) {
    let mut state = (TdxModuleState::Unknown, None);
    for line in log.lines_with(&["tdx"]) {
        let l = line.to_ascii_lowercase();
        let s = if l.contains("hibernat") && (l.contains("fail") || l.contains("enabled")) {
            TdxModuleState::HibernationBlocked
        } else if l.contains("fail") {
            TdxModuleState::Failed
        } else if l.contains("not loaded") {
            TdxModuleState::NotLoaded
        } else if l.contains("initialized") || l.contains("initialised") {
            TdxModuleState::Initialized
        } else {
            continue;
        };
        state = (s, Some(line.to_string()));
    }
    state
}

/// The module's version from the kernel log, in either form kernels print it:
/// `TDX module: attributes 0x0, vendor_id 0x8086, major_version 1, minor_version 5,
/// build_date 20240129, build_num 698` (the host-support series that became
/// arch/x86/virt/vmx/tdx/tdx.c), or a dotted `... version 1.5.06.00.0744` /
/// `...: 1.5.06.00.0744` on a TDX line. The last such line wins.
pub fn module_version(log: &KernelLogInfo) -> Option<String> {
    let mut found = None;
    for line in log.lines_with(&["tdx"]) {
        let l = line.to_ascii_lowercase();
        if !l.contains("module") {
            continue;
        }
        let field = |name: &str| -> Option<String> {
            let at = l.find(name)? + name.len();
            let v: String = l[at..]
                .trim_start_matches([' ', '=', ':'])
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            (!v.is_empty()).then_some(v)
        };
        if let (Some(maj), Some(min)) = (field("major_version"), field("minor_version")) {
            let mut v = format!("{maj}.{min}");
            if let Some(n) = field("build_num") {
                v.push_str(&format!(" build {n}"));
            }
            if let Some(d) = field("build_date") {
                v.push_str(&format!(" ({d})"));
            }
            found = Some(v);
            continue;
        }
        // A dotted version: digits and at least two dots, after "version" or a colon.
        let dotted = l
            .split(|c: char| c.is_whitespace() || c == ',')
            .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
            .find(|w| {
                w.matches('.').count() >= 2 && w.chars().all(|c| c.is_ascii_digit() || c == '.')
            });
        if let Some(v) = dotted {
            found = Some(v.to_string());
        }
    }
    found
}

impl TdxInfo {
    pub fn judge(
        cpu: Option<&CpuInfo>,
        kernel: &KernelInfo,
        log: &KernelLogInfo,
        param: Option<&ModuleParam>,
        misc: Option<&MiscCapacity>,
    ) -> Self {
        let host_platform_flag = cpu.is_some_and(|c| c.has_flag("tdx_host_platform"));
        let (module, module_log) = module_state(log);
        let keys = misc.and_then(|m| m.get("tdx"));
        let nohibernate = kernel.cmdline.has("nohibernate");
        let mut ev = Vec::new();
        if let Some(c) = cpu {
            ev.push(Evidence::new(
                "/proc/cpuinfo",
                format!("vendor_id {}", c.vendor_id),
            ));
            ev.push(Evidence::new(
                "/proc/cpuinfo",
                if host_platform_flag {
                    "flag tdx_host_platform present"
                } else {
                    "flag tdx_host_platform absent"
                },
            ));
        }
        match param {
            Some(p) => ev.push(Evidence::new(&p.path, p.raw.clone())),
            None => ev.push(Evidence::new(TDX_PARAM, "absent")),
        }
        if let Some(l) = &module_log {
            ev.push(Evidence::new("kernel log", l.clone()));
        }
        if let (Some(k), Some(m)) = (keys, misc) {
            ev.push(Evidence::new(m.path.clone(), format!("tdx {k}")));
        }
        ev.push(Evidence::new(
            "/proc/cmdline",
            if nohibernate {
                "nohibernate present"
            } else {
                "nohibernate absent"
            },
        ));
        let verdict = Self::verdict(
            cpu,
            kernel,
            param,
            host_platform_flag,
            module,
            &module_log,
            nohibernate,
            log.readable,
            ev,
        );
        TdxInfo {
            verdict,
            kvm_param: param.map(|p| p.raw.clone()),
            host_platform_flag,
            module,
            module_log,
            module_version: module_version(log),
            keys,
            nohibernate,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn verdict(
        cpu: Option<&CpuInfo>,
        kernel: &KernelInfo,
        param: Option<&ModuleParam>,
        host_platform_flag: bool,
        module: TdxModuleState,
        module_log: &Option<String>,
        nohibernate: bool,
        log_readable: bool,
        ev: Vec<Evidence>,
    ) -> Verdict {
        if let Some(c) = cpu
            && c.vendor != CpuVendor::Intel
        {
            return Verdict::not_applicable(ev, format!("not an Intel CPU ({})", c.vendor_id));
        }
        if param.is_some_and(ModuleParam::is_on) {
            return Verdict::yes(ev);
        }
        if let Some(c) = cpu
            && c.has_flag("hypervisor")
            && !host_platform_flag
        {
            return Verdict::no(
                ev,
                "this is a virtual machine (cpuinfo flag hypervisor): a TDX host must be bare metal",
                Blocker::VirtualMachine,
            );
        }
        if param.is_none() && !kernel.module("kvm_intel").available() {
            return Verdict::no(
                ev,
                "kvm_intel is not loaded",
                Blocker::ModuleNotLoaded {
                    module: "kvm_intel",
                    args: "tdx=1",
                },
            );
        }
        if param.is_none() {
            return Verdict::no(
                ev,
                "this kernel's kvm_intel has no tdx parameter: the kernel lacks TDX host support",
                Blocker::KernelLacks { tee: Tee::Tdx },
            );
        }
        if cpu.is_some() && !host_platform_flag {
            return Verdict::no(
                ev,
                "the BIOS has not enabled TDX (no tdx_host_platform CPU flag)",
                Blocker::BiosOff { tee: Tee::Tdx },
            );
        }
        if module == TdxModuleState::HibernationBlocked
            || (!nohibernate && module != TdxModuleState::Failed)
        {
            return Verdict::no(
                ev,
                "TDX initialisation is refused while hibernation is enabled (nohibernate missing)",
                Blocker::HibernationOn,
            );
        }
        if module == TdxModuleState::Failed {
            return Verdict::no(
                ev,
                format!(
                    "the TDX module failed to initialise: {}",
                    module_log.as_deref().unwrap_or("see the kernel log")
                ),
                Blocker::InitFailed { tee: Tee::Tdx },
            );
        }
        if module == TdxModuleState::NotLoaded {
            return Verdict::no(
                ev,
                "no TDX module is loaded (the SEAM loader found none)",
                Blocker::TdxModuleAbsent,
            );
        }
        // kvm_intel turns its tdx parameter back to N when TDX initialisation fails
        // (arch/x86/kvm/vmx/tdx.c, tdx_bringup): the parameter is asked for and still off.
        let asked = kernel
            .cmdline
            .value("kvm_intel.tdx")
            .is_some_and(|v| matches!(v, "1" | "y" | "Y" | "on"));
        if asked {
            return Verdict::no(
                ev,
                if log_readable {
                    "kvm_intel.tdx=1 is on the command line, yet kvm_intel has tdx=N: TDX initialisation failed, and the kernel log does not say why"
                } else {
                    "kvm_intel.tdx=1 is on the command line, yet kvm_intel has tdx=N: TDX initialisation failed; the kernel log, which says why, could not be read"
                },
                Blocker::TdxAskedButOff,
            );
        }
        Verdict::no(
            ev,
            "kvm_intel was loaded with tdx=N (off by default upstream)",
            Blocker::ParamOff {
                module: "kvm_intel",
                param: "tdx",
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_version_in_either_form() {
        let log = |lines: &[&str]| KernelLogInfo {
            readable: true,
            relevant: lines.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            module_version(&log(&[
                "virt/tdx: BIOS enabled: private KeyID range [32, 64)",
                "virt/tdx: TDX module: attributes 0x0, vendor_id 0x8086, major_version 1, minor_version 5, build_date 20240129, build_num 698",
                "virt/tdx: module initialized",
            ])),
            Some("1.5 build 698 (20240129)".to_string())
        );
        assert_eq!(
            module_version(&log(&["virt/tdx: TDX module version: 1.5.06.00.0744"])),
            Some("1.5.06.00.0744".to_string())
        );
        assert_eq!(
            module_version(&log(&["virt/tdx: module initialized"])),
            None
        );
    }
    use crate::inventory::cmdline::Cmdline;
    use crate::inventory::kernel::ModuleState;
    use crate::inventory::verdict::State;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn cpu(flags: &str) -> CpuInfo {
        CpuInfo::parse(
            Path::new("/proc/cpuinfo"),
            &format!("vendor_id : GenuineIntel\nflags : {flags}\n"),
        )
        .unwrap()
    }

    fn kernel(cmdline: &str, kvm_intel: ModuleState) -> KernelInfo {
        let mut k = KernelInfo {
            cmdline: Cmdline::parse(Path::new("/proc/cmdline"), cmdline).unwrap(),
            ..Default::default()
        };
        k.modules.insert("kvm_intel".into(), kvm_intel);
        k
    }

    fn param(v: &str) -> ModuleParam {
        ModuleParam {
            path: TDX_PARAM.into(),
            raw: v.into(),
        }
    }

    fn log(lines: &[&str]) -> KernelLogInfo {
        KernelLogInfo {
            readable: true,
            relevant: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn enabled_host() {
        let misc = MiscCapacity {
            path: "/sys/fs/cgroup/misc.capacity".to_string(),
            resources: BTreeMap::from([("tdx".to_string(), 63)]),
        };
        let t = TdxInfo::judge(
            Some(&cpu("vmx tdx_host_platform")),
            &kernel("nohibernate kvm_intel.tdx=1", ModuleState::Loaded),
            &log(&[
                "virt/tdx: BIOS enabled: private KeyID range [64, 128)",
                "virt/tdx: module initialized",
            ]),
            Some(&param("Y")),
            Some(&misc),
        );
        assert!(t.verdict.is_yes(), "{t:?}");
        assert_eq!(t.keys, Some(63));
        assert_eq!(t.module, TdxModuleState::Initialized);
        assert!(t.verdict.evidence.iter().any(|e| e.observed == "Y"));
    }

    /// Issue 13 item 8: with kvm_intel.tdx=1 already on the command line, the blocker is
    /// not "parameter off" (whose remedy is "add kvm_intel.tdx=1"; check::remedy tests
    /// the text).
    #[test]
    fn tdx_asked_for_but_off_does_not_say_add_it() {
        let unreadable = KernelLogInfo {
            readable: false,
            relevant: Vec::new(),
        };
        let t = TdxInfo::judge(
            Some(&cpu("vmx tdx_host_platform")),
            &kernel("nohibernate kvm_intel.tdx=1", ModuleState::Loaded),
            &unreadable,
            Some(&param("N")),
            None,
        );
        assert_eq!(t.verdict.blocker, Some(Blocker::TdxAskedButOff), "{t:?}");
        assert!(
            t.verdict
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("could not be read"),
            "{t:?}"
        );
    }

    #[test]
    fn reasons_in_order() {
        let k = kernel("nohibernate", ModuleState::Loaded);
        let case = |c: Option<&CpuInfo>, k: &KernelInfo, l: &[&str], p: Option<&str>| {
            let p = p.map(param);
            TdxInfo::judge(c, k, &log(l), p.as_ref(), None).verdict
        };
        let v = case(
            Some(&cpu("vmx")),
            &kernel("", ModuleState::Absent),
            &[],
            None,
        );
        assert_eq!(
            v.blocker,
            Some(Blocker::ModuleNotLoaded {
                module: "kvm_intel",
                args: "tdx=1"
            })
        );
        assert!(v.reason.unwrap().contains("not loaded"));
        let v = case(Some(&cpu("vmx")), &k, &[], None);
        assert_eq!(v.blocker, Some(Blocker::KernelLacks { tee: Tee::Tdx }));
        assert!(v.reason.unwrap().contains("no tdx parameter"));
        let v = case(
            Some(&cpu("vmx")),
            &k,
            &["TDX not supported by the host platform"],
            Some("N"),
        );
        assert_eq!(v.blocker, Some(Blocker::BiosOff { tee: Tee::Tdx }));
        assert!(v.reason.unwrap().contains("BIOS"), "no platform flag");
        let v = case(
            Some(&cpu("vmx tdx_host_platform")),
            &kernel("", ModuleState::Loaded),
            &["virt/tdx: initialization failed: Hibernation support is enabled"],
            Some("N"),
        );
        assert_eq!(v.blocker, Some(Blocker::HibernationOn));
        let v = case(
            Some(&cpu("tdx_host_platform")),
            &k,
            &["virt/tdx: module initialization failed (-5)"],
            Some("N"),
        );
        assert!(v.reason.unwrap().contains("(-5)"));
        let v = case(
            Some(&cpu("tdx_host_platform")),
            &k,
            &["virt/tdx: TDX-Module initialization failed (-22)"],
            Some("N"),
        );
        assert_eq!(v.blocker, Some(Blocker::InitFailed { tee: Tee::Tdx }));
        let v = case(Some(&cpu("tdx_host_platform")), &k, &[], Some("N"));
        assert_eq!(
            v.blocker,
            Some(Blocker::ParamOff {
                module: "kvm_intel",
                param: "tdx"
            })
        );
        let amd = CpuInfo::parse(
            Path::new("/proc/cpuinfo"),
            "vendor_id : AuthenticAMD\nflags : svm\n",
        )
        .unwrap();
        assert_eq!(case(Some(&amd), &k, &[], None).state, State::NotApplicable);
        // Param `1` counts as on (older kernels).
        assert!(case(Some(&cpu("tdx_host_platform")), &k, &[], Some("1")).is_yes());
    }
}
