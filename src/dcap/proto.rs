//! The QGS wire protocol (our own encoding, written from the documented layout).
//!
//! A message on the wire is a 4-byte **big-endian** length N followed by N bytes; the N
//! bytes start with a packed **little-endian** 16-byte header (`major`, `minor`, `type`,
//! `size`, `error_code`) where `size` == N. QGS answers one request per connection and
//! maps every quote failure to `0x12001`, so the error code alone rarely says why.
//!
//! Parsing never trusts a length from the wire for an allocation: every length is checked
//! against [`MAX_MESSAGE`] and against the bytes actually present first.

use std::fmt;

use serde::Serialize;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;
/// Bytes of the message header.
pub(crate) const HEADER_LEN: usize = 16;
/// The largest response cchost accepts. A collateral response (CRLs, chains, TCB info,
/// QE identity) is tens of KiB; 4 MiB leaves room and still bounds a hostile prefix.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

pub(crate) const MAJOR_VERSION: u16 = 1;
pub(crate) const MINOR_VERSION: u16 = 1;

/// Message types (`type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MsgType {
    GetQuoteReq = 0,
    GetQuoteResp = 1,
    GetCollateralReq = 2,
    GetCollateralResp = 3,
    GetPlatformInfoReq = 4,
    GetPlatformInfoResp = 5,
}

/// QGS error codes: `0x00012000 | n`.
pub mod code {
    pub const SUCCESS: u32 = 0;
    pub const UNEXPECTED: u32 = 0x12001;
    pub(crate) const OUT_OF_MEMORY: u32 = 0x12002;
    pub(crate) const INVALID_PARAMETER: u32 = 0x12003;
    pub(crate) const INVALID_VERSION: u32 = 0x12004;
    pub(crate) const INVALID_TYPE: u32 = 0x12005;
    pub(crate) const INVALID_SIZE: u32 = 0x12006;
    pub(crate) const INVALID_CODE: u32 = 0x12007;
}

/// A human name for a QGS error code.
pub(crate) fn error_name(c: u32) -> &'static str {
    match c {
        code::SUCCESS => "SUCCESS",
        code::UNEXPECTED => {
            "UNEXPECTED (QGS reports every quote/collateral failure this way; the cause is only in the QGS log)"
        }
        code::OUT_OF_MEMORY => "OUT_OF_MEMORY",
        code::INVALID_PARAMETER => "INVALID_PARAMETER",
        code::INVALID_VERSION => "INVALID_VERSION",
        code::INVALID_TYPE => "INVALID_TYPE",
        code::INVALID_SIZE => "INVALID_SIZE",
        code::INVALID_CODE => "INVALID_CODE",
        _ => "unknown error code",
    }
}

/// The 16-byte message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub major: u16,
    pub minor: u16,
    pub msg_type: u32,
    pub size: u32,
    pub error_code: u32,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&self.major.to_le_bytes());
        b[2..4].copy_from_slice(&self.minor.to_le_bytes());
        b[4..8].copy_from_slice(&self.msg_type.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[12..16].copy_from_slice(&self.error_code.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(b);
        Ok(Header {
            major: r.u16()?,
            minor: r.u16()?,
            msg_type: r.u32()?,
            size: r.u32()?,
            error_code: r.u32()?,
        })
    }
}

/// Everything wrong a reply can be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("reply truncated: needed {needed} more bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    #[error("length prefix {0} is larger than the {MAX_MESSAGE}-byte limit")]
    TooLarge(u64),
    #[error("length prefix {0} is smaller than the 16-byte header")]
    TooSmall(u32),
    #[error("length prefix {prefix} disagrees with header size {header}")]
    SizeMismatch { prefix: u32, header: u32 },
    #[error(
        "protocol version {major}.{minor} is not 1.x (a raw-mode reply or a different service on this socket?)"
    )]
    Version { major: u16, minor: u16 },
    #[error("unexpected message type {got} (wanted {want:?})")]
    Type { got: u32, want: MsgType },
    #[error("QGS answered error 0x{code:05x} {}", error_name(*.code))]
    Qgs { code: u32 },
    #[error("{extra} trailing bytes after the message body")]
    Trailing { extra: usize },
    #[error("field {field} is {len} bytes, expected {want}")]
    FieldSize {
        field: &'static str,
        len: u32,
        want: u32,
    },
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let rest = self.b.len() - self.at;
        if n > rest {
            return Err(ProtoError::Truncated {
                at: self.at,
                needed: n - rest,
            });
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn rest(&self) -> usize {
        self.b.len() - self.at
    }
}

fn frame(msg_type: MsgType, body: &[u8]) -> Vec<u8> {
    let size = (HEADER_LEN + body.len()) as u32;
    let header = Header {
        major: MAJOR_VERSION,
        minor: MINOR_VERSION,
        msg_type: msg_type as u32,
        size,
        error_code: 0,
    };
    let mut out = Vec::with_capacity(PREFIX_LEN + size as usize);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    out
}

/// `GET_PLATFORM_INFO_REQ`: the header alone, 20 bytes on the wire. QGS answers it
/// without touching QPL/PCCS, so it is the liveness probe.
pub(crate) fn platform_info_request() -> Vec<u8> {
    frame(MsgType::GetPlatformInfoReq, &[])
}

/// `GET_COLLATERAL_REQ` for an FMSPC (6 bytes) and a PCK CA name (`processor`/`platform`).
pub(crate) fn collateral_request(fmspc: &[u8], pck_ca: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + fmspc.len() + pck_ca.len());
    body.extend_from_slice(&(fmspc.len() as u32).to_le_bytes());
    body.extend_from_slice(&(pck_ca.len() as u32).to_le_bytes());
    body.extend_from_slice(fmspc);
    body.extend_from_slice(pck_ca.as_bytes());
    frame(MsgType::GetCollateralReq, &body)
}

/// Reads the length prefix and says how many message bytes follow (bounded).
pub fn parse_prefix(prefix: [u8; PREFIX_LEN]) -> Result<usize, ProtoError> {
    let n = u32::from_be_bytes(prefix);
    if n as u64 > MAX_MESSAGE as u64 {
        return Err(ProtoError::TooLarge(n as u64));
    }
    if (n as usize) < HEADER_LEN {
        return Err(ProtoError::TooSmall(n));
    }
    Ok(n as usize)
}

/// Checks a whole message (without the prefix) and returns its header and body.
pub fn parse_message(msg: &[u8], want: MsgType) -> Result<(Header, &[u8]), ProtoError> {
    if msg.len() < HEADER_LEN {
        return Err(ProtoError::Truncated {
            at: msg.len(),
            needed: HEADER_LEN - msg.len(),
        });
    }
    let h = Header::decode(&msg[..HEADER_LEN])?;
    if h.major != MAJOR_VERSION {
        return Err(ProtoError::Version {
            major: h.major,
            minor: h.minor,
        });
    }
    if h.size as usize != msg.len() {
        return Err(ProtoError::SizeMismatch {
            prefix: msg.len() as u32,
            header: h.size,
        });
    }
    if h.msg_type != want as u32 {
        return Err(ProtoError::Type {
            got: h.msg_type,
            want,
        });
    }
    if h.error_code != code::SUCCESS {
        return Err(ProtoError::Qgs { code: h.error_code });
    }
    Ok((h, &msg[HEADER_LEN..]))
}

/// Parses a full framed reply (prefix + message) held in memory.
pub fn parse_framed(wire: &[u8], want: MsgType) -> Result<(Header, &[u8]), ProtoError> {
    if wire.len() < PREFIX_LEN {
        return Err(ProtoError::Truncated {
            at: wire.len(),
            needed: PREFIX_LEN - wire.len(),
        });
    }
    let n = parse_prefix([wire[0], wire[1], wire[2], wire[3]])?;
    let msg = &wire[PREFIX_LEN..];
    if msg.len() < n {
        return Err(ProtoError::Truncated {
            at: wire.len(),
            needed: n - msg.len(),
        });
    }
    if msg.len() > n {
        return Err(ProtoError::Trailing {
            extra: msg.len() - n,
        });
    }
    parse_message(msg, want)
}

/// `GET_PLATFORM_INFO_RESP`: what QGS knows about the platform without any network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformInfo {
    pub tdqe_isvsvn: u16,
    pub pce_isvsvn: u16,
    /// The QE ID (platform id), hex.
    pub qe_id: String,
    /// The CPU SVN, hex.
    pub cpu_svn: String,
}

impl PlatformInfo {
    pub fn parse_body(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let tdqe_isvsvn = r.u16()?;
        let pce_isvsvn = r.u16()?;
        let id_size = r.u32()?;
        let svn_size = r.u32()?;
        if svn_size != 16 {
            return Err(ProtoError::FieldSize {
                field: "cpusvn_size",
                len: svn_size,
                want: 16,
            });
        }
        // Sizes are checked against the bytes present before anything is sliced.
        let id = r.take(id_size as usize)?;
        let svn = r.take(svn_size as usize)?;
        if r.rest() != 0 {
            return Err(ProtoError::Trailing { extra: r.rest() });
        }
        Ok(PlatformInfo {
            tdqe_isvsvn,
            pce_isvsvn,
            qe_id: hex(id),
            cpu_svn: hex(svn),
        })
    }

    /// Encodes a response body (used by the stand-in QGS and tests).
    pub fn encode_body(tdqe: u16, pce: u16, qe_id: &[u8], cpu_svn: &[u8; 16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&tdqe.to_le_bytes());
        b.extend_from_slice(&pce.to_le_bytes());
        b.extend_from_slice(&(qe_id.len() as u32).to_le_bytes());
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(qe_id);
        b.extend_from_slice(cpu_svn);
        b
    }
}

/// `GET_COLLATERAL_RESP` (v1.1 layout): seven blobs in a fixed order.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Collateral {
    pub major: u16,
    pub minor: u16,
    pub pck_crl_issuer_chain: Vec<u8>,
    pub root_ca_crl: Vec<u8>,
    pub pck_crl: Vec<u8>,
    pub tcb_info_issuer_chain: Vec<u8>,
    pub tcb_info: Vec<u8>,
    pub qe_identity_issuer_chain: Vec<u8>,
    pub qe_identity: Vec<u8>,
}

impl fmt::Debug for Collateral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collateral")
            .field("version", &format_args!("{}.{}", self.major, self.minor))
            .field("pck_crl_issuer_chain", &self.pck_crl_issuer_chain.len())
            .field("root_ca_crl", &self.root_ca_crl.len())
            .field("pck_crl", &self.pck_crl.len())
            .field("tcb_info_issuer_chain", &self.tcb_info_issuer_chain.len())
            .field("tcb_info", &self.tcb_info.len())
            .field(
                "qe_identity_issuer_chain",
                &self.qe_identity_issuer_chain.len(),
            )
            .field("qe_identity", &self.qe_identity.len())
            .finish()
    }
}

impl Collateral {
    pub fn parse_body(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let major = r.u16()?;
        let minor = r.u16()?;
        let mut sizes = [0u32; 7];
        for s in &mut sizes {
            *s = r.u32()?;
        }
        // Sum in u64 so seven near-u32::MAX sizes cannot wrap; then check against what is there.
        let total: u64 = sizes.iter().map(|&s| s as u64).sum();
        if total != r.rest() as u64 {
            if total > r.rest() as u64 {
                return Err(ProtoError::Truncated {
                    at: r.at,
                    needed: (total - r.rest() as u64).min(usize::MAX as u64) as usize,
                });
            }
            return Err(ProtoError::Trailing {
                extra: r.rest() - total as usize,
            });
        }
        let mut blobs = sizes
            .iter()
            .map(|&s| r.take(s as usize).map(<[u8]>::to_vec));
        let mut next = || blobs.next().unwrap_or(Ok(Vec::new()));
        Ok(Collateral {
            major,
            minor,
            pck_crl_issuer_chain: next()?,
            root_ca_crl: next()?,
            pck_crl: next()?,
            tcb_info_issuer_chain: next()?,
            tcb_info: next()?,
            qe_identity_issuer_chain: next()?,
            qe_identity: next()?,
        })
    }

    pub fn encode_body(&self) -> Vec<u8> {
        let parts: [&[u8]; 7] = [
            &self.pck_crl_issuer_chain,
            &self.root_ca_crl,
            &self.pck_crl,
            &self.tcb_info_issuer_chain,
            &self.tcb_info,
            &self.qe_identity_issuer_chain,
            &self.qe_identity,
        ];
        let mut b = Vec::new();
        b.extend_from_slice(&self.major.to_le_bytes());
        b.extend_from_slice(&self.minor.to_le_bytes());
        for p in parts {
            b.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        for p in parts {
            b.extend_from_slice(p);
        }
        b
    }
}

/// A framed response (for the stand-in QGS and tests).
pub fn response(msg_type: MsgType, error_code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = frame(msg_type, body);
    out[PREFIX_LEN + 12..PREFIX_LEN + 16].copy_from_slice(&error_code.to_le_bytes());
    out
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Parses hex (e.g. an FMSPC `00806F050000`); `None` when it is not even-length hex.
///
/// Hex digits only (`[0-9A-Fa-f]`, two per byte): `u8::from_str_radix` alone would also
/// take a leading `+` in each pair (issue 14.7: `+0+0+0+0+0+0` was six zero bytes).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    s.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhex_takes_hex_digits_only() {
        assert_eq!(unhex("00806F050000"), Some(vec![0, 0x80, 0x6f, 5, 0, 0]));
        assert_eq!(unhex(" 0a "), Some(vec![10]));
        assert_eq!(unhex("+0+0+0+0+0+0"), None);
        assert_eq!(unhex("00806F+50000"), None);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("\u{e9}"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn platform_info_request_is_the_documented_20_bytes() {
        assert_eq!(
            platform_info_request(),
            [
                0, 0, 0, 0x10, 1, 0, 1, 0, 4, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn collateral_request_layout() {
        let r = collateral_request(&[0, 0x80, 0x6f, 5, 0, 0], "processor");
        assert_eq!(&r[0..4], &(16u32 + 8 + 6 + 9).to_be_bytes());
        let (h, body) = parse_message(&r[4..], MsgType::GetCollateralReq).unwrap();
        assert_eq!(h.size as usize, r.len() - 4);
        assert_eq!(&body[0..4], &6u32.to_le_bytes());
        assert_eq!(&body[4..8], &9u32.to_le_bytes());
        assert_eq!(&body[14..], b"processor");
    }

    #[test]
    fn platform_info_round_trip() {
        let qe = [0xabu8; 16];
        let svn = [7u8; 16];
        let wire = response(
            MsgType::GetPlatformInfoResp,
            0,
            &PlatformInfo::encode_body(4, 13, &qe, &svn),
        );
        let (_, body) = parse_framed(&wire, MsgType::GetPlatformInfoResp).unwrap();
        let info = PlatformInfo::parse_body(body).unwrap();
        assert_eq!(info.tdqe_isvsvn, 4);
        assert_eq!(info.pce_isvsvn, 13);
        assert_eq!(info.qe_id, "ab".repeat(16));
        assert_eq!(info.cpu_svn, "07".repeat(16));
    }

    #[test]
    fn qgs_error_code_is_reported_by_name() {
        let wire = response(MsgType::GetCollateralResp, code::UNEXPECTED, &[]);
        let err = parse_framed(&wire, MsgType::GetCollateralResp).unwrap_err();
        assert_eq!(err, ProtoError::Qgs { code: 0x12001 });
        assert!(err.to_string().contains("0x12001"), "{err}");
    }

    #[test]
    fn collateral_round_trip_and_lying_sizes() {
        let c = Collateral {
            major: 3,
            minor: 1,
            tcb_info: b"{\"tcbInfo\":{}}".to_vec(),
            qe_identity: b"{}".to_vec(),
            root_ca_crl: vec![1, 2, 3],
            ..Default::default()
        };
        let body = c.encode_body();
        assert_eq!(Collateral::parse_body(&body).unwrap(), c);
        let mut lying = body.clone();
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Collateral::parse_body(&lying),
            Err(ProtoError::Truncated { .. })
        ));
    }

    #[test]
    fn prefix_bounds() {
        assert_eq!(
            parse_prefix(u32::MAX.to_be_bytes()),
            Err(ProtoError::TooLarge(u32::MAX as u64))
        );
        assert_eq!(
            parse_prefix(3u32.to_be_bytes()),
            Err(ProtoError::TooSmall(3))
        );
        assert_eq!(parse_prefix(16u32.to_be_bytes()), Ok(16));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex("00806F050000").unwrap(), [0, 0x80, 0x6f, 5, 0, 0]);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(hex(&[0, 0xff]), "00ff");
    }
}
