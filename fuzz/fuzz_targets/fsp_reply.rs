//! GPU firmware replies: FSP mailbox messages (dwords, NVDM header) and the PCIe config
//! space walk that finds NVIDIA's DVSEC (the firewall state): no panic.
#![no_main]

use cchost::gpu::cc::{firewall, fsp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let words: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let want = words.first().map_or(0, |w| w >> 24);
    if let Some(rest) = words.get(1..) {
        if let Ok(payload) = fsp::parse_reply(rest, want) {
            assert!(payload.len() <= rest.len());
        }
    }
    if let Some(at) = firewall::find_nvidia_dvsec(data) {
        assert!(at < data.len());
        let _ = firewall::firewall_up(data, at);
    }
});
