//! MCTP/NVDM framing and PRC knobs over an [`FspTransport`] (docs/facts/gpu.md#cc-registers).
//!
//! Request: dword0 MCTP transport header (single packet: SOM and EOM set, seq 0),
//! dword1 MCTP message header (type 0x7e vendor-defined, vendor 0x10de, NVDM type in the
//! top byte), then the PRC payload. Reply: NVDM type 0x15, dword3 echoes the request's
//! NVDM type, dword4 is the status (0 = ok), the payload follows.

use super::error::CcError;
use super::transport::FspTransport;

pub(crate) const MCTP_SOM: u32 = 1 << 31;
pub(crate) const MCTP_EOM: u32 = 1 << 30;
pub(crate) const MCTP_TYPE_VENDOR_PCI: u32 = 0x7e;
pub(crate) const PCI_VENDOR_NVIDIA: u32 = 0x10de;
pub(crate) const NVDM_TYPE_PRC: u32 = 0x13;
pub(crate) const NVDM_TYPE_RESPONSE: u32 = 0x15;

/// PRC sub-messages and the "knob" layout byte the tools put in bits [15:8].
pub(crate) const PRC_KNOB_READ: u32 = 0xc;
pub(crate) const PRC_KNOB_WRITE: u32 = 0xd;
pub(crate) const PRC_KNOB_FLAGS: u32 = 0x2;

/// PRC knob IDs (gpu-admin-tools `gpu/prc.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Knob(pub u16);

impl Knob {
    /// Cleared when enabling CC or PPCIe; semantics undocumented.
    pub(crate) const UNDOCUMENTED_2: Knob = Knob(2);
    pub(crate) const UNDOCUMENTED_4: Knob = Knob(4);
    pub(crate) const CCD_ALLOW_INB: Knob = Knob(5);
    /// CC devtools.
    pub const CCD: Knob = Knob(6);
    pub(crate) const CCM_ALLOW_INB: Knob = Knob(7);
    /// CC mode on.
    pub const CCM: Knob = Knob(8);
    pub(crate) const BAR0_DECOUPLER_ALLOW_INB: Knob = Knob(9);
    pub(crate) const BAR0_DECOUPLER: Knob = Knob(10);
    pub(crate) const UNDOCUMENTED_34: Knob = Knob(34);
    pub(crate) const FORCE_RESET_COUPLING: Knob = Knob(36);
    pub(crate) const PPCIE_ALLOW_INB: Knob = Knob(44);
    pub const PPCIE: Knob = Knob(45);

    pub fn name(self) -> String {
        match self {
            Knob::CCD_ALLOW_INB => "CCD_ALLOW_INB".into(),
            Knob::CCD => "CCD".into(),
            Knob::CCM_ALLOW_INB => "CCM_ALLOW_INB".into(),
            Knob::CCM => "CCM".into(),
            Knob::BAR0_DECOUPLER_ALLOW_INB => "BAR0_DECOUPLER_ALLOW_INB".into(),
            Knob::BAR0_DECOUPLER => "BAR0_DECOUPLER".into(),
            Knob::FORCE_RESET_COUPLING => "FORCE_RESET_COUPLING".into(),
            Knob::PPCIE_ALLOW_INB => "PPCIE_ALLOW_INB".into(),
            Knob::PPCIE => "PPCIE".into(),
            Knob(n) => format!("knob {n}"),
        }
    }
}

/// One knob write that changed something: what it was, what it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnobChange {
    pub knob: Knob,
    pub old: u16,
    pub new: u16,
}

pub(crate) fn mctp_header() -> u32 {
    MCTP_SOM | MCTP_EOM
}

pub(crate) fn message_header(nvdm_type: u32) -> u32 {
    MCTP_TYPE_VENDOR_PCI | (PCI_VENDOR_NVIDIA << 8) | (nvdm_type << 24)
}

/// Checks a reply against the request's NVDM type; returns the payload.
pub fn parse_reply(reply: &[u32], request_type: u32) -> Result<&[u32], CcError> {
    if reply.len() < 5 {
        return Err(CcError::Protocol(format!(
            "reply of {} dwords is shorter than 5: {reply:x?}",
            reply.len()
        )));
    }
    let hdr = reply[1];
    if hdr & 0x7f != MCTP_TYPE_VENDOR_PCI || (hdr >> 8) & 0xffff != PCI_VENDOR_NVIDIA {
        return Err(CcError::Protocol(format!(
            "reply is not an NVIDIA vendor message: {reply:x?}"
        )));
    }
    if hdr >> 24 != NVDM_TYPE_RESPONSE {
        return Err(CcError::Protocol(format!(
            "reply NVDM type {:#x}, expected {NVDM_TYPE_RESPONSE:#x}: {reply:x?}",
            hdr >> 24
        )));
    }
    if reply[3] != request_type {
        return Err(CcError::Protocol(format!(
            "reply answers request type {:#x}, not {request_type:#x}: {reply:x?}",
            reply[3]
        )));
    }
    if reply[4] != 0 {
        return Err(CcError::FspStatus {
            status: reply[4],
            reply: reply.to_vec(),
        });
    }
    Ok(&reply[5..])
}

/// The FSP as the CC code sees it: PRC commands and knobs.
pub struct Fsp<'a> {
    transport: Box<dyn FspTransport + 'a>,
}

impl<'a> Fsp<'a> {
    pub fn new(transport: Box<dyn FspTransport + 'a>) -> Self {
        Fsp { transport }
    }

    /// One PRC command, one reply; returns the reply payload.
    pub(crate) fn prc(&self, payload: &[u32]) -> Result<Vec<u32>, CcError> {
        let mut packet = Vec::with_capacity(payload.len() + 2);
        packet.push(mctp_header());
        packet.push(message_header(NVDM_TYPE_PRC));
        packet.extend_from_slice(payload);
        self.transport.send(&packet)?;
        let reply = self.transport.receive()?;
        Ok(parse_reply(&reply, NVDM_TYPE_PRC)?.to_vec())
    }

    fn knob_word(sub: u32, knob: Knob) -> u32 {
        sub | (PRC_KNOB_FLAGS << 8) | (u32::from(knob.0) << 16)
    }

    /// Reads a knob's pending value (16 bits; the upper half of the reply is not
    /// guaranteed to be zero).
    pub(crate) fn knob_read(&self, knob: Knob) -> Result<u16, CcError> {
        let data = self.prc(&[Self::knob_word(PRC_KNOB_READ, knob)])?;
        match data.as_slice() {
            [v] => Ok((v & 0xffff) as u16),
            other => Err(CcError::Protocol(format!(
                "knob {} read returned {} dwords: {other:x?}",
                knob.name(),
                other.len()
            ))),
        }
    }

    pub(crate) fn knob_write(&self, knob: Knob, value: u16) -> Result<(), CcError> {
        let data = self.prc(&[Self::knob_word(PRC_KNOB_WRITE, knob), u32::from(value)])?;
        if !data.is_empty() {
            return Err(CcError::Protocol(format!(
                "knob {} write returned data: {data:x?}",
                knob.name()
            )));
        }
        Ok(())
    }

    /// Reads, and writes only when the value differs. Returns the change, if any.
    pub(crate) fn knob_check_and_write(
        &self,
        knob: Knob,
        value: u16,
    ) -> Result<Option<KnobChange>, CcError> {
        let old = self.knob_read(knob)?;
        if old == value {
            tracing::debug!(knob = %knob.name(), value, "knob already set");
            return Ok(None);
        }
        self.knob_write(knob, value)?;
        tracing::debug!(knob = %knob.name(), old, new = value, "knob written");
        Ok(Some(KnobChange {
            knob,
            old,
            new: value,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(nvdm: u32, echo: u32, status: u32, payload: &[u32]) -> Vec<u32> {
        let mut r = vec![mctp_header(), message_header(nvdm), 0, echo, status];
        r.extend_from_slice(payload);
        r
    }

    #[test]
    fn headers_follow_the_documented_bit_layout() {
        assert_eq!(mctp_header(), 0xc000_0000);
        assert_eq!(message_header(NVDM_TYPE_PRC), 0x1310_de7e);
    }

    #[test]
    fn replies_are_checked_field_by_field() {
        let ok = reply(NVDM_TYPE_RESPONSE, NVDM_TYPE_PRC, 0, &[7]);
        assert_eq!(parse_reply(&ok, NVDM_TYPE_PRC).unwrap(), &[7]);
        let short = &ok[..4];
        assert!(matches!(
            parse_reply(short, NVDM_TYPE_PRC),
            Err(CcError::Protocol(_))
        ));
        let wrong_type = reply(0x14, NVDM_TYPE_PRC, 0, &[]);
        assert!(matches!(
            parse_reply(&wrong_type, NVDM_TYPE_PRC),
            Err(CcError::Protocol(_))
        ));
        let wrong_echo = reply(NVDM_TYPE_RESPONSE, 0x10, 0, &[]);
        assert!(matches!(
            parse_reply(&wrong_echo, NVDM_TYPE_PRC),
            Err(CcError::Protocol(_))
        ));
        let mut not_nvidia = ok.clone();
        not_nvidia[1] = 0x1500_0000 | (0x8086 << 8) | 0x7e;
        assert!(matches!(
            parse_reply(&not_nvidia, NVDM_TYPE_PRC),
            Err(CcError::Protocol(_))
        ));
        let refused = reply(NVDM_TYPE_RESPONSE, NVDM_TYPE_PRC, 0x3, &[]);
        assert!(matches!(
            parse_reply(&refused, NVDM_TYPE_PRC),
            Err(CcError::FspStatus { status: 3, .. })
        ));
    }
}
