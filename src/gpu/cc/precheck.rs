//! May a device's CC mode be changed now? Only when no driver but vfio-pci holds it and
//! nothing uses it: a bound nvidia driver or a running VM makes the FSP queue time out or
//! refuse, and an interrupted switch leaves the invalid mode (docs/facts/gpu.md#in-use).
//!
//! Users are found by [`crate::gpu::usage::users_of`] (open fds and mappings in `/proc`).

use crate::host::pci::PciDevice;
use crate::host::{HostError, HostRoot};

/// Drivers a device may be bound to while its mode changes.
pub(crate) const SWITCHABLE_DRIVERS: [&str; 2] = ["vfio-pci", "nvgrace_gpu_vfio_pci"];

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{device} is bound to {driver}: CC mode can only change on a driverless or vfio-pci \
         device (unbind it first)"
    )]
    Driver { device: String, driver: String },
    #[error("{device} is in use: {}; stop those first (power off the VM)", users.join("; "))]
    InUse { device: String, users: Vec<String> },
    #[error(
        "{device}: cannot tell whether a process uses it ({source}); refusing rather than \
         guessing"
    )]
    Scan {
        device: String,
        #[source]
        source: HostError,
    },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Refuses a device that has a non-VFIO driver or any user.
pub(crate) fn check_switchable(host: &HostRoot, pci: &PciDevice) -> Result<(), Refusal> {
    if let Some(d) = &pci.driver
        && !SWITCHABLE_DRIVERS.contains(&d.as_str())
    {
        return Err(Refusal::Driver {
            device: pci.address.to_string(),
            driver: d.clone(),
        });
    }
    check_unused(host, pci)
}

/// Refuses a device somebody uses (the read-only query's precondition,
/// docs/facts/gpu.md#cc-read-only-query).
pub fn check_unused(host: &HostRoot, pci: &PciDevice) -> Result<(), Refusal> {
    let users: Vec<String> = crate::gpu::usage::users_of(host, pci)
        .map_err(|source| Refusal::Scan {
            device: pci.address.to_string(),
            source,
        })?
        .iter()
        .map(ToString::to_string)
        .collect();
    if users.is_empty() {
        Ok(())
    } else {
        Err(Refusal::InUse {
            device: pci.address.to_string(),
            users,
        })
    }
}
