//! /dev/kmsg records (`prio,seq,ts,flags;message`): no panic, a level 0-7, one line.
#![no_main]

use cchost::host::kmsg::parse_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Some(r) = parse_record(line) {
            assert!(r.level <= 7);
            assert!(!r.message.contains('\n'));
        }
    }
});
