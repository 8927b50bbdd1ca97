//! The kernel-log lines that carry TEE and IOMMU facts. The whole log is read once
//! (see [`HostRoot::kernel_log`]); only lines that mention TDX, SEV/SNP, the IOMMU or
//! Arm RME are kept, and the verdicts match them loosely because the wording changes
//! between kernel versions (docs/facts/cpu-tee.md#tdx-linux).

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;
use crate::host::kmsg::KMSG;

use super::Problem;

/// At most this many relevant lines are kept (a flapping device must not bloat the
/// inventory).
const MAX_LINES: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLogInfo {
    /// The log could be read (it needs root or CAP_SYSLOG with dmesg_restrict=1).
    pub readable: bool,
    /// Relevant messages, oldest first.
    pub relevant: Vec<String>,
}

/// Is this message about something the inventory judges?
pub(crate) fn is_relevant(msg: &str) -> bool {
    const MARKERS: &[&str] = &[
        "tdx",
        "TDX",
        "SEV",
        "SNP",
        "AMD-Vi",
        "DMAR",
        "iommu:",
        "IOMMU",
        "RMI ABI",
        "ccp ",
        "locked down",
    ];
    // One line per device when groups are set up: not evidence of anything.
    !msg.contains("to iommu group") && MARKERS.iter().any(|m| msg.contains(m))
}

impl KernelLogInfo {
    pub fn collect(host: &HostRoot, problems: &mut Vec<Problem>) -> Self {
        match host.kernel_log() {
            Ok(log) => {
                if log.dropped > 0 {
                    problems.push(Problem::new(
                        KMSG,
                        "longer than cchost reads; the oldest records were left out",
                    ));
                }
                if log.skipped > 0 {
                    problems.push(Problem::new(
                        KMSG,
                        format!("{} lines are not kernel log records; ignored", log.skipped),
                    ));
                }
                let mut relevant: Vec<String> = log
                    .records
                    .into_iter()
                    .map(|r| r.message)
                    .filter(|m| is_relevant(m))
                    .collect();
                if relevant.len() > MAX_LINES {
                    relevant.drain(..relevant.len() - MAX_LINES);
                }
                KernelLogInfo {
                    readable: true,
                    relevant,
                }
            }
            Err(e) => {
                if !e.is_not_found() {
                    problems.push(e.into());
                }
                KernelLogInfo::default()
            }
        }
    }

    /// Lines containing any of `needles`, compared without case.
    pub(crate) fn lines_with<'a>(
        &'a self,
        needles: &'a [&'a str],
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.relevant.iter().map(String::as_str).filter(move |l| {
            let lower = l.to_ascii_lowercase();
            needles
                .iter()
                .any(|n| lower.contains(&n.to_ascii_lowercase()))
        })
    }

    /// The last line containing all of `needles`, compared without case.
    pub(crate) fn last_with_all(&self, needles: &[&str]) -> Option<&str> {
        self.relevant.iter().rev().map(String::as_str).find(|l| {
            let lower = l.to_ascii_lowercase();
            needles
                .iter()
                .all(|n| lower.contains(&n.to_ascii_lowercase()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_relevant_lines() {
        assert!(is_relevant("virt/tdx: module initialized"));
        assert!(is_relevant("SEV-SNP: RMP table physical range"));
        assert!(is_relevant(
            "AMD-Vi: SNP: IOMMU disabled or configured in passthrough mode, SNP cannot be supported."
        ));
        assert!(is_relevant(
            "iommu: Default domain type: Passthrough (set via kernel command line)"
        ));
        assert!(!is_relevant("pci 0000:00:01.0: Adding to iommu group 1"));
        assert!(!is_relevant("several devices found"));
        assert!(!is_relevant("usb 1-1: new high-speed USB device"));
    }

    #[test]
    fn loose_matching() {
        let k = KernelLogInfo {
            readable: true,
            relevant: vec![
                "virt/tdx: TDX-Module initialized".into(),
                "virt/tdx: module initialized".into(),
            ],
        };
        assert_eq!(k.lines_with(&["tdx"]).count(), 2);
        assert_eq!(
            k.last_with_all(&["tdx", "module", "initialized"]),
            Some("virt/tdx: module initialized")
        );
        assert_eq!(k.last_with_all(&["tdx", "failed"]), None);
    }
}
