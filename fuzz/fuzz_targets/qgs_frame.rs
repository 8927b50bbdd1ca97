//! QGS replies as they come off the socket (4-byte length, 16-byte header, body):
//! no panic, no allocation the length prefix alone decides.
#![no_main]

use cchost::dcap::proto::{self, Collateral, MsgType, PlatformInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= proto::PREFIX_LEN {
        let mut p = [0u8; proto::PREFIX_LEN];
        p.copy_from_slice(&data[..proto::PREFIX_LEN]);
        if let Ok(n) = proto::parse_prefix(p) {
            assert!(n <= proto::MAX_MESSAGE);
        }
    }
    if let Ok((_, body)) = proto::parse_framed(data, MsgType::GetPlatformInfoResp) {
        let _ = PlatformInfo::parse_body(body);
    }
    if let Ok((_, body)) = proto::parse_framed(data, MsgType::GetCollateralResp) {
        let _ = Collateral::parse_body(body);
    }
    if let Ok((_, body)) = proto::parse_message(data, MsgType::GetCollateralResp) {
        let _ = Collateral::parse_body(body);
    }
});
