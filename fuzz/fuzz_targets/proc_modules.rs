//! /proc/modules and modules.builtin: no panic; every name is one non-empty word.
#![no_main]

use std::path::Path;

use cchost::inventory::modules::{parse_modules_builtin, parse_proc_modules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mods) = parse_proc_modules(Path::new("/proc/modules"), text) {
        for m in mods {
            assert!(!m.is_empty() && !m.contains(char::is_whitespace), "{m:?}");
        }
    }
    let _ = parse_modules_builtin(text);
});
