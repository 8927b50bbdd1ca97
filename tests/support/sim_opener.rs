//! Test support shared by the CC tests: an `Opener` that hands out the FSP simulator by
//! PCI address instead of an mmap of `resource0`, and fast client timing.

use std::collections::HashMap;
use std::time::Duration;

use cchost::gpu::cc::Family;
use cchost::gpu::cc::device::Timing;
use cchost::gpu::cc::live::{LiveDevice, OpenError, Opener};
use cchost::gpu::cc::sim::SimGpu;
use cchost::host::HostRoot;
use cchost::host::mmio::MapAccess;
use cchost::host::pci::PciDevice;

/// The eight H100s of an HGX board, by PCI address (the CC tests' board).
pub const HGX_GPUS: [&str; 8] = [
    "0000:18:00.0",
    "0000:2a:00.0",
    "0000:3a:00.0",
    "0000:5d:00.0",
    "0000:9a:00.0",
    "0000:ab:00.0",
    "0000:ba:00.0",
    "0000:db:00.0",
];

/// Client timing for simulated devices: short timeouts, 1 ms polling.
pub fn fast() -> Timing {
    Timing {
        rpc: Duration::from_millis(200),
        boot: Some(Duration::from_millis(1000)),
        poll: Duration::from_millis(1),
        firewall: Duration::from_millis(500),
        firewall_fallback: Duration::from_millis(50),
    }
}

/// Hands out simulated devices by address (a switch always maps read-write).
pub struct SimOpener(pub HashMap<String, SimGpu>);

impl Opener for SimOpener {
    fn open(
        &self,
        _host: &HostRoot,
        pci: &PciDevice,
        family: Family,
        access: MapAccess,
    ) -> Result<LiveDevice, OpenError> {
        assert_eq!(access, MapAccess::ReadWrite);
        let sim = &self.0[&pci.address.to_string()];
        assert_eq!(sim.family(), family);
        Ok(LiveDevice {
            pci: pci.clone(),
            device: sim.device(pci.address.to_string(), fast()),
            power: None,
        })
    }
}
