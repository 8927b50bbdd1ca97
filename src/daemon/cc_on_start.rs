//! `cc.mode_on_start`: `cchost run` switches the CC-capable GPUs to the configured mode
//! when it starts (after binding, so they are on vfio-pci), as NVIDIA's cc-manager does
//! with its default mode. The same checks and journal as `cchost gpu cc set`: a GPU
//! with another driver or in use is refused and named; the others switch in parallel;
//! a GPU already in the mode is left alone (no entry, no reset). `cchost undo` reverts.

use crate::config::Config;
use crate::gpu::cc::journaled;
use crate::gpu::cc::live::{self, LiveDevice, Opener};
use crate::gpu::cc::switch::Outcome;
use crate::gpu::cc::{CcDevice, TargetMode};
use crate::host::HostRoot;
use crate::host::pci::PciDevice;
use crate::journal::Journal;

#[derive(Debug, Default)]
pub struct StartSwitch {
    pub outcomes: Vec<Outcome>,
    /// Device and why, one line each: not switched, left as it is.
    pub refused: Vec<String>,
}

pub fn set_mode(
    host: &HostRoot,
    journal: &mut Journal,
    config: &Config,
    mode: TargetMode,
    opener: &dyn Opener,
) -> StartSwitch {
    let mut out = StartSwitch::default();
    let candidates = match live::candidates(host, &config.matching) {
        Ok(c) => c,
        Err(e) => {
            out.refused.push(format!("PCI scan: {e}"));
            return out;
        }
    };
    // NVSwitches have PPCIe only; their mode is not this setting's.
    let opened: Vec<LiveDevice> = candidates
        .into_iter()
        .filter(|(_, f)| f.cc_reg().is_some())
        .filter_map(
            |(pci, f)| match live::open_for_switch(host, &pci, f, opener) {
                Ok(d) => Some(d),
                Err(why) => {
                    out.refused.push(format!("{}: {why}", pci.address));
                    None
                }
            },
        )
        .collect();
    let devs: Vec<(&PciDevice, &CcDevice)> = opened.iter().map(|l| (&l.pci, &l.device)).collect();
    out.outcomes = journaled::set_cc(journal, &devs, mode, &|_, _| {});
    out
}

/// `[[cc.modes]]`: each GPU to the mode the configuration gives it (a mixed node), with
/// the same opening checks and journal. Refused as a whole, with the reason and nothing
/// switched, when the modes do not fit this host's GPUs, when a GPU would go to `on`
/// without a CPU TEE, or when a GPU is in Protected PCIe mode (which covers the whole
/// board, so a board cannot be half PPCIe: turn it off for the board first).
pub fn set_modes(
    host: &HostRoot,
    journal: &mut Journal,
    config: &Config,
    tee_on: bool,
    opener: &dyn Opener,
) -> StartSwitch {
    use crate::config::{RequestedMode, cc_modes::resolve};
    let mut out = StartSwitch::default();
    let inv = crate::inventory::gpu::discover_gpus(host, &config.matching);
    let wanted = match resolve(
        &config.cc.modes,
        &crate::inventory::cc_split::gpu_slots(&inv),
    ) {
        Ok(w) => w,
        Err(e) => {
            out.refused.push(format!("{e}; no GPU is switched"));
            return out;
        }
    };
    if !tee_on && wanted.values().any(|m| *m == RequestedMode::On) {
        out.refused.push(
            "cc.modes puts GPUs in mode on, but no CPU TEE (TDX or SEV-SNP) is on, and a GPU \
             in CC mode is only usable by a confidential VM; no GPU is switched"
                .to_string(),
        );
        return out;
    }
    let candidates = match live::candidates(host, &config.matching) {
        Ok(c) => c,
        Err(e) => {
            out.refused.push(format!("PCI scan: {e}"));
            return out;
        }
    };
    let opened: Vec<(LiveDevice, RequestedMode)> = candidates
        .into_iter()
        .filter(|(_, f)| f.cc_reg().is_some())
        .filter_map(|(pci, f)| {
            let Some(mode) = wanted.get(&pci.address).copied() else {
                out.refused.push(format!(
                    "{}: not a GPU of cc.modes; left as it is",
                    pci.address
                ));
                return None;
            };
            match live::open_for_switch(host, &pci, f, opener) {
                Ok(d) => Some((d, mode)),
                Err(why) => {
                    out.refused.push(format!("{}: {why}", pci.address));
                    None
                }
            }
        })
        .collect();
    for (l, _) in &opened {
        if let Ok(state) = l.device.query()
            && state.ppcie == Some(true)
        {
            out.refused.push(format!(
                "{}: in Protected PCIe mode, which covers the whole board; per-GPU modes \
                 need it off first (`cchost gpu cc ppcie set off`, or \
                 nvidia.com/cc.mode=off); no GPU is switched",
                l.pci.address
            ));
            return out;
        }
    }
    // `resolve` accepted only `on` and `off` (CcModes::validate); the GPUs going on are
    // switched first, as before.
    for target in [TargetMode::On, TargetMode::Off, TargetMode::Devtools] {
        let devs: Vec<(&PciDevice, &CcDevice)> = opened
            .iter()
            .filter(|(_, m)| TargetMode::requested(*m) == Some(target))
            .map(|(l, _)| (&l.pci, &l.device))
            .collect();
        if !devs.is_empty() {
            out.outcomes
                .extend(journaled::set_cc(journal, &devs, target, &|_, _| {}));
        }
    }
    out
}
