//! /var/lib/cchost/journal.json: no panic; a file it accepts leaves room for one more
//! entry (issue 14.4).
#![no_main]

use cchost::fuzzing::journal_parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = journal_parse(data);
});
