//! One CC-capable device: a [`Bar0`], a [`Reset`], and the family that says which
//! registers and mailbox to use. The same code drives real hardware and the simulator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::bar0::Bar0;
use super::error::CcError;
use super::firewall::{self, ConfigSpace};
use super::fsp::{Fsp, Knob, KnobChange};
use super::mode::{CcState, Setting, TargetMode, Wanted};
use super::regs::{self, Family};
use super::transport;

/// Timeouts and poll interval. Defaults are gpu-admin-tools' (RPC 5 s, boot 5 s Hopper /
/// 10 s Blackwell); tests shorten them.
#[derive(Debug, Clone)]
pub struct Timing {
    pub rpc: Duration,
    /// `None`: the family default.
    pub boot: Option<Duration>,
    pub poll: Duration,
    /// Blackwell: how long the boot-time BAR0 firewall may stay up (5 s).
    pub firewall: Duration,
    /// Blackwell without NVIDIA's DVSEC capability: the sleep after a reset (3 s).
    pub firewall_fallback: Duration,
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        rpc: Duration::from_secs(5),
        boot: None,
        poll: Duration::from_millis(10),
        firewall: Duration::from_secs(5),
        firewall_fallback: Duration::from_secs(3),
    };
}

impl Default for Timing {
    fn default() -> Self {
        Timing::DEFAULT
    }
}

/// A function-level reset that makes staged knobs take effect.
pub trait Reset: Send + Sync {
    fn reset(&self) -> Result<(), ResetError>;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResetError(pub String);

/// Raw registers read without waiting, for reporting what a failed device looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadBack {
    pub boot_0: Option<u32>,
    pub boot_complete: Option<u32>,
    /// The mode register (PPCIe register on an NVSwitch), raw.
    pub mode_register: Option<u32>,
    /// Decoded only when the FSP reports boot-complete and BAR0 answers.
    pub state: Option<CcState>,
}

impl std::fmt::Display for ReadBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |v: Option<u32>| v.map_or("unreadable".to_string(), |v| format!("{v:#x}"));
        match &self.state {
            Some(s) => write!(f, "{s}"),
            None => write!(
                f,
                "BOOT_0 {}, boot-complete {}, mode register {}",
                hex(self.boot_0),
                hex(self.boot_complete),
                hex(self.mode_register)
            ),
        }
    }
}

/// One knob assignment in a staging sequence.
#[derive(Debug, Clone, Copy)]
struct Step {
    knob: Knob,
    value: u16,
    /// Skipped when the firmware does not know the knob ("PPCIE → 0 if FW knows it").
    optional: bool,
}

const fn step(knob: Knob, value: u16) -> Step {
    Step {
        knob,
        value,
        optional: false,
    }
}

pub struct CcDevice {
    pub name: String,
    pub family: Family,
    bar0: Box<dyn Bar0>,
    reset: Box<dyn Reset>,
    /// Config space, for Blackwell's BAR0 firewall bit.
    config: Option<Box<dyn ConfigSpace>>,
    /// A reset happened and the next boot wait has not run yet.
    just_reset: AtomicBool,
    pub timing: Timing,
}

impl std::fmt::Debug for CcDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CcDevice")
            .field("name", &self.name)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl CcDevice {
    pub fn new(
        name: impl Into<String>,
        family: Family,
        bar0: Box<dyn Bar0>,
        reset: Box<dyn Reset>,
        timing: Timing,
    ) -> Self {
        CcDevice {
            name: name.into(),
            family,
            bar0,
            reset,
            config: None,
            just_reset: AtomicBool::new(false),
            timing,
        }
    }

    /// Gives the device its config space (read for Blackwell's BAR0 firewall; without
    /// it a Blackwell device sleeps the fallback time after each reset).
    pub(crate) fn with_config(mut self, config: Box<dyn ConfigSpace>) -> Self {
        self.config = Some(config);
        self
    }

    /// Blackwell: before trusting BAR0, wait for the boot-time firewall to drop (the
    /// DVSEC bit; after a reset without the capability, the fallback sleep).
    fn wait_bar0_firewall(&self) -> Result<(), CcError> {
        if !self.family.is_blackwell() {
            return Ok(());
        }
        let after_reset = self.just_reset.swap(false, Ordering::SeqCst);
        let t = &self.timing;
        match &self.config {
            Some(c) => {
                firewall::wait(
                    c.as_ref(),
                    after_reset,
                    t.firewall,
                    t.firewall_fallback,
                    t.poll,
                )?;
            }
            None if after_reset => std::thread::sleep(t.firewall_fallback),
            None => {}
        }
        Ok(())
    }

    pub fn bar0(&self) -> &dyn Bar0 {
        self.bar0.as_ref()
    }

    fn boot_timeout(&self) -> Duration {
        self.timing
            .boot
            .unwrap_or_else(|| self.family.default_boot_timeout())
    }

    /// Checks BOOT_0: all-ones = suspended/broken, `0xbad?0200` = security fault.
    pub(crate) fn check_boot0(&self) -> Result<u32, CcError> {
        let boot0 = self.bar0.read32(regs::BOOT_0)?;
        if boot0 == u32::MAX {
            return Err(CcError::AllOnes {
                offset: regs::BOOT_0,
            });
        }
        if regs::BOOT_0_SECURITY_FAULTS.contains(&boot0) {
            return Err(CcError::SecurityFault { boot0 });
        }
        Ok(boot0)
    }

    /// Waits until the FSP reports boot-complete (`0xff`). On Blackwell BAR0 reads
    /// all-ones while the boot-time firewall is up, so all-ones is waited out there;
    /// elsewhere it is an immediate error.
    pub(crate) fn wait_for_boot(&self) -> Result<(), CcError> {
        self.wait_bar0_firewall()?;
        let timeout = self.boot_timeout();
        let reg = self.family.boot_complete_reg();
        let start = Instant::now();
        loop {
            match self.check_boot0() {
                Ok(_) => {
                    let v = self.bar0.read32(reg)?;
                    if v == regs::BOOT_COMPLETE_DONE {
                        return Ok(());
                    }
                    if start.elapsed() >= timeout {
                        return Err(CcError::BootTimeout {
                            reg,
                            last: v,
                            waited_ms: start.elapsed().as_millis(),
                        });
                    }
                }
                Err(CcError::AllOnes { .. })
                    if self.family.is_blackwell() && start.elapsed() < timeout => {}
                Err(e) => return Err(e),
            }
            std::thread::sleep(self.timing.poll);
        }
    }

    fn mode_reg(&self) -> u32 {
        self.family.cc_reg().unwrap_or(regs::PPCIE_LS10)
    }

    /// The active mode: register reads only (works on a read-only mapping).
    pub fn query(&self) -> Result<CcState, CcError> {
        self.wait_for_boot()?;
        let reg = self.mode_reg();
        let raw = self.bar0.read32(reg)?;
        if raw == u32::MAX {
            return Err(CcError::AllOnes { offset: reg });
        }
        Ok(CcState::decode(self.family, raw))
    }

    /// Whatever the registers say right now, without waiting and without failing.
    pub fn read_back(&self) -> ReadBack {
        let boot_0 = self.bar0.read32(regs::BOOT_0).ok();
        let boot_complete = self.bar0.read32(self.family.boot_complete_reg()).ok();
        let mode_register = self.bar0.read32(self.mode_reg()).ok();
        let state = match (boot_0, boot_complete, mode_register) {
            (Some(b0), Some(regs::BOOT_COMPLETE_DONE), Some(raw))
                if b0 != u32::MAX && raw != u32::MAX =>
            {
                Some(CcState::decode(self.family, raw))
            }
            _ => None,
        };
        ReadBack {
            boot_0,
            boot_complete,
            mode_register,
            state,
        }
    }

    /// The FSP mailbox of this device.
    pub fn fsp(&self) -> Fsp<'_> {
        Fsp::new(transport::for_kind(
            self.family.transport(),
            self.bar0.as_ref(),
            &self.timing,
        ))
    }

    /// Reads pending knob values (what takes effect at the next reset).
    pub fn pending_knobs(&self, knobs: &[Knob]) -> Result<Vec<(Knob, u16)>, CcError> {
        self.wait_for_boot()?;
        let fsp = self.fsp();
        knobs.iter().map(|&k| Ok((k, fsp.knob_read(k)?))).collect()
    }

    /// Applies a knob sequence with check-and-write. If a step fails, the knobs already
    /// changed are put back (reverse order), so a failed staging leaves nothing pending;
    /// if putting them back fails too, the error is [`CcError::LeftStaged`].
    fn apply(&self, steps: &[Step]) -> Result<Vec<KnobChange>, CcError> {
        self.wait_for_boot()?;
        let fsp = self.fsp();
        let mut changes = Vec::new();
        let fail = |changes: &[KnobChange], e: CcError| {
            let left = self.rollback_with(&fsp, changes);
            if left.is_empty() {
                e
            } else {
                CcError::LeftStaged {
                    source: Box::new(e),
                    knobs: left.join(", "),
                }
            }
        };
        for s in steps {
            if s.optional {
                match fsp.knob_read(s.knob) {
                    Ok(_) => {}
                    Err(CcError::FspStatus { status, .. }) => {
                        tracing::debug!(device = %self.name, knob = %s.knob.name(), status,
                            "firmware does not know this knob; skipped");
                        continue;
                    }
                    Err(e) => return Err(fail(&changes, e)),
                }
            }
            match fsp.knob_check_and_write(s.knob, s.value) {
                Ok(Some(c)) => changes.push(c),
                Ok(None) => {}
                Err(e) => return Err(fail(&changes, e)),
            }
        }
        Ok(changes)
    }

    /// Puts changed knobs back (reverse order); returns the ones that could not be.
    fn rollback_with(&self, fsp: &Fsp<'_>, changes: &[KnobChange]) -> Vec<String> {
        let mut left = Vec::new();
        for c in changes.iter().rev() {
            if let Err(e) = fsp.knob_write(c.knob, c.old) {
                tracing::error!(device = %self.name, knob = %c.knob.name(), error = %e,
                    "could not restore a staged knob; the next reset may apply it");
                left.push(format!("{}={}", c.knob.name(), c.new));
            }
        }
        left
    }

    /// Puts staged knobs back to their old values (before any reset).
    pub(crate) fn rollback(&self, changes: &[KnobChange]) -> Result<(), CcError> {
        let fsp = self.fsp();
        for c in changes.iter().rev() {
            fsp.knob_write(c.knob, c.old)?;
        }
        Ok(())
    }

    /// Are the knobs of a sequence already at its values? Knob reads only: used to skip
    /// journaling a change that would write nothing, and by recovery to tell a finished
    /// switch from a half-done one.
    fn is_staged(&self, steps: &[Step]) -> Result<bool, CcError> {
        self.wait_for_boot()?;
        let fsp = self.fsp();
        for s in steps {
            match fsp.knob_read(s.knob) {
                Ok(v) if v == s.value => {}
                Ok(_) => return Ok(false),
                Err(CcError::FspStatus { .. }) if s.optional => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The knob sequence of a CC mode. Order per docs/facts/gpu.md#cc-registers: CCM is set first and
    /// cleared last, so a CCD-only state never exists; the BAR0 decoupler and the knobs
    /// 2/4/34 are written on Hopper only.
    fn cc_steps(&self, mode: TargetMode) -> Result<Vec<Step>, CcError> {
        if !self.family.is_gpu() {
            return Err(CcError::Unsupported(format!(
                "{}: an NVSwitch has no CC mode of its own (use PPCIe)",
                self.name
            )));
        }
        let hopper = self.family == Family::Hopper;
        let mut steps = Vec::new();
        match mode {
            TargetMode::On => {
                if hopper {
                    steps.push(step(Knob::UNDOCUMENTED_2, 0));
                    steps.push(step(Knob::UNDOCUMENTED_4, 0));
                    steps.push(step(Knob::UNDOCUMENTED_34, 0));
                    steps.push(Step {
                        knob: Knob::PPCIE,
                        value: 0,
                        optional: true,
                    });
                    steps.push(step(Knob::BAR0_DECOUPLER, 2));
                }
                steps.push(step(Knob::CCM, 1));
                steps.push(step(Knob::CCD, 0));
            }
            TargetMode::Devtools => {
                steps.push(step(Knob::CCM, 1));
                steps.push(step(Knob::CCD, 1));
                if hopper {
                    steps.push(step(Knob::BAR0_DECOUPLER, 0));
                }
            }
            TargetMode::Off => {
                steps.push(step(Knob::CCD, 0));
                steps.push(step(Knob::CCM, 0));
            }
        }
        Ok(steps)
    }

    /// The knob sequence of PPCIe on or off (HGX Hopper GPUs and LS10 NVSwitches).
    fn ppcie_steps(&self, on: bool) -> Result<Vec<Step>, CcError> {
        if !self.family.supports_ppcie() {
            return Err(CcError::Unsupported(format!(
                "{}: PPCIe exists on HGX Hopper GPUs and LS10 NVSwitches only",
                self.name
            )));
        }
        let mut steps = Vec::new();
        if on {
            steps.push(step(Knob::UNDOCUMENTED_2, 0));
            steps.push(step(Knob::UNDOCUMENTED_4, 0));
            steps.push(step(Knob::UNDOCUMENTED_34, 0));
            steps.push(step(Knob::CCD, 0));
            steps.push(step(Knob::CCM, 0));
            if self.family.is_gpu() {
                steps.push(step(Knob::BAR0_DECOUPLER, 2));
            }
            steps.push(step(Knob::PPCIE, 1));
        } else {
            steps.push(step(Knob::PPCIE, 0));
        }
        Ok(steps)
    }

    /// The knob sequence of a [`Setting`].
    fn setting_steps(&self, s: Setting) -> Result<Vec<Step>, CcError> {
        match s {
            Setting::Cc(m) => self.cc_steps(m),
            Setting::Ppcie(on) => self.ppcie_steps(on),
        }
    }

    /// The knob sequence that restores a [`Wanted`] state: PPCIe on alone (it implies CC
    /// off); otherwise PPCIe off first (if the family has it), then the CC mode.
    fn wanted_steps(&self, w: &Wanted) -> Result<Vec<Step>, CcError> {
        if w.ppcie == Some(true) {
            return self.ppcie_steps(true);
        }
        let mut steps = Vec::new();
        if w.ppcie == Some(false) && self.family.supports_ppcie() {
            steps.push(Step {
                knob: Knob::PPCIE,
                value: 0,
                optional: self.family.is_gpu(),
            });
        }
        if let Some(m) = w.cc {
            steps.extend(self.cc_steps(m)?);
        }
        Ok(steps)
    }

    /// Stages a CC mode (active after the next reset).
    pub fn stage_cc(&self, mode: TargetMode) -> Result<Vec<KnobChange>, CcError> {
        self.apply(&self.cc_steps(mode)?)
    }

    /// Stages PPCIe on or off (HGX Hopper GPUs and LS10 NVSwitches).
    pub(crate) fn stage_ppcie(&self, on: bool) -> Result<Vec<KnobChange>, CcError> {
        self.apply(&self.ppcie_steps(on)?)
    }

    /// Stages what restores a state read earlier (active after the next reset).
    pub(crate) fn stage_wanted(&self, w: &Wanted) -> Result<Vec<KnobChange>, CcError> {
        self.apply(&self.wanted_steps(w)?)
    }

    /// Are the pending knobs already those of `s`? (Reads only.)
    pub(crate) fn setting_is_staged(&self, s: Setting) -> Result<bool, CcError> {
        self.is_staged(&self.setting_steps(s)?)
    }

    /// Are the pending knobs already those that restore `w`? (Reads only.)
    pub(crate) fn wanted_is_staged(&self, w: &Wanted) -> Result<bool, CcError> {
        self.is_staged(&self.wanted_steps(w)?)
    }

    /// Resets the function (sysfs `reset` on real hardware).
    pub fn reset(&self) -> Result<(), CcError> {
        self.reset
            .reset()
            .map_err(|e| CcError::Reset(format!("{}: {e}", self.name)))?;
        self.just_reset.store(true, Ordering::SeqCst);
        Ok(())
    }
}
