//! CDI specs (JSON): no panic; a spec that reads, rendered as cchost writes it, reads
//! back the same; the name validators never panic.
#![no_main]

use cchost::cdi::{self, Spec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cdi::validate_vendor(s);
        let _ = cdi::validate_class(s);
        let _ = cdi::validate_kind(s);
        let _ = cdi::validate_device_name(s);
    }
    if let Ok(spec) = serde_json::from_slice::<Spec>(data) {
        if let Ok(bytes) = cdi::render(&spec) {
            let back: Spec = serde_json::from_slice(&bytes).expect("cchost reads what it writes");
            assert_eq!(back, spec);
        }
    }
});
