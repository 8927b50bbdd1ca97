//! /etc/cchost/config.toml: no panic; a config that loads, written back as TOML, loads
//! to the same config.
#![no_main]

use std::path::Path;

use cchost::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Path::new("/etc/cchost/config.toml");
    if let Ok(c) = Config::from_toml(text, origin) {
        let back = toml::to_string(&c).expect("a loaded config serialises");
        let again = Config::from_toml(&back, origin).expect("and loads again");
        assert_eq!(c, again, "{back}");
    }
});
