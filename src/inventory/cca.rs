//! Arm CCA (Realm Management Extension). There is no upstream host interface to
//! confirm it yet (the KVM RME series is not merged; `KVM_CAP_ARM_RME` is
//! provisional), so the inventory only collects hints and says "unknown" on Arm.

use serde::{Deserialize, Serialize};

use super::cpuinfo::{CpuInfo, CpuVendor};
use super::kernel_log::KernelLogInfo;
use super::verdict::{Blocker, Evidence, Verdict};

/// Arm cores known to lack the Realm Management Extension: FEAT_RME is an Armv9.2-A
/// feature, and these implement Armv8.2-A to Armv9.0-A (part numbers as in the kernel's
/// arch/arm64/include/asm/cputype.h; NVIDIA Grace is 72 Neoverse V2 cores).
const NO_RME: &[(&str, &str, &str)] = &[
    ("0x41", "0xd0c", "Arm Neoverse N1"),
    ("0x41", "0xd40", "Arm Neoverse V1"),
    ("0x41", "0xd49", "Arm Neoverse N2"),
    ("0x41", "0xd4f", "Arm Neoverse V2 (NVIDIA Grace)"),
];

/// The name of a known core without RME.
pub(crate) fn known_without_rme(cpu: &CpuInfo) -> Option<&'static str> {
    let part = cpu.part.as_deref()?;
    NO_RME
        .iter()
        .find(|(imp, p, _)| cpu.vendor_id.eq_ignore_ascii_case(imp) && part == *p)
        .map(|(_, _, name)| *name)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CcaInfo {
    pub verdict: Verdict,
}

impl CcaInfo {
    pub fn judge(cpu: Option<&CpuInfo>, log: &KernelLogInfo) -> Self {
        let mut ev: Vec<Evidence> = log
            .lines_with(&["RMI ABI", "RME"])
            .map(|l| Evidence::new("kernel log", l))
            .collect();
        let verdict = match cpu {
            Some(c) if c.vendor != CpuVendor::Arm => {
                Verdict::not_applicable(ev, format!("not an Arm CPU ({})", c.vendor_id))
            }
            Some(c) if known_without_rme(c).is_some() => {
                let name = known_without_rme(c).unwrap_or_default();
                ev.push(Evidence::new(
                    "/proc/cpuinfo",
                    format!(
                        "CPU implementer {}, CPU part {}",
                        c.vendor_id,
                        c.part.as_deref().unwrap_or("?")
                    ),
                ));
                Verdict::no(
                    ev,
                    format!(
                        "no CPU TEE on this platform: {name} has no Realm Management Extension (Arm CCA needs Armv9.2 RME)"
                    ),
                    Blocker::NoRme,
                )
            }
            Some(c) => {
                ev.push(Evidence::new(
                    "/proc/cpuinfo",
                    format!("CPU implementer {}", c.vendor_id),
                ));
                Verdict::unknown(
                    ev,
                    "Arm CCA cannot be confirmed: upstream Linux has no host RME interface to probe yet",
                )
            }
            None => Verdict::unknown(
                ev,
                "the CPU could not be identified (/proc/cpuinfo unreadable)",
            ),
        };
        CcaInfo { verdict }
    }
}
