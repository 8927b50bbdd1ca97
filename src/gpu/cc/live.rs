//! Real devices: BAR0 through an mmap of `resource0`, reset through sysfs, all via
//! [`HostRoot`].

use crate::config::MatchConfig;
use crate::host::mmio::{MapAccess, PowerGuard};
use crate::host::pci::{PciAddress, PciDevice, device_dir};
use crate::host::{HostError, HostRoot};

use super::bar0::MmioBar0;
use super::device::{CcDevice, Reset, ResetError, Timing};
use super::firewall::ConfigSpace;
use super::regs::Family;

/// `echo 1 > /sys/bus/pci/devices/<BDF>/reset`: the kernel's FLR/SBR per `reset_method`
/// (docs/facts/gpu.md#cc-registers: activation requires a reset; no host reboot in the normal case).
#[derive(Debug, Clone)]
pub(crate) struct SysfsReset {
    pub host: HostRoot,
    pub addr: PciAddress,
}

impl Reset for SysfsReset {
    fn reset(&self) -> Result<(), ResetError> {
        self.host
            .write_attr(device_dir(&self.addr).join("reset"), "1")
            .map_err(|e| ResetError(e.to_string()))
    }
}

/// Config space through sysfs `config` (read-only).
#[derive(Debug, Clone)]
pub(crate) struct SysfsConfig {
    pub host: HostRoot,
    pub addr: PciAddress,
}

impl ConfigSpace for SysfsConfig {
    fn read(&self) -> Result<Vec<u8>, String> {
        self.host.pci_config(&self.addr).map_err(|e| e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{addr}: PCI memory decode is disabled (COMMAND bit 1 clear); cchost does not write config space — {}", decode_remedy(addr, driver.as_deref()))]
    MemoryDecodeOff {
        addr: PciAddress,
        driver: Option<String>,
    },
}

/// What to do about memory decode being off. Binding vfio-pci turns it on, but a device
/// already on a vfio driver is not helped by that advice: vfio-pci leaves decode off
/// while no user has the device open (drivers/vfio/pci/vfio_pci_core.c disables the
/// device on the last close).
fn decode_remedy(addr: &PciAddress, driver: Option<&str>) -> String {
    match driver {
        Some(d) if d.contains("vfio") => format!(
            "the device is on {d}, which leaves decode off while no VM uses it; turn it on with `setpci -s {addr} COMMAND=0x02:0x02` and try again"
        ),
        Some(d) => {
            format!("the device is on {d}; bind vfio-pci (which enables it) or check the device")
        }
        None => "bind vfio-pci (which enables it) or check the device".to_string(),
    }
}

/// The CC family of a matched GPU or NVSwitch; `None` for anything else.
pub(crate) fn cc_family(cfg: &MatchConfig, pci: &PciDevice) -> Option<Family> {
    let matched = cfg.is_gpu(pci.vendor, pci.device, pci.class)
        || cfg.is_nvswitch(pci.vendor, pci.device, pci.class);
    if !matched {
        return None;
    }
    cfg.chip_for(pci.vendor, pci.device)
        .and_then(Family::from_chip)
}

/// Every CC- or PPCIe-capable device on the host, in address order.
pub fn candidates(
    host: &HostRoot,
    cfg: &MatchConfig,
) -> Result<Vec<(PciDevice, Family)>, HostError> {
    let mut out = Vec::new();
    for addr in host.pci_addresses()? {
        let pci = host.pci_device(&addr)?;
        if let Some(f) = cc_family(cfg, &pci) {
            out.push((pci, f));
        }
    }
    Ok(out)
}

/// An opened device; keeps the device awake until dropped.
#[derive(Debug)]
pub struct LiveDevice {
    pub pci: PciDevice,
    pub device: CcDevice,
    /// `None` where there is no runtime PM to hold (the simulator).
    pub power: Option<PowerGuard>,
}

/// Opens a device's register window for a switch. [`MmioOpener`] maps `resource0`;
/// tests plug in the simulator here, so the journaled switch, undo and recovery run the
/// same code above [`super::Bar0`] for both.
pub trait Opener: Sync {
    fn open(
        &self,
        host: &HostRoot,
        pci: &PciDevice,
        family: Family,
        access: MapAccess,
    ) -> Result<LiveDevice, OpenError>;
}

/// The real thing: [`open`] with the given timing.
#[derive(Debug, Clone, Default)]
pub struct MmioOpener {
    pub timing: Timing,
}

impl Opener for MmioOpener {
    fn open(
        &self,
        host: &HostRoot,
        pci: &PciDevice,
        family: Family,
        access: MapAccess,
    ) -> Result<LiveDevice, OpenError> {
        open(host, pci, family, access, self.timing.clone())
    }
}

/// The checks and the opening a switch needs: driverless or on vfio-pci, unused
/// ([`super::precheck`]), then a read-write mapping.
pub fn open_for_switch(
    host: &HostRoot,
    pci: &PciDevice,
    family: Family,
    opener: &dyn Opener,
) -> Result<LiveDevice, String> {
    super::precheck::check_switchable(host, pci).map_err(|e| e.to_string())?;
    opener
        .open(host, pci, family, MapAccess::ReadWrite)
        .map_err(|e| e.to_string())
}

/// True when the device is runtime-suspended (`power/runtime_status` says anything but
/// `active`): reading its BARs then needs a wake-up, which is a write of
/// `power/control` (Documentation/ABI/testing/sysfs-devices-power). A device without
/// runtime PM files is not suspended.
pub fn runtime_suspended(host: &HostRoot, addr: &PciAddress) -> Result<bool, HostError> {
    let status = host.read_attr_opt(device_dir(addr).join("power/runtime_status"))?;
    Ok(status.as_deref().is_some_and(|s| s != "active"))
}

/// Wakes the device, checks memory decode, maps `resource0` (read-only for queries).
pub fn open(
    host: &HostRoot,
    pci: &PciDevice,
    family: Family,
    access: MapAccess,
    timing: Timing,
) -> Result<LiveDevice, OpenError> {
    let addr = pci.address;
    let power = host.wake_pci_device(&addr)?;
    if host.pci_memory_decode(&addr)? == Some(false) {
        return Err(OpenError::MemoryDecodeOff {
            addr,
            driver: pci.driver.clone(),
        });
    }
    let map = host.map_resource0(&addr, access)?;
    let device = CcDevice::new(
        addr.to_string(),
        family,
        Box::new(MmioBar0(map)),
        Box::new(SysfsReset {
            host: host.clone(),
            addr,
        }),
        timing,
    )
    .with_config(Box::new(SysfsConfig {
        host: host.clone(),
        addr,
    }));
    Ok(LiveDevice {
        pci: pci.clone(),
        device,
        power: Some(power),
    })
}
