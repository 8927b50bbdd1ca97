//! Arm CCA (Realm Management Extension). There is no upstream host interface to
//! confirm it yet (the KVM RME series is not merged; `KVM_CAP_ARM_RME` is
//! provisional), so the inventory only collects hints and says "unknown" on Arm.

use serde::{Deserialize, Serialize};

use super::cpuinfo::{CpuInfo, CpuVendor};
use super::kernel_log::KernelLogInfo;
use super::verdict::{Evidence, Verdict};

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
