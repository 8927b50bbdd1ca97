//! /proc/cpuinfo: no panic, and a parsed result is self-consistent.
#![no_main]

use std::path::Path;

use cchost::inventory::cpuinfo::CpuInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = CpuInfo::parse(Path::new("/proc/cpuinfo"), text) {
        for f in &c.flags {
            assert!(c.has_flag(f));
        }
    }
});
