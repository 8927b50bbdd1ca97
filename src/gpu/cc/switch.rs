//! Switching many devices at once: staging, resets and verification run in parallel
//! (one thread per device), and every device gets its own [`Outcome`]. NVIDIA's manager
//! resets one by one in places (docs/facts/gpu.md#reset-timing); here the resets overlap, so N devices take
//! about as long as one.

use serde::Serialize;

use super::device::{CcDevice, ReadBack};
use super::error::CcError;
use super::fsp::KnobChange;
use super::mode::{CcMode, CcState, Setting, TargetMode, Wanted};
use super::regs::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Already in the requested mode; no reset. (A restore may have put pending knobs
    /// back, listed in `knobs_changed`.)
    Unchanged,
    /// Knobs staged, device reset, new mode verified.
    Switched,
    /// Something failed; `error` says what and `read_back` what the device reports now.
    Failed,
    /// Not touched because another device of an all-or-nothing group failed.
    Skipped,
}

/// The result for one device.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub device: String,
    pub family: Family,
    pub requested: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<CcState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<CcState>,
    /// Knob changes written, as `NAME old->new`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub knobs_changed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_back: Option<ReadBack>,
    /// Whether the device may now differ from `before`: a reset happened, or knobs were
    /// left staged. `false` for a failure that was cleanly rolled back.
    #[serde(skip)]
    pub changed: bool,
}

/// One point of a switch, reported to [`Progress::step`] once it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchStep {
    /// [`Progress::begin`] accepted the change (the journal entry is on disk).
    Journaled,
    /// The knobs are written (pending in the firmware).
    Staged,
    /// The reset was issued: the pending knobs are becoming active.
    Reset,
    /// The mode read back after boot is the requested one.
    Verified,
    /// [`Progress::finish`] recorded the outcome (the journal entry is settled).
    Committed,
}

/// Hooks into a switch, called from the device's own thread: the journal (begin before
/// the first knob write, settle after), progress output, crash tests.
pub(crate) trait Progress: Sync {
    /// The state was read and a knob is about to be written. An error leaves the
    /// device untouched (reported as failed).
    fn begin(&self, _dev: &CcDevice, _setting: Setting, _before: &CcState) -> Result<(), CcError> {
        Ok(())
    }
    fn step(&self, _dev: &CcDevice, _step: SwitchStep) {}
    /// The device's outcome is final.
    fn finish(&self, _dev: &CcDevice, _outcome: &mut Outcome) {}
}

/// No hooks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Quiet;
impl Progress for Quiet {}

impl Outcome {
    fn new(dev: &CcDevice, requested: String) -> Self {
        Outcome {
            device: dev.name.clone(),
            family: dev.family,
            requested,
            status: Status::Failed,
            before: None,
            after: None,
            knobs_changed: Vec::new(),
            error: None,
            read_back: None,
            changed: false,
        }
    }

    /// A device refused before anything was touched (driver bound, in use, unmappable).
    pub fn refused(device: String, family: Family, requested: &str, why: String) -> Self {
        Outcome {
            device,
            family,
            requested: requested.to_string(),
            status: Status::Failed,
            before: None,
            after: None,
            knobs_changed: Vec::new(),
            error: Some(why),
            read_back: None,
            changed: false,
        }
    }

    fn fail(mut self, dev: &CcDevice, e: &CcError) -> Self {
        tracing::warn!(device = %dev.name, error = %e, "CC switch failed");
        let rb = dev.read_back();
        self.status = Status::Failed;
        self.error = Some(e.to_string());
        self.after = rb.state;
        self.read_back = Some(rb);
        self
    }

    fn skip(mut self, why: String) -> Self {
        self.status = Status::Skipped;
        self.error = Some(why);
        self
    }

    fn record(&mut self, changes: &[KnobChange]) {
        self.knobs_changed.extend(
            changes
                .iter()
                .map(|c| format!("{} {}->{}", c.knob.name(), c.old, c.new)),
        );
    }

    pub fn ok(&self) -> bool {
        matches!(self.status, Status::Unchanged | Status::Switched)
    }
}

/// Runs `f` for every device on its own thread; results in input order.
pub fn parallel<T: Send>(devs: &[&CcDevice], f: impl Fn(&CcDevice) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = devs.iter().map(|&d| s.spawn(|| f(d))).collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(v) => v,
                // A panic is a bug, but one device's bug must not hide the others'
                // results; re-raise it here only after every thread finished.
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

/// Does `state` show `mode` active? On Hopper, CC on/devtools also means PPCIe off.
pub(crate) fn cc_matches(family: Family, mode: TargetMode, state: &CcState) -> bool {
    if state.mode != Some(mode.as_mode()) {
        return false;
    }
    match (family, mode) {
        (Family::Hopper, TargetMode::On | TargetMode::Devtools) => state.ppcie == Some(false),
        _ => true,
    }
}

/// Does `state` show PPCIe `on` active (and, for a GPU entering PPCIe, CC off)?
pub(crate) fn ppcie_matches(family: Family, on: bool, state: &CcState) -> bool {
    if state.ppcie != Some(on) {
        return false;
    }
    !(on && family.is_gpu() && state.mode != Some(CcMode::Off))
}

/// Query, stage, reset, wait for boot, verify: one device.
pub fn set_cc_one(dev: &CcDevice, mode: TargetMode) -> Outcome {
    set_cc_one_with(dev, mode, &Quiet)
}

/// [`set_cc_one`] with hooks.
pub(crate) fn set_cc_one_with(
    dev: &CcDevice,
    mode: TargetMode,
    progress: &dyn Progress,
) -> Outcome {
    let mut out = Outcome::new(dev, mode.to_string());
    let before = match dev.query() {
        Ok(s) => s,
        Err(e) => return out.fail(dev, &e),
    };
    out.before = Some(before);
    // Nothing to do (active and pending agree): no journal entry, no knob write.
    if cc_matches(dev.family, mode, &before) {
        match dev.setting_is_staged(Setting::Cc(mode)) {
            Ok(true) => {
                out.status = Status::Unchanged;
                out.after = Some(before);
                return out;
            }
            Ok(false) => {}
            Err(e) => return out.fail(dev, &e),
        }
    }
    if let Err(e) = progress.begin(dev, Setting::Cc(mode), &before) {
        return out.fail(dev, &e);
    }
    progress.step(dev, SwitchStep::Journaled);
    let changes = match dev.stage_cc(mode) {
        Ok(c) => c,
        Err(e) => {
            out.changed = matches!(e, CcError::LeftStaged { .. });
            return out.fail(dev, &e);
        }
    };
    out.record(&changes);
    progress.step(dev, SwitchStep::Staged);
    if changes.is_empty() && cc_matches(dev.family, mode, &before) {
        out.status = Status::Unchanged;
        out.after = Some(before);
        return out;
    }
    reset_and_verify(
        dev,
        out,
        &changes,
        |s| cc_matches(dev.family, mode, s),
        progress,
    )
}

/// Puts a device back into a state read earlier (undo and crash recovery): query,
/// stage what restores it, and reset only if the active state differs — a device whose
/// active state is already right only gets its pending knobs put back.
pub(crate) fn restore_one(dev: &CcDevice, want: &Wanted, progress: &dyn Progress) -> Outcome {
    let mut out = Outcome::new(dev, format!("restore {want}"));
    let now = match dev.query() {
        Ok(s) => s,
        Err(e) => return out.fail(dev, &e),
    };
    out.before = Some(now);
    let active_ok = want.matches(&now);
    if active_ok {
        match dev.wanted_is_staged(want) {
            Ok(true) => {
                out.status = Status::Unchanged;
                out.after = Some(now);
                return out;
            }
            Ok(false) => {}
            Err(e) => return out.fail(dev, &e),
        }
    }
    let changes = match dev.stage_wanted(want) {
        Ok(c) => c,
        Err(e) => {
            out.changed = matches!(e, CcError::LeftStaged { .. });
            return out.fail(dev, &e);
        }
    };
    out.record(&changes);
    progress.step(dev, SwitchStep::Staged);
    if active_ok {
        out.status = Status::Unchanged;
        out.after = Some(now);
        out.changed = !changes.is_empty();
        return out;
    }
    reset_and_verify(dev, out, &changes, |s| want.matches(s), progress)
}

fn reset_and_verify(
    dev: &CcDevice,
    mut out: Outcome,
    changes: &[KnobChange],
    ok: impl Fn(&CcState) -> bool,
    progress: &dyn Progress,
) -> Outcome {
    if let Err(e) = dev.reset() {
        // The knobs are staged but not active: take them back so that no later,
        // unrelated reset activates a half-finished switch.
        if let Err(rb) = dev.rollback(changes) {
            tracing::error!(device = %dev.name, error = %rb, "could not roll back staged knobs");
            out.changed = true;
        }
        return out.fail(dev, &e);
    }
    out.changed = true;
    progress.step(dev, SwitchStep::Reset);
    let after = match dev.query() {
        Ok(s) => s,
        Err(e) => return out.fail(dev, &e),
    };
    if ok(&after) {
        out.status = Status::Switched;
        out.after = Some(after);
        progress.step(dev, SwitchStep::Verified);
        out
    } else {
        let e = CcError::Mismatch {
            expected: out.requested.clone(),
            found: after,
        };
        out.fail(dev, &e)
    }
}

/// Switches every device to `mode` in parallel; one outcome per device, in input order.
pub fn set_cc_all(devs: &[&CcDevice], mode: TargetMode) -> Vec<Outcome> {
    set_cc_all_with(devs, mode, &Quiet)
}

/// [`set_cc_all`] with hooks; [`Progress::finish`] runs in each device's thread.
pub(crate) fn set_cc_all_with(
    devs: &[&CcDevice],
    mode: TargetMode,
    progress: &dyn Progress,
) -> Vec<Outcome> {
    parallel(devs, |d| {
        let mut o = set_cc_one_with(d, mode, progress);
        progress.finish(d, &mut o);
        o
    })
}

/// The result of a PPCIe change: all devices of the group, and the group's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct PpcieReport {
    pub requested: String,
    /// `switched`/`unchanged` only when every device is; otherwise `failed`.
    pub status: Status,
    pub devices: Vec<Outcome>,
}

/// PPCIe on or off for a whole HGX board (GPUs and NVSwitches), all-or-nothing up to the
/// reset: every device must support PPCIe and answer its query, and the knobs are staged
/// everywhere before any device is reset; if staging fails anywhere, the knobs already
/// staged are put back and nothing is reset. Resets then run together, each device is
/// verified on its own.
pub fn set_ppcie_all(devs: &[&CcDevice], on: bool) -> PpcieReport {
    set_ppcie_all_with(devs, on, &Quiet)
}

/// [`set_ppcie_all`] with hooks: [`Progress::begin`] runs for each device that needs a
/// change once every device answered its query, before that device's first knob write;
/// [`Progress::finish`] for every device at the end.
pub(crate) fn set_ppcie_all_with(
    devs: &[&CcDevice],
    on: bool,
    progress: &dyn Progress,
) -> PpcieReport {
    let mut report = ppcie_group(devs, on, progress);
    for (d, o) in devs.iter().zip(report.devices.iter_mut()) {
        progress.finish(d, o);
    }
    report
}

fn ppcie_group(devs: &[&CcDevice], on: bool, progress: &dyn Progress) -> PpcieReport {
    let requested = if on { "ppcie on" } else { "ppcie off" }.to_string();
    let fresh = |d: &CcDevice| Outcome::new(d, requested.clone());
    let report = |devices: Vec<Outcome>| {
        let status = if devices.iter().all(|o| o.status == Status::Unchanged) {
            Status::Unchanged
        } else if devices.iter().all(Outcome::ok) {
            Status::Switched
        } else {
            Status::Failed
        };
        PpcieReport {
            requested: requested.clone(),
            status,
            devices,
        }
    };

    if devs.is_empty() {
        return report(Vec::new());
    }
    if let Some(bad) = devs.iter().find(|d| !d.family.supports_ppcie()) {
        let why = format!(
            "not switched: {} ({:?}) has no PPCIe; PPCIe is all-or-nothing",
            bad.name, bad.family
        );
        return report(devs.iter().map(|d| fresh(d).skip(why.clone())).collect());
    }

    // 1. Every device must answer before anything is written.
    let before: Vec<Result<CcState, CcError>> = parallel(devs, |d| d.query());
    if before.iter().any(Result::is_err) {
        let outs = devs
            .iter()
            .zip(before)
            .map(|(d, r)| match r {
                Ok(s) => {
                    let mut o = fresh(d).skip(
                        "not switched: another device of the PPCIe group could not be queried"
                            .into(),
                    );
                    o.before = Some(s);
                    o
                }
                Err(e) => fresh(d).fail(d, &e),
            })
            .collect();
        return report(outs);
    }
    let before: Vec<CcState> = before.into_iter().flatten().collect();

    // 2. Stage everywhere (journaling first where something changes); on any failure
    //    put the staged knobs back and stop.
    let setting = Setting::Ppcie(on);
    let indexed: Vec<(usize, &CcDevice)> = devs.iter().copied().enumerate().collect();
    let staged: Vec<Result<Vec<KnobChange>, CcError>> = std::thread::scope(|s| {
        let handles: Vec<_> = indexed
            .iter()
            .map(|&(i, d)| {
                let b = before[i];
                s.spawn(move || {
                    if ppcie_matches(d.family, on, &b) && d.setting_is_staged(setting)? {
                        return Ok(Vec::new());
                    }
                    progress.begin(d, setting, &b)?;
                    progress.step(d, SwitchStep::Journaled);
                    let c = d.stage_ppcie(on)?;
                    progress.step(d, SwitchStep::Staged);
                    Ok(c)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    if staged.iter().any(Result::is_err) {
        let outs = devs
            .iter()
            .zip(staged)
            .zip(&before)
            .map(|((d, r), b)| {
                let mut o = fresh(d);
                o.before = Some(*b);
                match r {
                    Ok(changes) => match d.rollback(&changes) {
                        Ok(()) => o.skip(
                            "not switched: staging failed on another device of the PPCIe \
                             group; staged knobs were restored"
                                .into(),
                        ),
                        Err(e) => {
                            o.record(&changes);
                            o.changed = true;
                            o.fail(
                                d,
                                &CcError::Protocol(format!(
                                    "staging failed on another device; restoring this \
                                     device's staged knobs failed too: {e}"
                                )),
                            )
                        }
                    },
                    Err(e) => {
                        o.changed = matches!(e, CcError::LeftStaged { .. });
                        o.fail(d, &e)
                    }
                }
            })
            .collect();
        return report(outs);
    }

    // 3. Reset together, verify each.
    let work: Vec<(usize, Vec<KnobChange>)> = staged.into_iter().flatten().enumerate().collect();
    let outs = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|(i, changes)| {
                let d = devs[i];
                let b = before[i];
                let mut o = fresh(d);
                s.spawn(move || {
                    o.before = Some(b);
                    o.record(&changes);
                    if changes.is_empty() && ppcie_matches(d.family, on, &b) {
                        o.status = Status::Unchanged;
                        o.after = Some(b);
                        return o;
                    }
                    reset_and_verify(d, o, &changes, |s| ppcie_matches(d.family, on, s), progress)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    report(outs)
}
