//! Kernel lockdown (`man kernel_lockdown.7`). In `integrity` mode and above the kernel
//! refuses user-space mappings of PCI BARs through sysfs `resourceN` ("direct PCI access
//! is restricted"), which is how cchost (and gpu-admin-tools) reach the GPU's firmware
//! mailbox. Secure Boot turns it on in many distribution kernels; it was on in the real
//! H100 guest this project was tried on, where the mmap failed with EPERM.
//!
//! Sources, best first: `/sys/kernel/security/lockdown` (`none [integrity]
//! confidentiality`, the active mode bracketed; needs securityfs mounted), then the
//! kernel log ("Kernel is locked down from ...").

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;

use super::Problem;
use super::kernel_log::KernelLogInfo;

pub(crate) const SECURITYFS_LOCKDOWN: &str = "/sys/kernel/security/lockdown";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockdownMode {
    None,
    Integrity,
    Confidentiality,
    /// Locked down, level not reported (only the kernel log said so).
    Locked,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockdownInfo {
    /// `None`: nothing said either way (no securityfs file, no log line).
    pub mode: Option<LockdownMode>,
    pub evidence: Option<String>,
}

impl LockdownInfo {
    /// User-space BAR mappings (sysfs `resourceN`) are refused.
    pub(crate) fn blocks_bar_mappings(&self) -> bool {
        matches!(
            self.mode,
            Some(LockdownMode::Integrity | LockdownMode::Confidentiality | LockdownMode::Locked)
        )
    }

    pub fn collect(host: &HostRoot, log: &KernelLogInfo, problems: &mut Vec<Problem>) -> Self {
        match host.read_attr_opt(SECURITYFS_LOCKDOWN) {
            Ok(Some(text)) => match parse_securityfs(&text) {
                Some(mode) => {
                    return LockdownInfo {
                        mode: Some(mode),
                        evidence: Some(format!("{SECURITYFS_LOCKDOWN}: {text}")),
                    };
                }
                None => problems.push(Problem::new(
                    SECURITYFS_LOCKDOWN,
                    format!("no bracketed mode in {text:?}"),
                )),
            },
            Ok(None) => {}
            Err(e) => problems.push(e.into()),
        }
        from_log(log)
    }
}

/// `none [integrity] confidentiality` -> Integrity.
pub(crate) fn parse_securityfs(text: &str) -> Option<LockdownMode> {
    let active = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))?;
    match active {
        "none" => Some(LockdownMode::None),
        "integrity" => Some(LockdownMode::Integrity),
        "confidentiality" => Some(LockdownMode::Confidentiality),
        _ => None,
    }
}

fn from_log(log: &KernelLogInfo) -> LockdownInfo {
    // "Kernel is locked down from Kernel configuration; see man kernel_lockdown.7"
    // (also "from EFI Secure Boot mode", "from command line").
    match log.last_with_all(&["Kernel is locked down from"]) {
        Some(line) => LockdownInfo {
            mode: Some(LockdownMode::Locked),
            evidence: Some(format!("kernel log: {line}")),
        },
        None => LockdownInfo::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn securityfs_bracket_is_the_active_mode() {
        assert_eq!(
            parse_securityfs("none [integrity] confidentiality"),
            Some(LockdownMode::Integrity)
        );
        assert_eq!(
            parse_securityfs("[none] integrity confidentiality\n"),
            Some(LockdownMode::None)
        );
        assert_eq!(
            parse_securityfs("none integrity [confidentiality]"),
            Some(LockdownMode::Confidentiality)
        );
        assert_eq!(parse_securityfs("none integrity confidentiality"), None);
    }

    #[test]
    fn the_log_line_of_the_real_h100_guest_means_locked() {
        let log = KernelLogInfo {
            readable: true,
            relevant: vec![
                "Kernel is locked down from Kernel configuration; see man kernel_lockdown.7"
                    .to_string(),
            ],
        };
        let l = from_log(&log);
        assert_eq!(l.mode, Some(LockdownMode::Locked));
        assert!(l.blocks_bar_mappings());
        assert!(!from_log(&KernelLogInfo::default()).blocks_bar_mappings());
    }
}
