//! PCI addresses: only the kernel's `dddd:bb:dd.f` (wider domains without leading zero)
//! and lspci's `bb:dd.f` parse (issue 14.9), and what parses prints as the kernel does.
#![no_main]

use cchost::host::pci::PciAddress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = s.parse::<PciAddress>() {
        let printed = a.to_string();
        let canonical = s.to_ascii_lowercase();
        assert!(
            printed == canonical || printed == format!("0000:{canonical}"),
            "{s:?} parsed as {printed}"
        );
        assert_eq!(printed.parse::<PciAddress>().unwrap(), a);
    }
});
