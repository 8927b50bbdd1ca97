//! The IOMMU: present in firmware (ACPI DMAR / IVRS / IORT), enabled in the kernel
//! (IOMMU groups exist), and in which mode (translated DMA vs identity/passthrough),
//! per group and overall (docs/facts/cpu-tee.md#iommu).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;

use super::Problem;
use super::cmdline::Cmdline;
use super::cpuinfo::CpuInfo;
use super::kernel_log::KernelLogInfo;
use super::verdict::{Blocker, Evidence, Verdict};

pub(crate) const IOMMU_GROUPS: &str = "/sys/kernel/iommu_groups";
pub(crate) const CLASS_IOMMU: &str = "/sys/class/iommu";
const ACPI_TABLES: [&str; 3] = ["DMAR", "IVRS", "IORT"];

/// Parameters that switch the IOMMU or its default domain.
pub(crate) const IOMMU_PARAMS: &[&str] = &[
    "intel_iommu",
    "amd_iommu",
    "iommu",
    "iommu.passthrough",
    "iommu.strict",
    "amd_iommu_intr",
    "intremap",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IommuMode {
    /// DMA is translated (`DMA` / `DMA-FQ` default domains).
    Translated,
    /// Identity-mapped default domains (`iommu=pt`).
    Passthrough,
    /// Some groups each way.
    Mixed,
    /// No IOMMU groups.
    Off,
    /// Groups exist but the kernel does not say (no `type` files before Linux 5.11).
    #[default]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuInfo {
    /// ACPI tables found under /sys/firmware/acpi/tables (`DMAR` Intel VT-d, `IVRS`
    /// AMD-Vi, `IORT` Arm SMMU).
    pub acpi_tables: Vec<String>,
    /// /sys/class/iommu entries (`dmar0`, `ivhd0`).
    pub units: Vec<String>,
    /// Number of IOMMU groups.
    pub groups: usize,
    /// Count of groups per `type` (`DMA`, `DMA-FQ`, `identity`, `blocked`, `unmanaged`).
    pub group_types: BTreeMap<String, usize>,
    pub mode: IommuMode,
    /// The kernel log's `iommu: Default domain type: …` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_domain_log: Option<String>,
    /// `/dev/iommu` (iommufd) exists.
    pub iommufd: bool,
    /// IOMMU-related kernel parameters, as written, in order.
    pub cmdline_args: Vec<String>,
    /// The effective command line asks for passthrough (`iommu=pt`, `iommu.passthrough=1`).
    pub cmdline_passthrough: bool,
    /// Mistakes on the command line (`amd_iommu=on` is not a valid value).
    pub cmdline_warnings: Vec<String>,
    /// Firmware describes an IOMMU.
    pub present: Verdict,
    /// The kernel uses it (groups exist).
    pub enabled: Verdict,
}

impl IommuInfo {
    pub fn collect(
        host: &HostRoot,
        cmdline: &Cmdline,
        cpu: Option<&CpuInfo>,
        log: &KernelLogInfo,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let acpi_tables: Vec<String> = ACPI_TABLES
            .iter()
            .filter(|t| host.exists(format!("/sys/firmware/acpi/tables/{t}")))
            .map(|t| t.to_string())
            .collect();
        let mut list = |dir: &str| {
            host.list_dir_opt(dir).unwrap_or_else(|e| {
                problems.push(e.into());
                Vec::new()
            })
        };
        let units = list(CLASS_IOMMU);
        let groups = host
            .read_attr_in_subdirs(IOMMU_GROUPS, "type")
            .unwrap_or_else(|e| {
                problems.push(e.into());
                Vec::new()
            });
        let mut group_names = Vec::new();
        let mut group_types: BTreeMap<String, usize> = BTreeMap::new();
        for (g, ty) in groups {
            if g.parse::<u32>().is_err() {
                continue;
            }
            match ty {
                Ok(Some(t)) if !t.is_empty() && t.len() < 32 => {
                    *group_types.entry(t).or_default() += 1
                }
                Ok(Some(t)) => problems.push(Problem::new(
                    format!("{IOMMU_GROUPS}/{g}/type"),
                    format!("unexpected group type {t:?}"),
                )),
                Ok(None) => {}
                Err(e) => problems.push(e.into()),
            }
            group_names.push(g);
        }
        let default_domain_log = log
            .last_with_all(&["default domain type"])
            .map(str::to_string);
        let (cmdline_args, cmdline_passthrough, cmdline_warnings) = cmdline_facts(cmdline);
        let mode = overall_mode(group_names.len(), &group_types);
        let iommufd = host.exists("/dev/iommu");
        let vendor = cpu.map(|c| c.vendor);

        let mut ev = Vec::new();
        for t in &acpi_tables {
            ev.push(Evidence::new(
                format!("/sys/firmware/acpi/tables/{t}"),
                "present",
            ));
        }
        if !units.is_empty() {
            ev.push(Evidence::new(CLASS_IOMMU, units.join(" ")));
        }
        let present = if !acpi_tables.is_empty() || !units.is_empty() {
            Verdict::yes(ev)
        } else {
            ev.push(Evidence::new(
                "/sys/firmware/acpi/tables",
                "no DMAR, IVRS or IORT table",
            ));
            Verdict::no(
                ev,
                "no IOMMU described by firmware (no ACPI DMAR/IVRS/IORT table): disabled in the BIOS or not supported",
                Blocker::NoIommuTables { vendor },
            )
        };

        let mut ev = vec![Evidence::new(
            IOMMU_GROUPS,
            format!("{} groups", group_names.len()),
        )];
        for a in &cmdline_args {
            ev.push(Evidence::new("/proc/cmdline", a.clone()));
        }
        let enabled = if !group_names.is_empty() {
            Verdict::yes(ev)
        } else {
            let off_arg = cmdline_args
                .iter()
                .find(|a| a.ends_with("=off") || a.as_str() == "iommu=off");
            let (reason, blocker) = match off_arg {
                Some(a) => (
                    format!("the IOMMU is switched off on the kernel command line ({a})"),
                    Blocker::IommuOff {
                        argument: a.clone(),
                    },
                ),
                None if present.is_yes() => (
                    "the firmware has an IOMMU but the kernel did not enable it (no IOMMU groups)"
                        .to_string(),
                    Blocker::IommuNotEnabled { vendor },
                ),
                None => (
                    "no IOMMU groups: the IOMMU is off".to_string(),
                    Blocker::NoIommuTables { vendor },
                ),
            };
            Verdict::no(ev, reason, blocker)
        };
        IommuInfo {
            acpi_tables,
            units,
            groups: group_names.len(),
            group_types,
            mode,
            default_domain_log,
            iommufd,
            cmdline_args,
            cmdline_passthrough,
            cmdline_warnings,
            present,
            enabled,
        }
    }

    /// Why SNP cannot work with this IOMMU state, if it cannot, and what stands in the
    /// way (drivers/iommu/amd/init.c `iommu_snp_enable`: SNP needs the IOMMU on and not
    /// in passthrough).
    pub(crate) fn snp_blocker(&self) -> Option<(String, Blocker)> {
        if self.cmdline_passthrough {
            let arg = self
                .cmdline_args
                .iter()
                .rev()
                .find(|a| a.as_str() == "iommu=pt" || a.starts_with("iommu.passthrough="))
                .cloned()
                .unwrap_or_else(|| "iommu=pt".to_string());
            return Some((
                format!(
                    "IOMMU in passthrough mode ({arg} on the kernel command line) disables SNP"
                ),
                Blocker::IommuPassthrough {
                    argument: Some(arg),
                },
            ));
        }
        if self.mode == IommuMode::Passthrough {
            return Some((
                "IOMMU default domain is passthrough (identity), which disables SNP".to_string(),
                Blocker::IommuPassthrough { argument: None },
            ));
        }
        if self.groups == 0 {
            // `enabled` is `no` with its blocker whenever there are no groups; the
            // fallback is for an inventory read back from JSON (no blockers there).
            return Some((
                "the IOMMU is off, and SNP needs it".to_string(),
                self.enabled
                    .blocker
                    .clone()
                    .unwrap_or(Blocker::IommuNotEnabled { vendor: None }),
            ));
        }
        None
    }
}

fn overall_mode(groups: usize, types: &BTreeMap<String, usize>) -> IommuMode {
    if groups == 0 {
        return IommuMode::Off;
    }
    let count = |names: &[&str]| -> usize {
        types
            .iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum()
    };
    // VFIO-owned groups read `blocked`/`unmanaged`; they say nothing about the default.
    let translated = count(&["DMA", "DMA-FQ"]);
    let identity = count(&["identity"]);
    match (translated, identity) {
        (0, 0) => IommuMode::Unknown,
        (_, 0) => IommuMode::Translated,
        (0, _) => IommuMode::Passthrough,
        _ => IommuMode::Mixed,
    }
}

/// The IOMMU parameters as written, whether the effective line asks for passthrough,
/// and mistakes.
fn cmdline_facts(c: &Cmdline) -> (Vec<String>, bool, Vec<String>) {
    let mut args = Vec::new();
    let mut passthrough = false;
    let mut warnings = Vec::new();
    for p in &c.params {
        if !IOMMU_PARAMS
            .iter()
            .any(|n| super::cmdline::name_eq(&p.name, n))
        {
            continue;
        }
        args.push(Cmdline::render(p));
        let v = p.value.as_deref().unwrap_or("");
        // Applied in order: the last one that says something wins.
        if super::cmdline::name_eq(&p.name, "iommu") {
            for opt in v.split(',') {
                match opt {
                    "pt" => passthrough = true,
                    "nopt" => passthrough = false,
                    _ => {}
                }
            }
        } else if super::cmdline::name_eq(&p.name, "iommu.passthrough") {
            match v {
                "1" | "y" | "Y" | "on" => passthrough = true,
                "0" | "n" | "N" | "off" => passthrough = false,
                _ => {}
            }
        } else if super::cmdline::name_eq(&p.name, "amd_iommu") {
            for opt in v.split(',') {
                if opt == "on" {
                    warnings.push(
                        "amd_iommu=on is not a valid value (the kernel logs \"AMD-Vi: Unknown option - 'on'\"); the AMD IOMMU is on by default: remove it".to_string(),
                    );
                }
            }
        }
    }
    (args, passthrough, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Tree;
    use crate::inventory::CpuVendor;
    use std::path::Path;

    fn cmd(s: &str) -> Cmdline {
        Cmdline::parse(Path::new("/proc/cmdline"), s).unwrap()
    }

    fn collect(t: &Tree, cmdline: &str) -> (IommuInfo, Vec<Problem>) {
        let mut problems = Vec::new();
        let i = IommuInfo::collect(
            &t.host,
            &cmd(cmdline),
            None,
            &KernelLogInfo::default(),
            &mut problems,
        );
        (i, problems)
    }

    #[test]
    fn translated_intel_host() {
        let t = Tree::new();
        t.file("/sys/firmware/acpi/tables/DMAR", "")
            .file("/sys/class/iommu/dmar0/intel-iommu/version", "1:0\n")
            .file("/sys/kernel/iommu_groups/0/type", "DMA\n")
            .file("/sys/kernel/iommu_groups/1/type", "DMA-FQ\n")
            .file("/sys/kernel/iommu_groups/2/type", "blocked\n")
            .file("/dev/iommu", "");
        let (i, p) = collect(&t, "intel_iommu=on quiet");
        assert!(p.is_empty(), "{p:?}");
        assert!(i.present.is_yes() && i.enabled.is_yes());
        assert_eq!(i.mode, IommuMode::Translated);
        assert_eq!(i.groups, 3);
        assert_eq!(i.group_types["DMA-FQ"], 1);
        assert!(i.iommufd);
        assert_eq!(i.units, ["dmar0"]);
        assert_eq!(i.cmdline_args, ["intel_iommu=on"]);
        assert!(i.snp_blocker().is_none());
    }

    #[test]
    fn passthrough_blocks_snp_with_reason_and_blocker() {
        let t = Tree::new();
        t.file("/sys/firmware/acpi/tables/IVRS", "")
            .file("/sys/kernel/iommu_groups/0/type", "identity\n");
        let (i, _) = collect(&t, "iommu=pt amd_iommu=on");
        assert_eq!(i.mode, IommuMode::Passthrough);
        assert!(i.cmdline_passthrough);
        let (reason, blocker) = i.snp_blocker().unwrap();
        assert!(reason.contains("iommu=pt"), "{reason}");
        assert_eq!(
            blocker,
            Blocker::IommuPassthrough {
                argument: Some("iommu=pt".into())
            }
        );
        assert_eq!(i.cmdline_warnings.len(), 1);
        assert!(i.cmdline_warnings[0].contains("amd_iommu=on"));
        // Later args override earlier ones.
        let (i, _) = collect(&t, "iommu=pt iommu=nopt");
        assert!(!i.cmdline_passthrough);
        let (i, _) = collect(&t, "iommu.passthrough=1");
        assert!(i.cmdline_passthrough);
    }

    #[test]
    fn no_iommu_says_what_to_do() {
        let t = Tree::new();
        let (i, _) = collect(&t, "quiet");
        assert_eq!(i.mode, IommuMode::Off);
        assert_eq!(i.present.state, super::super::verdict::State::No);
        assert_eq!(
            i.present.blocker,
            Some(Blocker::NoIommuTables { vendor: None })
        );
        assert!(i.enabled.reason.is_some());
        assert_eq!(
            i.enabled.blocker,
            Some(Blocker::NoIommuTables { vendor: None })
        );
        let t = Tree::new();
        t.file("/sys/firmware/acpi/tables/DMAR", "");
        let mut problems = Vec::new();
        let cpu = CpuInfo::parse(
            Path::new("/proc/cpuinfo"),
            "vendor_id : GenuineIntel\nflags : vmx\n",
        )
        .unwrap();
        let i = IommuInfo::collect(
            &t.host,
            &cmd("quiet"),
            Some(&cpu),
            &KernelLogInfo::default(),
            &mut problems,
        );
        assert!(i.present.is_yes());
        assert_eq!(
            i.enabled.blocker,
            Some(Blocker::IommuNotEnabled {
                vendor: Some(CpuVendor::Intel)
            })
        );
        let i = IommuInfo::collect(
            &t.host,
            &cmd("intel_iommu=off"),
            Some(&cpu),
            &KernelLogInfo::default(),
            &mut problems,
        );
        assert_eq!(
            i.enabled.blocker,
            Some(Blocker::IommuOff {
                argument: "intel_iommu=off".into()
            })
        );
    }

    #[test]
    fn mixed_and_unknown_modes() {
        let mut m = BTreeMap::new();
        assert_eq!(overall_mode(3, &m), IommuMode::Unknown);
        m.insert("DMA".to_string(), 2);
        m.insert("identity".to_string(), 1);
        assert_eq!(overall_mode(3, &m), IommuMode::Mixed);
    }

    #[test]
    fn unreadable_group_type_is_a_problem() {
        let t = Tree::new();
        t.file("/sys/kernel/iommu_groups/0/type", [0xff, 0x00]);
        t.file("/sys/kernel/iommu_groups/1/type", "DMA\n");
        let (i, p) = collect(&t, "");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].path.ends_with("0/type"));
        assert_eq!(i.mode, IommuMode::Translated);
    }
}
