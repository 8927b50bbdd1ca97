//! Register offsets and per-family choices, all from docs/facts/gpu.md#cc-registers
//! (gpu-admin-tools v2025.10.20).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Architecture, ChipRange};

/// `NV_PMC_BOOT_0`: chip identification; all-ones = broken or suspended.
pub(crate) const BOOT_0: u32 = 0x0;
/// BOOT_0 values that mean a priv security fault rather than a chip ID.
pub(crate) const BOOT_0_SECURITY_FAULTS: [u32; 2] = [0xbadf_0200, 0xbad0_0200];

/// `NV_THERM_I2CS_SCRATCH_FSP_BOOT_COMPLETE` on GH100 and GB100-class chips.
pub(crate) const BOOT_COMPLETE_GH100: u32 = 0x200bc;
/// The same scratch register on GB202-class chips.
pub(crate) const BOOT_COMPLETE_GB202: u32 = 0xad00bc;
/// NVSwitch LS10 boot-complete register.
pub(crate) const BOOT_COMPLETE_LS10: u32 = 0x660bc;
/// Value of a boot-complete register once the FSP has booted.
pub const BOOT_COMPLETE_DONE: u32 = 0xff;

/// Active CC mode on Hopper: bits[1:0] mode, bit 5 PPCIe.
pub(crate) const CC_HOPPER: u32 = 0x1182cc;
/// Active CC mode on Blackwell: bits[1:0] mode, bit 2 BAR0-firewall mode.
pub(crate) const CC_BLACKWELL: u32 = 0x590;
pub(crate) const CC_MODE_MASK: u32 = 0x3;
pub const HOPPER_PPCIE_BIT: u32 = 1 << 5;
pub(crate) const BLACKWELL_FIREWALL_BIT: u32 = 1 << 2;
/// NVSwitch LS10 PPCIe mode: bit 0.
pub(crate) const PPCIE_LS10: u32 = 0x28c50;

/// FSP EMEM channel used for NVDM RPCs.
pub(crate) const FSP_EMEM_CHANNEL: u32 = 2;
/// Each channel owns a 1 KiB window of EMEM, which is also the largest packet.
pub(crate) const EMEM_CHANNEL_BYTES: u32 = 1024;
/// EMEM port control (`EMEMC`): byte offset in bits [15:2], auto-increment on write (24)
/// and on read (25) — the standard falcon memory-port layout.
pub(crate) const EMEMC_OFFSET_MASK: u32 = 0xfffc;
pub(crate) const EMEMC_AINCW: u32 = 1 << 24;
pub(crate) const EMEMC_AINCR: u32 = 1 << 25;

pub(crate) const fn emem_ctrl(ch: u32) -> u32 {
    0x8f2ac0 + ch * 8
}
pub(crate) const fn emem_data(ch: u32) -> u32 {
    emem_ctrl(ch) + 4
}
/// Command queue (host -> FSP); writing the head is the doorbell.
pub(crate) const fn cmd_queue_head(ch: u32) -> u32 {
    0x8f2c00 + ch * 8
}
pub(crate) const fn cmd_queue_tail(ch: u32) -> u32 {
    cmd_queue_head(ch) + 4
}
/// Message queue (FSP -> host); the host acks by writing the tail back to the head.
pub(crate) const fn msg_queue_head(ch: u32) -> u32 {
    0x8f2c80 + ch * 8
}
pub(crate) const fn msg_queue_tail(ch: u32) -> u32 {
    msg_queue_head(ch) + 4
}

/// FSP MNOC mailbox (Blackwell), port 0.
pub(crate) const MNOC_BASE: u32 = 0x8f1e00;
pub(crate) const MNOC_PORT: u32 = 0;
/// FSP -> host mailbox info; the next register pops one data dword.
pub(crate) const fn mnoc_send_info(port: u32) -> u32 {
    MNOC_BASE + 0x104 + port * 12
}
pub(crate) const fn mnoc_send_data(port: u32) -> u32 {
    mnoc_send_info(port) + 4
}
/// Host -> FSP mailbox info; the next register takes one data dword.
pub(crate) const fn mnoc_recv_info(port: u32) -> u32 {
    MNOC_BASE + 0x184 + port * 12
}
pub(crate) const fn mnoc_recv_data(port: u32) -> u32 {
    mnoc_recv_info(port) + 4
}
pub(crate) const MNOC_SIZE_MASK: u32 = 0xfffff;
pub(crate) const MNOC_NEW_MSG: u32 = 1 << 20;
pub(crate) const MNOC_READY: u32 = 1 << 24;
pub(crate) const MNOC_ERROR: u32 = 1 << 25;
pub(crate) const MNOC_CREDITS: u32 = 1 << 26;
/// One credit per 64 bytes written.
pub(crate) const MNOC_CREDIT_BYTES: usize = 64;
pub(crate) const MNOC_MAX_PACKET: usize = 4160;

/// The chip families the CC code distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// GH100 (H100/H200/H800/H20).
    Hopper,
    /// GB100/GB102/GB110/GB112 (B100/B200/B300).
    Blackwell,
    /// GB202..GB207 (RTX PRO Blackwell): boot-complete lives at another offset.
    Gb20x,
    /// NVSwitch gen3 of HGX Hopper: PPCIe only, no CC mode of its own.
    Ls10,
}

/// Which mailbox reaches the FSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Emem,
    Mnoc,
}

impl Family {
    /// The family of a chip range from the matching config; `None` for non-CC parts.
    pub(crate) fn from_chip(chip: &ChipRange) -> Option<Family> {
        match chip.architecture {
            Architecture::Hopper if chip.cc => Some(Family::Hopper),
            Architecture::Blackwell if chip.cc => {
                if chip.chip.to_ascii_uppercase().starts_with("GB20") {
                    Some(Family::Gb20x)
                } else {
                    Some(Family::Blackwell)
                }
            }
            Architecture::Ls10 if chip.ppcie => Some(Family::Ls10),
            _ => None,
        }
    }

    pub fn is_gpu(self) -> bool {
        self != Family::Ls10
    }

    pub(crate) fn is_blackwell(self) -> bool {
        matches!(self, Family::Blackwell | Family::Gb20x)
    }

    /// PPCIe exists on Hopper GPUs and LS10 NVSwitches only.
    pub fn supports_ppcie(self) -> bool {
        matches!(self, Family::Hopper | Family::Ls10)
    }

    pub(crate) fn boot_complete_reg(self) -> u32 {
        match self {
            Family::Hopper | Family::Blackwell => BOOT_COMPLETE_GH100,
            Family::Gb20x => BOOT_COMPLETE_GB202,
            Family::Ls10 => BOOT_COMPLETE_LS10,
        }
    }

    /// How long gpu-admin-tools waits for the FSP to boot.
    pub(crate) fn default_boot_timeout(self) -> Duration {
        if self.is_blackwell() {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(5)
        }
    }

    /// The active-mode register, if the family has a CC mode.
    pub(crate) fn cc_reg(self) -> Option<u32> {
        match self {
            Family::Hopper => Some(CC_HOPPER),
            Family::Blackwell | Family::Gb20x => Some(CC_BLACKWELL),
            Family::Ls10 => None,
        }
    }

    pub fn transport(self) -> TransportKind {
        if self.is_blackwell() {
            TransportKind::Mnoc
        } else {
            TransportKind::Emem
        }
    }
}
