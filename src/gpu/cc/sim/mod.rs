//! A register-level simulator of the GPU's FSP, written from the documented protocol
//! (docs/facts/gpu.md#cc-registers), for tests and benchmarks. The client under test is the real one:
//! [`SimGpu::device`] returns a [`CcDevice`] whose [`Bar0`] and [`Reset`] are the
//! simulator's, so every register access of a query or switch lands here.
//!
//! What it models: the EMEM channel queues (Hopper, LS10) and the MNOC mailbox
//! (Blackwell) at their BAR0 offsets; MCTP/NVDM framing; PRC knob read/write; a knob
//! store whose values become active only at reset; the boot-complete register reaching
//! `0xff` a configurable delay after reset; Blackwell's boot-time BAR0 firewall (BAR0
//! reads all-ones for a configurable time after reset, shown by bit 20 of NVIDIA's DVSEC
//! capability in a modelled config space, or without that capability); the mode/PPCIe
//! registers; and injectable faults.
//!
//! What it cannot prove: real FSP timing, status codes, undocumented knob semantics
//! (2/4/34, decoupler), firmware-version differences, or how real hardware behaves when
//! a driver or VM holds the GPU. See docs/gpu.md, "CC mode".

mod emem;
pub mod firmware;
mod mnoc;
pub mod register_file;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::bar0::{Bar0, Bar0Error};
use super::device::{CcDevice, Reset, ResetError, Timing};
use super::firewall::ConfigSpace;
use super::regs::{self, Family, TransportKind};
use emem::{Emem, EmemEvent};
use firmware::Firmware;
use mnoc::{Mnoc, MnocEvent};

/// Size of the simulated BAR0 (16 MiB, like a GPU's register BAR).
pub const BAR0_LEN: u32 = 16 << 20;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub family: Family,
    /// Time from reset to boot-complete (≈1.7–1.8 s observed on H100,
    /// docs/facts/gpu.md#cc-registers).
    pub reset_delay: Duration,
    /// Whether the firmware knows the PPCIe knobs (old firmware did not).
    pub knows_ppcie_knob: bool,
    /// Value of BOOT_0 (any plausible chip ID; the client only checks all-ones and faults).
    pub boot_0: u32,
    /// Blackwell: how long the BAR0 firewall stays up after a reset (`None`: until the
    /// FSP has booted).
    pub firewall: Option<Duration>,
    /// Blackwell: whether config space carries NVIDIA's DVSEC with the firewall bit
    /// (without it, a foreign vendor's DVSEC with bit 20 set sits there as a decoy).
    pub dvsec: bool,
}

impl SimConfig {
    pub fn new(family: Family) -> Self {
        SimConfig {
            family,
            reset_delay: Duration::from_millis(1800),
            knows_ppcie_knob: true,
            boot_0: match family {
                Family::Hopper | Family::Ls10 => 0x1800_00a1,
                Family::Blackwell | Family::Gb20x => 0x1b00_00a1,
            },
            firewall: None,
            dvsec: true,
        }
    }

    pub fn firewall(mut self, window: Duration) -> Self {
        self.firewall = Some(window);
        self
    }

    pub fn without_dvsec(mut self) -> Self {
        self.dvsec = false;
        self
    }

    pub fn reset_delay(mut self, d: Duration) -> Self {
        self.reset_delay = d;
        self
    }
}

/// Injectable faults, each modelled on a failure seen in the field (docs/facts/gpu.md#in-use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The FSP never takes the command (queue stays full) and never replies.
    NoReply,
    /// Every RPC is answered with this non-zero status.
    ErrorStatus(u32),
    /// The next reset leaves mode value 2 (invalid), as after an interrupted switch.
    InvalidModeAfterReset,
    /// Every BAR0 read returns all-ones and writes are dropped (suspended / broken).
    AllOnes,
    /// After the next reset the FSP never reports boot-complete.
    BootNeverCompletes,
    /// The reset request itself fails.
    ResetFails,
}

#[derive(Debug)]
struct State {
    cfg: SimConfig,
    fw: Firmware,
    emem: Emem,
    mnoc: Mnoc,
    /// `None`: never boots.
    boot_done_at: Option<Instant>,
    /// Blackwell: when the BAR0 firewall drops (`None`: never).
    firewall_down_at: Option<Instant>,
    /// BAR0 reads answered all-ones because the firewall was up.
    firewalled_reads: u64,
    faults: BTreeSet<Fault>,
    resets: u64,
}

impl State {
    fn booted(&self) -> bool {
        self.boot_done_at.is_some_and(|t| Instant::now() >= t)
    }

    fn firewall_up(&self) -> bool {
        self.cfg.family.is_blackwell() && self.firewall_down_at.is_none_or(|t| Instant::now() < t)
    }

    /// PCI config space: IDs, COMMAND with memory decode, and an extended capability
    /// list (AER, then a DVSEC) on Blackwell.
    fn config_space(&self) -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        let mut put = |off: usize, v: u32| c[off..off + 4].copy_from_slice(&v.to_le_bytes());
        let device: u32 = match self.cfg.family {
            Family::Hopper => 0x2330,
            Family::Blackwell => 0x2901,
            Family::Gb20x => 0x2bb5,
            Family::Ls10 => 0x22a3,
        };
        put(0x0, 0x10de | (device << 16));
        put(0x4, 0x0006);
        if self.cfg.family.is_blackwell() {
            put(0x100, 0x0001 | (2 << 16) | (0x140 << 20));
            put(0x140, 0x0023 | (1 << 16));
            let vendor = if self.cfg.dvsec { 0x10de } else { 0x8086 };
            put(0x144, vendor | (0x10 << 20));
            let up = !self.cfg.dvsec || self.firewall_up();
            put(0x148, if up { 1 << 20 } else { 0 });
        }
        c
    }

    fn mode_register(&self) -> u32 {
        match self.cfg.family {
            Family::Hopper => {
                self.fw.active_mode
                    | if self.fw.active_ppcie {
                        regs::HOPPER_PPCIE_BIT
                    } else {
                        0
                    }
            }
            Family::Blackwell | Family::Gb20x => self.fw.active_mode,
            Family::Ls10 => u32::from(self.fw.active_ppcie),
        }
    }

    fn no_reply(&self) -> bool {
        !self.booted() || self.faults.contains(&Fault::NoReply)
    }

    /// The FSP's main loop, run on every register access: take a queued command when
    /// booted, responsive, and the previous reply has been acknowledged.
    fn pump(&mut self) {
        let ch = regs::FSP_EMEM_CHANNEL;
        let i = ch as usize;
        if self.no_reply() || self.emem.msg_head[i] != self.emem.msg_tail[i] {
            return;
        }
        if let Some(cmd) = self.emem.take_command(ch) {
            let reply = self.fw.handle(&cmd);
            self.emem.post_reply(ch, &reply);
        }
    }

    fn read(&mut self, off: u32) -> u32 {
        let family = self.cfg.family;
        if family.transport() == TransportKind::Emem {
            self.pump();
        }
        if self.faults.contains(&Fault::AllOnes) {
            return u32::MAX;
        }
        let booted = self.booted();
        if self.firewall_up() {
            self.firewalled_reads += 1;
            return u32::MAX;
        }
        if off == regs::BOOT_0 {
            return self.cfg.boot_0;
        }
        if off == family.boot_complete_reg() {
            return if booted { regs::BOOT_COMPLETE_DONE } else { 0 };
        }
        if family.cc_reg() == Some(off) || (family == Family::Ls10 && off == regs::PPCIE_LS10) {
            return if booted { self.mode_register() } else { 0 };
        }
        let v = match family.transport() {
            TransportKind::Emem => self.emem.read(off),
            TransportKind::Mnoc => self.mnoc.read(off),
        };
        v.unwrap_or(0)
    }

    fn write(&mut self, off: u32, value: u32) {
        if self.faults.contains(&Fault::AllOnes) {
            return;
        }
        match self.cfg.family.transport() {
            TransportKind::Emem => {
                if let Some(EmemEvent::Doorbell) = self.emem.write(off, value) {
                    self.pump();
                }
            }
            TransportKind::Mnoc => {
                if let Some(MnocEvent::Message(m)) = self.mnoc.write(off, value)
                    && !self.no_reply()
                {
                    let reply = self.fw.handle(&m);
                    self.mnoc.post_reply(&reply);
                }
            }
        }
    }

    fn reset(&mut self) -> Result<(), ResetError> {
        if self.faults.contains(&Fault::ResetFails) {
            return Err(ResetError("simulated reset failure: write error".into()));
        }
        self.fw.activate();
        if self.faults.remove(&Fault::InvalidModeAfterReset) {
            self.fw.active_mode = 2;
        }
        self.emem.reset_queues();
        self.mnoc.reset();
        self.boot_done_at = if self.faults.contains(&Fault::BootNeverCompletes) {
            None
        } else {
            Some(Instant::now() + self.cfg.reset_delay)
        };
        self.firewall_down_at = match self.cfg.firewall {
            Some(w) => Some(Instant::now() + w),
            None => self.boot_done_at,
        };
        self.resets += 1;
        Ok(())
    }
}

/// One simulated device. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct SimGpu {
    state: Arc<Mutex<State>>,
}

impl SimGpu {
    /// A device that has booted, with all knobs at their defaults (CC off).
    pub fn new(cfg: SimConfig) -> Self {
        let fw = Firmware::new(cfg.family, cfg.knows_ppcie_knob);
        SimGpu {
            state: Arc::new(Mutex::new(State {
                cfg,
                fw,
                emem: Emem::new(),
                mnoc: Mnoc::default(),
                boot_done_at: Some(Instant::now()),
                firewall_down_at: Some(Instant::now()),
                firewalled_reads: 0,
                faults: BTreeSet::new(),
                resets: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn family(&self) -> Family {
        self.lock().cfg.family
    }

    /// The register window the client uses.
    pub fn bar0(&self) -> Box<dyn Bar0> {
        Box::new(SimBar0(self.clone()))
    }

    /// The reset the client triggers (stands in for sysfs `reset`).
    pub fn reset_handle(&self) -> Box<dyn Reset> {
        Box::new(SimReset(self.clone()))
    }

    /// The device's config space, as sysfs `config` would show it.
    pub fn config(&self) -> Box<dyn ConfigSpace> {
        Box::new(SimConfigSpace(self.clone()))
    }

    /// A client device wired to this simulator.
    pub fn device(&self, name: impl Into<String>, timing: Timing) -> CcDevice {
        CcDevice::new(
            name,
            self.family(),
            self.bar0(),
            self.reset_handle(),
            timing,
        )
        .with_config(self.config())
    }

    /// BAR0 reads that hit the firewall (answered all-ones).
    pub fn firewalled_reads(&self) -> u64 {
        self.lock().firewalled_reads
    }

    pub fn inject(&self, fault: Fault) {
        let mut s = self.lock();
        if let Fault::ErrorStatus(st) = fault {
            s.fw.forced_status = Some(st);
        }
        s.faults.insert(fault);
    }

    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.faults.clear();
        s.fw.forced_status = None;
    }

    /// Pending (staged) value of a knob, `None` if the firmware does not know it.
    pub fn pending_knob(&self, knob: u16) -> Option<u16> {
        self.lock().fw.knobs.get(&knob).copied()
    }

    /// Sets a pending knob directly (test setup, e.g. forbidding in-band control).
    pub fn set_knob(&self, knob: u16, value: u16) {
        self.lock().fw.knobs.insert(knob, value);
    }

    /// Sets pending knobs and makes them active at once, as if the device had been
    /// switched and reset earlier.
    pub fn preset_active(&self, knobs: &[(u16, u16)]) {
        let mut s = self.lock();
        for &(k, v) in knobs {
            s.fw.knobs.insert(k, v);
        }
        s.fw.activate();
    }

    /// The active mode register value (PPCIe register on an NVSwitch).
    pub fn active_register(&self) -> u32 {
        self.lock().mode_register()
    }

    pub fn rpcs(&self) -> u64 {
        self.lock().fw.rpcs
    }

    pub fn knob_writes(&self) -> u64 {
        self.lock().fw.knob_writes
    }

    /// Every knob write the firmware accepted, in order, and clears the log.
    pub fn take_write_log(&self) -> Vec<(u16, u16)> {
        std::mem::take(&mut self.lock().fw.write_log)
    }

    pub fn resets(&self) -> u64 {
        self.lock().resets
    }
}

struct SimBar0(SimGpu);

fn check(offset: u32) -> Result<(), Bar0Error> {
    if !offset.is_multiple_of(4) {
        return Err(Bar0Error::Unaligned { offset });
    }
    if offset > BAR0_LEN - 4 {
        return Err(Bar0Error::OutOfRange {
            offset,
            len: BAR0_LEN,
        });
    }
    Ok(())
}

impl Bar0 for SimBar0 {
    fn read32(&self, offset: u32) -> Result<u32, Bar0Error> {
        check(offset)?;
        Ok(self.0.lock().read(offset))
    }

    fn write32(&self, offset: u32, value: u32) -> Result<(), Bar0Error> {
        check(offset)?;
        self.0.lock().write(offset, value);
        Ok(())
    }
}

struct SimConfigSpace(SimGpu);

impl ConfigSpace for SimConfigSpace {
    fn read(&self) -> Result<Vec<u8>, String> {
        Ok(self.0.lock().config_space())
    }
}

struct SimReset(SimGpu);

impl Reset for SimReset {
    fn reset(&self) -> Result<(), ResetError> {
        self.0.lock().reset()
    }
}
