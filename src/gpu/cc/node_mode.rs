//! One CC mode for the whole node, as NVIDIA's cc-manager applies its
//! `nvidia.com/cc.mode` label (NVIDIA/k8s-cc-manager main.py: `set_cc_mode`,
//! `_set_cc_mode_direct`, `set_ppcie_mode`):
//!
//! - `on` / `off` / `devtools`: first PPCIe off on every device of the board that has it
//!   (GPUs and NVSwitches, all or nothing), then the GPUs' CC mode. A board whose
//!   NVSwitches stayed in PPCIe while its GPUs went to CC would be half in one mode.
//! - `ppcie`: every GPU and NVSwitch of the board, all or nothing (a GPU without PPCIe
//!   refuses the whole request, as cc-manager does).
//! - Never `on` or `ppcie` without a CPU TEE: a confidential GPU is only useful to a
//!   confidential VM. cc-manager turns its default to `off` on such hosts
//!   (`is_host_cc_enabled`); an explicit label asking for it is refused here.
//!
//! A device that is in use or bound to another driver is not switched: it is reported
//! as busy, and the caller retries when it is free. Nothing is switched on a board
//! with a busy device where the change must be all or nothing.

use std::collections::BTreeSet;

use serde::Serialize;

use super::journaled;
use super::live::{self, LiveDevice, Opener};
use super::switch::{Outcome, PpcieReport, Status};
use super::{CcDevice, TargetMode};
use crate::config::{MatchConfig, RequestedMode};
use crate::host::HostRoot;
use crate::host::pci::PciDevice;
use crate::journal::Journal;

/// The label cc-manager reads the wanted mode from.
pub(crate) const CC_MODE_LABEL: &str = "nvidia.com/cc.mode";

/// A mode for the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    Cc(TargetMode),
    Ppcie,
}

impl NodeMode {
    /// cc-manager's label values.
    pub fn parse(s: &str) -> Option<NodeMode> {
        Some(match s {
            "on" => NodeMode::Cc(TargetMode::On),
            "off" => NodeMode::Cc(TargetMode::Off),
            "devtools" => NodeMode::Cc(TargetMode::Devtools),
            "ppcie" => NodeMode::Ppcie,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeMode::Cc(TargetMode::On) => "on",
            NodeMode::Cc(TargetMode::Off) => "off",
            NodeMode::Cc(TargetMode::Devtools) => "devtools",
            NodeMode::Ppcie => "ppcie",
        }
    }

    /// Needs a CPU TEE to be of any use (and is refused without one).
    pub(crate) fn needs_tee(self) -> bool {
        matches!(self, NodeMode::Cc(TargetMode::On) | NodeMode::Ppcie)
    }
}

impl Serialize for NodeMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for NodeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a wanted mode is not applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{CC_MODE_LABEL}={0:?} is not one of on, off, devtools, ppcie; the GPUs are left as they are"
    )]
    Invalid(String),
    #[error(
        "{CC_MODE_LABEL}={0} refused: no CPU TEE (TDX or SEV-SNP) is on, and a GPU in {0} mode is only usable by a confidential VM; the GPUs are left as they are"
    )]
    NoTee(NodeMode),
}

/// The mode to apply: the label's (an empty label counts as none), else the configured
/// default (`keep`: none). Without a CPU TEE a default of `on`/`ppcie` becomes `off`
/// (cc-manager's override); a label asking for them is refused.
pub fn wanted(
    label: Option<&str>,
    default: RequestedMode,
    tee_on: bool,
) -> Result<Option<NodeMode>, Refusal> {
    match label.map(str::trim).filter(|s| !s.is_empty()) {
        Some(v) => {
            let m = NodeMode::parse(v).ok_or_else(|| Refusal::Invalid(v.to_string()))?;
            if m.needs_tee() && !tee_on {
                return Err(Refusal::NoTee(m));
            }
            Ok(Some(m))
        }
        None => {
            let Some(m) = NodeMode::requested(default) else {
                return Ok(None);
            };
            if m.needs_tee() && !tee_on {
                tracing::warn!(default = %m, "no CPU TEE is on: the default CC mode becomes off");
                return Ok(Some(NodeMode::Cc(TargetMode::Off)));
            }
            Ok(Some(m))
        }
    }
}

/// What one application of a node mode did.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub wanted: NodeMode,
    /// PPCIe turned off on the board before a CC mode (only when some device had it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppcie_cleared: Option<PpcieReport>,
    /// PPCIe turned on for the board (`ppcie`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppcie: Option<PpcieReport>,
    /// The GPUs' CC switches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<Outcome>,
    /// Devices not switched now (in use, another driver), with why; retried later.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<String>,
    /// Errors that retrying will not fix by itself (a switch failed, a device without
    /// PPCIe in a PPCIe request, the PCI scan failed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl NodeReport {
    fn new(wanted: NodeMode) -> Self {
        NodeReport {
            wanted,
            ppcie_cleared: None,
            ppcie: None,
            cc: Vec::new(),
            busy: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Every device is in the wanted mode.
    pub fn done(&self) -> bool {
        self.busy.is_empty() && self.errors.is_empty()
    }

    /// Every outcome with the state it ended in (to update what the labels show).
    pub fn outcomes(&self) -> impl Iterator<Item = &Outcome> {
        self.ppcie_cleared
            .iter()
            .chain(self.ppcie.iter())
            .flat_map(|r| r.devices.iter())
            .chain(self.cc.iter())
    }
}

fn failed(o: &Outcome) -> Option<String> {
    (o.status == Status::Failed || o.status == Status::Skipped).then(|| {
        format!(
            "{}: {} {}",
            o.device,
            o.requested,
            o.error.as_deref().unwrap_or("not switched")
        )
    })
}

/// Applies `mode` to the node's GPUs and NVSwitches (journaled, as `cchost gpu cc set`
/// and `cchost gpu cc ppcie set`).
pub fn apply(
    host: &HostRoot,
    journal: &mut Journal,
    matching: &MatchConfig,
    mode: NodeMode,
    opener: &dyn Opener,
) -> NodeReport {
    let mut report = NodeReport::new(mode);
    let candidates = match live::candidates(host, matching) {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(format!("PCI scan: {e}"));
            return report;
        }
    };
    let board_addrs: BTreeSet<String> = candidates
        .iter()
        .filter(|(_, f)| f.supports_ppcie())
        .map(|(p, _)| p.address.to_string())
        .collect();
    if mode == NodeMode::Ppcie
        && let Some((p, f)) = candidates.iter().find(|(_, f)| !f.supports_ppcie())
    {
        report.errors.push(format!(
            "{}: {f:?} has no PPCIe, and PPCIe covers every GPU and NVSwitch of the node",
            p.address
        ));
        return report;
    }
    let mut opened: Vec<LiveDevice> = Vec::new();
    for (pci, family) in &candidates {
        match live::open_for_switch(host, pci, *family, opener) {
            Ok(d) => opened.push(d),
            Err(why) => report.busy.push(format!("{}: {why}", pci.address)),
        }
    }
    let board_busy = report
        .busy
        .iter()
        .any(|b| board_addrs.iter().any(|a| b.starts_with(a.as_str())));
    let board: Vec<(&PciDevice, &CcDevice)> = opened
        .iter()
        .filter(|l| board_addrs.contains(&l.pci.address.to_string()))
        .map(|l| (&l.pci, &l.device))
        .collect();

    match mode {
        NodeMode::Ppcie => {
            if board_busy {
                return report;
            }
            let r = journaled::set_ppcie(journal, &board, true, &|_, _| {});
            report.errors.extend(r.devices.iter().filter_map(failed));
            report.ppcie = Some(r);
        }
        NodeMode::Cc(target) => {
            // PPCIe active or staged anywhere on the board: off everywhere first.
            let in_ppcie = board.iter().any(|(_, d)| {
                d.query().map(|s| s.ppcie == Some(true)).unwrap_or(false)
                    || d.setting_is_staged(super::Setting::Ppcie(true))
                        .unwrap_or(false)
            });
            if in_ppcie {
                if board_busy {
                    // Half a board out of PPCIe is worse than none: wait for it.
                    return report;
                }
                let r = journaled::set_ppcie(journal, &board, false, &|_, _| {});
                report.errors.extend(r.devices.iter().filter_map(failed));
                let ok = r.status != Status::Failed;
                report.ppcie_cleared = Some(r);
                if !ok {
                    return report;
                }
            }
            let gpus: Vec<(&PciDevice, &CcDevice)> = opened
                .iter()
                .filter(|l| l.device.family.cc_reg().is_some())
                .map(|l| (&l.pci, &l.device))
                .collect();
            let outs = journaled::set_cc(journal, &gpus, target, &|_, _| {});
            report.errors.extend(outs.iter().filter_map(failed));
            report.cc = outs;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_then_default_and_the_tee_guard() {
        let on = NodeMode::Cc(TargetMode::On);
        let off = NodeMode::Cc(TargetMode::Off);
        assert_eq!(wanted(Some("on"), RequestedMode::Keep, true), Ok(Some(on)));
        assert_eq!(
            wanted(Some("ppcie"), RequestedMode::Keep, true),
            Ok(Some(NodeMode::Ppcie))
        );
        assert_eq!(wanted(None, RequestedMode::Keep, true), Ok(None));
        assert_eq!(wanted(Some(""), RequestedMode::Off, true), Ok(Some(off)));
        assert_eq!(wanted(None, RequestedMode::On, true), Ok(Some(on)));
        // No TEE: the label's on/ppcie are refused, a default on becomes off.
        assert_eq!(
            wanted(Some("on"), RequestedMode::Keep, false),
            Err(Refusal::NoTee(on))
        );
        assert_eq!(
            wanted(Some("ppcie"), RequestedMode::Keep, false),
            Err(Refusal::NoTee(NodeMode::Ppcie))
        );
        assert_eq!(wanted(None, RequestedMode::On, false), Ok(Some(off)));
        assert_eq!(
            wanted(Some("devtools"), RequestedMode::Keep, false),
            Ok(Some(NodeMode::Cc(TargetMode::Devtools)))
        );
        let e = wanted(Some("yes"), RequestedMode::Keep, true).unwrap_err();
        assert!(e.to_string().contains("\"yes\""), "{e}");
    }
}
