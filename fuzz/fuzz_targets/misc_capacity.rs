//! /sys/fs/cgroup/misc.capacity (`name value` lines): no panic.
#![no_main]

use std::path::Path;

use cchost::inventory::misc::parse_misc_capacity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_misc_capacity(Path::new("/sys/fs/cgroup/misc.capacity"), text);
    }
});
