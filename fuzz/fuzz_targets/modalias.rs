//! modules.alias `vfio_pci:` patterns against glibc's fnmatch(3) with flags 0, which is
//! how libkmod matches wildcard aliases. Input: `pattern \0 modalias`.
#![no_main]

use std::ffi::CString;

use cchost::fuzzing::glob_match;
use cchost::inventory::modalias::{VfioAliases, supported_pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // The file parser and the chooser on arbitrary text: no panic.
        let aliases = VfioAliases::parse(text);
        let _ = aliases.choose(text.lines().last().unwrap_or(""));
    }
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (pattern, subject) = (&data[..split], &data[split + 1..]);
    if subject.contains(&0) || supported_pattern(pattern).is_err() {
        return;
    }
    let (cp, cs) = (
        CString::new(pattern).unwrap(),
        CString::new(subject).unwrap(),
    );
    // SAFETY: both are NUL-terminated strings that outlive the call.
    let libc_says = unsafe { libc::fnmatch(cp.as_ptr(), cs.as_ptr(), 0) } == 0;
    assert_eq!(
        glob_match(pattern, subject),
        libc_says,
        "{:?} vs {:?}",
        String::from_utf8_lossy(pattern),
        String::from_utf8_lossy(subject)
    );
});
