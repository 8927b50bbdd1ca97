//! The simulated FSP firmware: a knob store, PRC command handling with its own framing
//! code (deliberately not the client's, so a framing bug on one side shows), and the
//! pending-versus-active split: knobs take effect only at reset.

use std::collections::BTreeMap;

use crate::gpu::cc::regs::Family;

// Framing constants, from docs/facts/gpu.md#cc-registers (restated here on purpose).
const SOM: u32 = 1 << 31;
const EOM: u32 = 1 << 30;
const VENDOR_MSG: u32 = 0x7e;
const NVIDIA: u32 = 0x10de;
const NVDM_PRC: u32 = 0x13;
const NVDM_REPLY: u32 = 0x15;

/// Status codes the simulator answers with. The real FSP's codes are not documented;
/// these are the simulator's own (any non-zero status is an error to the client).
pub const STATUS_OK: u32 = 0;
pub const STATUS_BAD_FRAME: u32 = 0x1;
pub const STATUS_UNSUPPORTED: u32 = 0x2;
pub const STATUS_INVALID_KNOB: u32 = 0x3;
pub const STATUS_BAD_VALUE: u32 = 0x4;
pub const STATUS_INBAND_DISABLED: u32 = 0x5;

/// Knob IDs the simulated firmware understands, per family.
fn known_knobs(family: Family, knows_ppcie: bool) -> Vec<u16> {
    let mut k = match family {
        // Hopper: everything in gpu/prc.py.
        Family::Hopper => vec![2, 4, 5, 6, 7, 8, 9, 10, 34, 36],
        // Blackwell: no BAR0 decoupler (the tools write it on Hopper only).
        Family::Blackwell | Family::Gb20x => vec![2, 4, 5, 6, 7, 8, 34, 36],
        Family::Ls10 => vec![2, 4, 5, 6, 7, 8, 34],
    };
    if knows_ppcie && family.supports_ppcie() {
        k.extend([44, 45]);
    }
    k
}

/// The `*_ALLOW_INB` knob guarding a knob, if any.
fn allow_knob(knob: u16) -> Option<u16> {
    match knob {
        6 => Some(5),
        8 => Some(7),
        10 => Some(9),
        45 => Some(44),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct Firmware {
    pub family: Family,
    /// Pending values: what the next reset makes active.
    pub knobs: BTreeMap<u16, u16>,
    /// Active CC mode bits [1:0] as the mode register shows them.
    pub active_mode: u32,
    pub active_ppcie: bool,
    /// Values answered for an error-status fault (`None`: behave).
    pub forced_status: Option<u32>,
    pub rpcs: u64,
    pub knob_writes: u64,
    /// Every accepted knob write, in order: (knob, value).
    pub write_log: Vec<(u16, u16)>,
}

impl Firmware {
    pub fn new(family: Family, knows_ppcie: bool) -> Self {
        let mut knobs = BTreeMap::new();
        for k in known_knobs(family, knows_ppcie) {
            // In-band control permitted by default; everything else zero.
            let v = u16::from(matches!(k, 5 | 7 | 9 | 44));
            knobs.insert(k, v);
        }
        let mut fw = Firmware {
            family,
            knobs,
            active_mode: 0,
            active_ppcie: false,
            forced_status: None,
            rpcs: 0,
            knob_writes: 0,
            write_log: Vec::new(),
        };
        fw.activate();
        fw
    }

    /// What a reset does: pending knobs become active. CCM and CCD combine into the
    /// mode bits; CCD without CCM (which the ordering rule never produces) reads as the
    /// invalid value 2 — the simulator's model of an interrupted switch.
    pub fn activate(&mut self) {
        let ccm = self.knobs.get(&8).copied().unwrap_or(0) != 0;
        let ccd = self.knobs.get(&6).copied().unwrap_or(0) != 0;
        self.active_mode = match (ccm, ccd) {
            (false, false) => 0,
            (true, false) => 1,
            (true, true) => 3,
            (false, true) => 2,
        };
        self.active_ppcie = self.knobs.get(&45).copied().unwrap_or(0) != 0;
    }

    /// Handles one request packet; returns the reply packet.
    pub fn handle(&mut self, msg: &[u32]) -> Vec<u32> {
        self.rpcs += 1;
        let reply = |req_type: u32, status: u32, payload: &[u32]| {
            let mut r = vec![
                SOM | EOM,
                VENDOR_MSG | (NVIDIA << 8) | (NVDM_REPLY << 24),
                0,
            ];
            r.push(req_type);
            r.push(status);
            r.extend_from_slice(payload);
            r
        };
        if msg.len() < 3 || msg[0] & (SOM | EOM) != (SOM | EOM) {
            return reply(0, STATUS_BAD_FRAME, &[]);
        }
        let hdr = msg[1];
        if hdr & 0x7f != VENDOR_MSG || (hdr >> 8) & 0xffff != NVIDIA {
            return reply(0, STATUS_BAD_FRAME, &[]);
        }
        let nvdm = hdr >> 24;
        if let Some(status) = self.forced_status {
            return reply(nvdm, status, &[]);
        }
        if nvdm != NVDM_PRC {
            return reply(nvdm, STATUS_UNSUPPORTED, &[]);
        }
        let prc = msg[2];
        let sub = prc & 0xff;
        let flags = (prc >> 8) & 0xff;
        let knob = (prc >> 16) as u16;
        if flags != 0x2 {
            return reply(nvdm, STATUS_UNSUPPORTED, &[]);
        }
        match (sub, msg.len()) {
            (0xc, 3) => match self.knobs.get(&knob) {
                // The upper 16 bits of a knob read are not guaranteed zero on real
                // firmware; the simulator fills them to prove the client masks them.
                Some(&v) => reply(nvdm, STATUS_OK, &[0xa5a5_0000 | u32::from(v)]),
                None => reply(nvdm, STATUS_INVALID_KNOB, &[]),
            },
            (0xd, 4) => {
                let value = msg[3];
                if !self.knobs.contains_key(&knob) {
                    return reply(nvdm, STATUS_INVALID_KNOB, &[]);
                }
                if value > 0xffff {
                    return reply(nvdm, STATUS_BAD_VALUE, &[]);
                }
                if let Some(a) = allow_knob(knob)
                    && self.knobs.get(&a).copied().unwrap_or(0) == 0
                {
                    return reply(nvdm, STATUS_INBAND_DISABLED, &[]);
                }
                self.knobs.insert(knob, value as u16);
                self.knob_writes += 1;
                self.write_log.push((knob, value as u16));
                reply(nvdm, STATUS_OK, &[])
            }
            _ => reply(nvdm, STATUS_UNSUPPORTED, &[]),
        }
    }
}
