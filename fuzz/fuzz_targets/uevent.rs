//! Kernel uevent datagrams (`ACTION@DEVPATH\0KEY=VALUE\0…`): no panic.
#![no_main]

use cchost::host::uevent::{Uevent, is_passthrough_relevant};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(ev) = Uevent::parse(data) {
        let _ = is_passthrough_relevant(&ev);
    }
});
