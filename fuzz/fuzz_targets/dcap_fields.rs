//! DCAP text fields: hex (FMSPC, QE ID) decodes hex digits only and round-trips
//! (issue 14.7); RFC 3339 dates never overflow and only real calendar dates parse, one
//! per second (issue 14.3).
#![no_main]

use cchost::dcap::collateral::parse_rfc3339_utc;
use cchost::dcap::proto::{hex, unhex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(bytes) = unhex(s) {
        assert!(s.trim().bytes().all(|b| b.is_ascii_hexdigit()), "{s:?}");
        assert_eq!(
            hex(&bytes).to_ascii_lowercase(),
            s.trim().to_ascii_lowercase()
        );
    }
    if let Some(t) = parse_rfc3339_utc(s) {
        // Years 0000-9999 only.
        assert!(
            (-62_167_219_200..=253_402_300_800).contains(&t),
            "{s:?} -> {t}"
        );
    }
});
