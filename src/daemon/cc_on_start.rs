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
