//! May a device's CC mode be changed now? Only when no driver but vfio-pci holds it and
//! nothing uses it: a bound nvidia driver or a running VM makes the FSP queue time out or
//! refuse, and an interrupted switch leaves the invalid mode (facts §2.2, §5 P2).
//!
//! [`users_of`] is the swap point for the shared `gpu::usage::users_of` once it lands; it
//! scans `/proc/*/fd` through the host door for the device's VFIO nodes and sysfs files.

use std::path::{Path, PathBuf};

use crate::host::pci::PciDevice;
use crate::host::{HostError, HostRoot};

/// Drivers a device may be bound to while its mode changes.
pub const SWITCHABLE_DRIVERS: [&str; 2] = ["vfio-pci", "nvgrace_gpu_vfio_pci"];

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{device} is bound to {driver}: CC mode can only change on a driverless or vfio-pci \
         device (unbind it first)"
    )]
    Driver { device: String, driver: String },
    #[error("{device} is in use: {}; stop those first (power off the VM)", users.join("; "))]
    InUse { device: String, users: Vec<String> },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Host paths whose open file descriptors mean "this device is in use".
fn device_nodes(pci: &PciDevice) -> (Vec<PathBuf>, PathBuf) {
    let mut nodes = Vec::new();
    if let Some(g) = pci.iommu_group {
        nodes.push(PathBuf::from(format!("/dev/vfio/{g}")));
    }
    if let Some(v) = &pci.vfio_dev {
        nodes.push(PathBuf::from(format!("/dev/vfio/devices/{v}")));
    }
    (nodes, pci.sysfs_path.clone())
}

/// Processes holding the device's VFIO group/cdev node or one of its sysfs files
/// (`resource0`, `config`, ...), as "pid N (comm) holds PATH".
pub fn users_of(host: &HostRoot, pci: &PciDevice) -> Result<Vec<String>, HostError> {
    let (nodes, sysfs) = device_nodes(pci);
    let canonical_dir = pci.dir();
    let hit = |t: &Path| {
        nodes.iter().any(|n| t == n) || t.starts_with(&sysfs) || t.starts_with(&canonical_dir)
    };
    let mut users = Vec::new();
    let own = std::process::id().to_string();
    for pid in host.list_dir_opt("/proc")? {
        if !pid.bytes().all(|b| b.is_ascii_digit()) || (host.is_live() && pid == own) {
            continue;
        }
        let fd_dir = PathBuf::from("/proc").join(&pid).join("fd");
        // Processes come and go, and some fd directories are not readable: skip those.
        let Ok(fds) = host.list_dir(&fd_dir) else {
            continue;
        };
        for fd in fds {
            let Ok(target) = host.read_link(fd_dir.join(&fd)) else {
                continue;
            };
            if hit(&target) {
                let comm = host
                    .read_attr_opt(PathBuf::from("/proc").join(&pid).join("comm"))
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "?".into());
                users.push(format!("pid {pid} ({comm}) holds {}", target.display()));
            }
        }
    }
    Ok(users)
}

/// Refuses a device that has a non-VFIO driver or any user.
pub fn check_switchable(host: &HostRoot, pci: &PciDevice) -> Result<(), Refusal> {
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

/// Refuses a device somebody uses (the read-only query's precondition, facts §2.3).
pub fn check_unused(host: &HostRoot, pci: &PciDevice) -> Result<(), Refusal> {
    let users = users_of(host, pci)?;
    if users.is_empty() {
        Ok(())
    } else {
        Err(Refusal::InUse {
            device: pci.address.to_string(),
            users,
        })
    }
}
