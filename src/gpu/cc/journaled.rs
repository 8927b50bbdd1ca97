//! CC and PPCIe switches, journaled: one `gpu.cc` entry per device, written before its
//! first knob write, holding the state read before (what restores it); settled once
//! the device's outcome is known. [`CcRestorer`] puts a device back, for `cchost undo`
//! and for the recovery of a switch an earlier run left half done.
//!
//! A crash between a knob write and the reset leaves a *pending* mode in the firmware,
//! which any later reset (a VM start's FLR included) would activate. Recovery therefore
//! never leaves an `applying` entry alone: it re-queries the device and
//! - drops the entry if the device is in its recorded state with nothing pending;
//! - keeps it (finished) if the requested state is active and nothing else is pending
//!   (the crash hit after verification, before the commit);
//! - otherwise rolls back: stages the recorded state and resets if the active state
//!   differs (a device whose reset had not happened only gets its knobs put back).
//!
//! A device it cannot open (bound to a driver, in use) or query is an error naming the
//! entry, which stays for the next start: it is never dropped silently.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::device::CcDevice;
use super::error::CcError;
use super::live::{Opener, open_for_switch};
use super::mode::{CcState, Setting, Wanted};
use super::regs::Family;
use super::switch::{self, Outcome, Progress, Quiet, Status, SwitchStep};
use crate::host::HostRoot;
use crate::host::pci::{PciAddress, PciDevice};
use crate::journal::{Entry, Journal, Recovery, RestoreError, Restorer};

/// Journal kind of a CC or PPCIe switch (subject: the PCI address).
pub const CC_KIND: &str = "gpu.cc";

/// The change of a `gpu.cc` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CcChange {
    pub setting: Setting,
}

/// The restore data of a `gpu.cc` entry: the state before cchost's first switch of the
/// device, and which device that was (a swapped card is not "restored").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CcRestore {
    pub family: Family,
    pub vendor: u16,
    pub device: u16,
    pub before: CcState,
}

/// Does `state` show `setting` active?
pub(crate) fn setting_matches(family: Family, setting: Setting, state: &CcState) -> bool {
    match setting {
        Setting::Cc(m) => switch::cc_matches(family, m, state),
        Setting::Ppcie(on) => switch::ppcie_matches(family, on, state),
    }
}

/// A device's open entry while its switch runs.
#[derive(Debug, Clone, Copy)]
struct Open {
    seq: u64,
    /// Written by this run (dropped again if nothing changed).
    fresh: bool,
    original: CcState,
}

/// Observer of switch steps (crash tests kill the process after a chosen one).
pub type StepObserver<'o> = &'o (dyn Fn(&str, SwitchStep) + Sync);

/// The [`Progress`] that journals: `begin` writes (or re-opens) the entry, `finish`
/// settles it. The journal is shared by the devices' threads behind a lock; every
/// journal write is on disk before the call returns.
pub(crate) struct Journaling<'j, 'o> {
    journal: Mutex<&'j mut Journal>,
    ids: HashMap<String, (u16, u16)>,
    open: Mutex<HashMap<String, Open>>,
    observe: StepObserver<'o>,
}

impl<'j, 'o> Journaling<'j, 'o> {
    /// `devices`: the PCI functions being switched (their IDs go into the restore data).
    pub fn new(
        journal: &'j mut Journal,
        devices: &[&PciDevice],
        observe: StepObserver<'o>,
    ) -> Self {
        Journaling {
            journal: Mutex::new(journal),
            ids: devices
                .iter()
                .map(|p| (p.address.to_string(), (p.vendor, p.device)))
                .collect(),
            open: Mutex::new(HashMap::new()),
            observe,
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, &'j mut Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settle(&self, name: &str, o: &Outcome) -> Result<(), String> {
        let Some(open) = self.open_entries().remove(name) else {
            return Ok(());
        };
        let back_to_original = o.ok()
            && o.after
                .is_some_and(|a| Wanted::from_state(&open.original).is_ok_and(|w| w.matches(&a)));
        let mut j = self.journal();
        let r = if !o.changed {
            // Nothing on the device differs from before this run.
            if open.fresh {
                j.forget(open.seq)
            } else {
                j.applied(open.seq)
            }
        } else if back_to_original {
            // Switched back to what it was before cchost's first change: nothing to undo.
            j.forget(open.seq)
        } else {
            // Switched, or failed after touching the device: undo restores the original.
            j.applied(open.seq)
        };
        r.map_err(|e| e.to_string())
    }
}

impl Progress for Journaling<'_, '_> {
    fn begin(&self, dev: &CcDevice, setting: Setting, before: &CcState) -> Result<(), CcError> {
        let &(vendor, device) = self
            .ids
            .get(&dev.name)
            .ok_or_else(|| CcError::Journal(format!("{} was not announced", dev.name)))?;
        let mut j = self.journal();
        let change = CcChange { setting };
        let open = match j.find(CC_KIND, &dev.name).cloned() {
            // Switched by cchost before: keep the state before the first switch.
            Some(e) => {
                let r: CcRestore = e
                    .restore_as()
                    .map_err(|e| CcError::Journal(e.to_string()))?;
                j.reapplying_with(e.seq, change)
                    .map_err(|e| CcError::Journal(e.to_string()))?;
                Open {
                    seq: e.seq,
                    fresh: false,
                    original: r.before,
                }
            }
            None => {
                let restore = CcRestore {
                    family: dev.family,
                    vendor,
                    device,
                    before: *before,
                };
                let seq = j
                    .begin(CC_KIND, &dev.name, change, restore)
                    .map_err(|e| CcError::Journal(e.to_string()))?;
                Open {
                    seq,
                    fresh: true,
                    original: *before,
                }
            }
        };
        drop(j);
        self.open_entries().insert(dev.name.clone(), open);
        Ok(())
    }

    fn step(&self, dev: &CcDevice, step: SwitchStep) {
        (self.observe)(&dev.name, step);
    }

    fn finish(&self, dev: &CcDevice, outcome: &mut Outcome) {
        let had_entry = self.open_entries().contains_key(&dev.name);
        if let Err(e) = self.settle(&dev.name, outcome) {
            // The device is switched but the journal could not say so: report it failed,
            // the entry stays `applying` and the next start re-queries the device.
            outcome.status = Status::Failed;
            let prev = outcome
                .error
                .take()
                .map(|p| format!("{p}; "))
                .unwrap_or_default();
            outcome.error = Some(format!("{prev}journal: {e}"));
        }
        if had_entry {
            (self.observe)(&dev.name, SwitchStep::Committed);
        }
    }
}

/// Restores and recovers `gpu.cc` entries through an [`Opener`] (the mmap of
/// `resource0` in cchost; the simulator in tests), with the same checks as a switch.
#[derive(Clone, Copy)]
pub struct CcRestorer<'a> {
    pub opener: &'a dyn Opener,
}

impl std::fmt::Debug for CcRestorer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CcRestorer")
    }
}

/// What a restore needs from an entry: the device, opened for a switch, and the state
/// to put back (`None`: the recorded state was the invalid mode).
fn prepare(
    host: &HostRoot,
    entry: &Entry,
    opener: &dyn Opener,
) -> Result<(super::live::LiveDevice, Option<Wanted>, CcRestore), RestoreError> {
    let r: CcRestore = entry.restore_as()?;
    let address: PciAddress = entry
        .subject
        .parse()
        .map_err(|e| RestoreError::new(format!("journal entry {entry}: bad subject: {e}")))?;
    let pci = host.pci_device(&address)?;
    if (pci.vendor, pci.device) != (r.vendor, r.device) {
        return Err(RestoreError::new(format!(
            "{address} is now {:04x}:{:04x}, not the {:04x}:{:04x} cchost switched; not touching it",
            pci.vendor, pci.device, r.vendor, r.device
        )));
    }
    let live = open_for_switch(host, &pci, r.family, opener)
        .map_err(|e| RestoreError::new(format!("cannot restore the CC state: {e}")))?;
    let want = Wanted::from_state(&r.before).ok();
    Ok((live, want, r))
}

fn restore_with(dev: &CcDevice, want: &Wanted) -> Result<Outcome, RestoreError> {
    let out = switch::restore_one(dev, want, &Quiet);
    if out.ok() {
        tracing::info!(device = %dev.name, %want, status = ?out.status, "CC state restored");
        Ok(out)
    } else {
        let now = out
            .read_back
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "unknown".into());
        Err(RestoreError::new(format!(
            "{}: restoring {want} failed: {}; the device reports {now}",
            dev.name,
            out.error.as_deref().unwrap_or("unknown error")
        )))
    }
}

impl Restorer for CcRestorer<'_> {
    fn kind(&self) -> &str {
        CC_KIND
    }

    fn restore(&self, host: &HostRoot, entry: &Entry) -> Result<(), RestoreError> {
        let (live, want, r) = prepare(host, entry, self.opener)?;
        match want {
            Some(w) => restore_with(&live.device, &w).map(|_| ()),
            None => {
                tracing::warn!(device = %entry.subject, before = %r.before,
                    "the device was in the invalid CC mode before cchost switched it; \
                     that is not restored, it keeps its current mode");
                Ok(())
            }
        }
    }

    fn recover(&self, host: &HostRoot, entry: &Entry) -> Result<Recovery, RestoreError> {
        let change: CcChange = entry.change_as()?;
        let (live, want, r) = prepare(host, entry, self.opener)?;
        let dev = &live.device;
        let now = dev.query().map_err(|e| {
            RestoreError::new(format!(
                "{}: cannot read the CC state to recover an interrupted switch: {e}",
                dev.name
            ))
        })?;
        let staged = |s: Setting| {
            dev.setting_is_staged(s)
                .map_err(|e| RestoreError::new(e.to_string()))
        };
        if let Some(w) = want
            && w.matches(&now)
            && dev
                .wanted_is_staged(&w)
                .map_err(|e| RestoreError::new(e.to_string()))?
        {
            tracing::warn!(device = %dev.name, "interrupted CC switch had changed nothing");
            return Ok(Recovery::RolledBack);
        }
        if setting_matches(r.family, change.setting, &now) && staged(change.setting)? {
            tracing::warn!(device = %dev.name, setting = %change.setting,
                "interrupted CC switch had completed; keeping it");
            return Ok(Recovery::Finished);
        }
        match want {
            Some(w) => {
                tracing::warn!(device = %dev.name, now = %now, back_to = %w,
                    "rolling back an interrupted CC switch");
                restore_with(dev, &w).map(|_| Recovery::RolledBack)
            }
            // Nothing valid to go back to: finish the requested change instead, so no
            // half-staged state is left for a later reset.
            None => {
                let out = match change.setting {
                    Setting::Cc(m) => switch::set_cc_one(dev, m),
                    Setting::Ppcie(on) => switch::set_ppcie_all(&[dev], on)
                        .devices
                        .pop()
                        .ok_or_else(|| RestoreError::new("no outcome"))?,
                };
                if out.ok() {
                    Ok(Recovery::Finished)
                } else {
                    Err(RestoreError::new(format!(
                        "{}: completing the interrupted {} failed: {}",
                        dev.name,
                        change.setting,
                        out.error.unwrap_or_default()
                    )))
                }
            }
        }
    }
}

/// `cchost gpu cc set` for already opened devices: journaled, parallel, one outcome per
/// device in input order.
pub fn set_cc(
    journal: &mut Journal,
    devices: &[(&PciDevice, &CcDevice)],
    mode: super::TargetMode,
    observe: StepObserver<'_>,
) -> Vec<Outcome> {
    let pcis: Vec<&PciDevice> = devices.iter().map(|(p, _)| *p).collect();
    let devs: Vec<&CcDevice> = devices.iter().map(|(_, d)| *d).collect();
    let j = Journaling::new(journal, &pcis, observe);
    switch::set_cc_all_with(&devs, mode, &j)
}

/// `cchost gpu cc ppcie set` for a whole board: journaled per device, all or nothing.
pub fn set_ppcie(
    journal: &mut Journal,
    devices: &[(&PciDevice, &CcDevice)],
    on: bool,
    observe: StepObserver<'_>,
) -> switch::PpcieReport {
    let pcis: Vec<&PciDevice> = devices.iter().map(|(p, _)| *p).collect();
    let devs: Vec<&CcDevice> = devices.iter().map(|(_, d)| *d).collect();
    let j = Journaling::new(journal, &pcis, observe);
    switch::set_ppcie_all_with(&devs, on, &j)
}
