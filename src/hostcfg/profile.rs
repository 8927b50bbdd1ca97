//! Which kernel arguments each profile needs and which it must not have, each with the
//! fact it comes from (docs/facts/cpu-tee.md#kernel-args, #iommu).

use serde::Serialize;

use super::args::{ArgEdit, ArgMatch, KernelArg};
use crate::config::KernelConfig;
use crate::inventory::facts::{CpuVendor, NodeFacts};

/// The TEE the host is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Tdx,
    Snp,
    None,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Tdx => "tdx",
            Platform::Snp => "snp",
            Platform::None => "none",
        }
    }
}

/// A running-host fact that makes an argument unnecessary (it is already in effect,
/// e.g. a distribution kernel that enables TDX by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlreadyBy {
    TdxEnabled,
    SnpEnabled,
    SevEnabled,
    SevEsEnabled,
    IommuEnabled,
}

impl AlreadyBy {
    fn holds(self, f: &NodeFacts) -> bool {
        match self {
            AlreadyBy::TdxEnabled => f.tdx.enabled,
            AlreadyBy::SnpEnabled => f.snp.enabled,
            AlreadyBy::SevEnabled => f.snp.sev_enabled,
            AlreadyBy::SevEsEnabled => f.snp.sev_es_enabled,
            AlreadyBy::IommuEnabled => f.iommu.enabled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Required {
    #[serde(serialize_with = "as_display")]
    pub arg: KernelArg,
    pub why: String,
    /// Not needed on a running host where this already holds.
    pub unless: Option<AlreadyBy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forbidden {
    #[serde(serialize_with = "as_display")]
    pub arg: ArgMatch,
    pub why: String,
}

fn as_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The arguments of one profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgProfile {
    pub platform: Platform,
    pub gpu: bool,
    pub required: Vec<Required>,
    pub forbidden: Vec<Forbidden>,
}

fn req(arg: KernelArg, why: &str, unless: Option<AlreadyBy>) -> Required {
    Required {
        arg,
        why: why.to_string(),
        unless,
    }
}

fn forbid(arg: ArgMatch, why: &str) -> Forbidden {
    Forbidden {
        arg,
        why: why.to_string(),
    }
}

impl ArgProfile {
    /// The profile for a platform, with GPU passthrough or not, on a CPU vendor (which
    /// decides how the IOMMU is switched on when no TEE decides it).
    pub fn new(
        platform: Platform,
        gpu: bool,
        vendor: Option<CpuVendor>,
        cfg: &KernelConfig,
    ) -> Self {
        let mut required = Vec::new();
        let mut forbidden = vec![forbid(
            ArgMatch::Exact(KernelArg::kv("amd_iommu", "on")),
            "`on` is not a valid amd_iommu value (the kernel logs \"AMD-Vi: Unknown option - 'on'\"); the AMD IOMMU is on by default when the IVRS table exists",
        )];
        let vendor = match platform {
            Platform::Tdx => Some(CpuVendor::Intel),
            Platform::Snp => Some(CpuVendor::Amd),
            Platform::None => vendor,
        };
        let iommu_needed = platform != Platform::None || gpu;
        match platform {
            Platform::Tdx => {
                required.push(req(
                    KernelArg::kv("kvm_intel.tdx", "1"),
                    "KVM runs TD guests only with this module parameter (upstream default off)",
                    Some(AlreadyBy::TdxEnabled),
                ));
                required.push(req(
                    KernelArg::flag("nohibernate"),
                    "the kernel disables TDX when hibernation is possible",
                    None,
                ));
            }
            Platform::Snp => {
                // Current kernels enable these by default when firmware initialises SEV;
                // they are pinned so a MachineConfig states them, and added on a running
                // host only when the parameter reads off.
                for (p, by) in [
                    ("sev", AlreadyBy::SevEnabled),
                    ("sev_es", AlreadyBy::SevEsEnabled),
                    ("sev_snp", AlreadyBy::SnpEnabled),
                ] {
                    required.push(req(
                        KernelArg::kv(&format!("kvm_amd.{p}"), "1"),
                        "kvm_amd runs SEV-SNP guests only with sev, sev_es and sev_snp on",
                        Some(by),
                    ));
                }
                forbidden.push(forbid(
                    ArgMatch::Value("iommu".into(), "pt".into()),
                    "SEV-SNP needs the IOMMU in translated mode: with passthrough the kernel logs \"SNP: IOMMU disabled or configured in passthrough mode\" and turns SNP off",
                ));
                forbidden.push(forbid(
                    ArgMatch::Exact(KernelArg::kv("iommu.passthrough", "1")),
                    "passthrough IOMMU default domain turns SEV-SNP off",
                ));
                forbidden.push(forbid(
                    ArgMatch::Value("amd_iommu".into(), "pgtbl_v2".into()),
                    "SEV-SNP needs the IOMMU v1 page table",
                ));
            }
            Platform::None => {}
        }
        if iommu_needed {
            if vendor == Some(CpuVendor::Intel) {
                required.push(req(
                    KernelArg::kv("intel_iommu", "on"),
                    if gpu && platform == Platform::None {
                        "GPU passthrough (VFIO) needs the IOMMU; Intel's default depends on the kernel build"
                    } else {
                        "TDX hosts and GPU passthrough need the IOMMU; Intel's default depends on the kernel build"
                    },
                    Some(AlreadyBy::IommuEnabled),
                ));
                forbidden.push(forbid(
                    ArgMatch::Exact(KernelArg::kv("intel_iommu", "off")),
                    "switches the IOMMU off",
                ));
            } else {
                forbidden.push(forbid(
                    ArgMatch::Exact(KernelArg::kv("amd_iommu", "off")),
                    "switches the IOMMU off",
                ));
            }
            forbidden.push(forbid(
                ArgMatch::Exact(KernelArg::kv("iommu", "off")),
                "switches the IOMMU off",
            ));
        }
        for a in &cfg.extra_args {
            required.push(req(
                KernelArg::parse(a),
                "kernel.extra_args in the config",
                None,
            ));
        }
        for a in &cfg.remove_args {
            forbidden.push(forbid(
                ArgMatch::parse(a),
                "kernel.remove_args in the config",
            ));
        }
        ArgProfile {
            platform,
            gpu,
            required,
            forbidden,
        }
    }

    /// The edit for a boot configuration. With facts (a running host), arguments whose
    /// effect is already in place are left out; without (a MachineConfig), all are in.
    pub fn edit(&self, facts: Option<&NodeFacts>) -> ArgEdit {
        ArgEdit {
            add: self
                .required
                .iter()
                .filter(|r| match (facts, r.unless) {
                    (Some(f), Some(u)) => !u.holds(f),
                    _ => true,
                })
                .map(|r| r.arg.clone())
                .collect(),
            remove: self.forbidden.iter().map(|f| f.arg.clone()).collect(),
        }
    }

    /// Every argument in `tokens` checked against the profile: one finding per missing,
    /// conflicting or forbidden argument.
    pub fn findings(&self, tokens: &[String], facts: Option<&NodeFacts>) -> Vec<ArgFinding> {
        let args: Vec<KernelArg> = tokens.iter().map(|t| KernelArg::parse(t)).collect();
        let mut out = Vec::new();
        for r in &self.required {
            if let (Some(f), Some(u)) = (facts, r.unless)
                && u.holds(f)
            {
                continue;
            }
            if !args.iter().any(|a| a.same(&r.arg)) {
                out.push(ArgFinding {
                    arg: r.arg.to_string(),
                    problem: ArgProblem::Missing,
                    why: r.why.clone(),
                });
            }
        }
        for f in &self.forbidden {
            for a in args.iter().filter(|a| f.arg.matches(a)) {
                out.push(ArgFinding {
                    arg: a.to_string(),
                    problem: ArgProblem::Forbidden,
                    why: f.why.clone(),
                });
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgProblem {
    Missing,
    Forbidden,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgFinding {
    pub arg: String,
    pub problem: ArgProblem,
    pub why: String,
}

impl std::fmt::Display for ArgFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.problem {
            ArgProblem::Missing => write!(f, "missing {}: {}", self.arg, self.why),
            ArgProblem::Forbidden => write!(f, "remove {}: {}", self.arg, self.why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostcfg::args::split;

    fn cfg() -> KernelConfig {
        KernelConfig::default()
    }

    fn names(e: &ArgEdit) -> Vec<String> {
        e.add.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn tdx_needs_tdx_nohibernate_and_iommu() {
        let p = ArgProfile::new(Platform::Tdx, false, Some(CpuVendor::Intel), &cfg());
        assert_eq!(
            names(&p.edit(None)),
            ["kvm_intel.tdx=1", "nohibernate", "intel_iommu=on"]
        );
        let f = p.findings(&split("ro quiet"), None);
        assert_eq!(f.len(), 3);
        assert!(
            p.findings(
                &split("ro kvm-intel.tdx=1 nohibernate intel_iommu=on"),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn running_facts_drop_arguments_already_in_effect() {
        let p = ArgProfile::new(Platform::Tdx, false, Some(CpuVendor::Intel), &cfg());
        let mut f = NodeFacts::default();
        f.tdx.enabled = true;
        f.iommu.enabled = true;
        assert_eq!(names(&p.edit(Some(&f))), ["nohibernate"]);
    }

    #[test]
    fn snp_never_has_iommu_pt_and_amd_iommu_on_is_invalid() {
        let p = ArgProfile::new(Platform::Snp, true, Some(CpuVendor::Amd), &cfg());
        let e = p.edit(None);
        assert!(!names(&e).iter().any(|a| a.contains("iommu")));
        let toks = split("ro iommu=pt amd_iommu=on");
        let f = p.findings(&toks, None);
        let forbidden: Vec<_> = f
            .iter()
            .filter(|x| x.problem == ArgProblem::Forbidden)
            .map(|x| x.arg.as_str())
            .collect();
        assert_eq!(forbidden, ["amd_iommu=on", "iommu=pt"]);
        assert!(f[f.len() - 2].why.contains("Unknown option"));
        let fixed = e.apply(&toks);
        assert_eq!(fixed[0], "ro");
        assert!(!fixed.iter().any(|t| t.contains("iommu")));
        // No SNP profile ever adds passthrough.
        for gpu in [false, true] {
            let p = ArgProfile::new(Platform::Snp, gpu, Some(CpuVendor::Amd), &cfg());
            assert!(
                !p.edit(None)
                    .add
                    .iter()
                    .any(|a| a.values().any(|v| v == "pt"))
            );
        }
    }

    #[test]
    fn gpu_without_tee_turns_the_iommu_on_per_vendor() {
        let intel = ArgProfile::new(Platform::None, true, Some(CpuVendor::Intel), &cfg());
        assert_eq!(names(&intel.edit(None)), ["intel_iommu=on"]);
        let amd = ArgProfile::new(Platform::None, true, Some(CpuVendor::Amd), &cfg());
        assert!(amd.edit(None).add.is_empty());
        assert_eq!(amd.findings(&split("amd_iommu=off"), None).len(), 1);
        let none = ArgProfile::new(Platform::None, false, Some(CpuVendor::Intel), &cfg());
        assert!(none.edit(None).add.is_empty());
        // amd_iommu=on is reported on every profile.
        assert_eq!(none.findings(&split("amd_iommu=on"), None).len(), 1);
    }

    #[test]
    fn config_extra_and_remove_args() {
        let c = KernelConfig {
            extra_args: vec!["mitigations=auto".into()],
            remove_args: vec!["quiet".into()],
            ..cfg()
        };
        let p = ArgProfile::new(Platform::None, false, Some(CpuVendor::Intel), &c);
        assert_eq!(
            p.edit(None).apply(&split("quiet ro")),
            split("ro mitigations=auto")
        );
    }
}
