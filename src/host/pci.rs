//! PCI devices as sysfs shows them under `/sys/bus/pci/devices`.
//!
//! This is the raw view: attribute values and link names, parsed into numbers but not
//! judged. The inventory decides what a device is (GPU, NVSwitch, boot VGA).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{HostError, HostRoot};

pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";
pub const PCI_DRIVERS: &str = "/sys/bus/pci/drivers";

/// A PCI address, `domain:bus:device.function` (`0000:3b:00.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a PCI address (expected dddd:bb:dd.f): {0:?}")]
pub struct BadPciAddress(pub String);

/// The kernel names a PCI device `"%04x:%02x:%02x.%d"` (drivers/pci/probe.c,
/// `pci_setup_device`): a domain of four hex digits (more only when it needs them, with
/// no leading zero then), bus and device of exactly two, a function digit 0–7. That form
/// is accepted, and lspci's short `bb:dd.f` (domain 0); hex digits of either case, nothing
/// else (no sign, no padding, no short fields; issue 14.9).
impl FromStr for PciAddress {
    type Err = BadPciAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPciAddress(s.to_string());
        let hex = |x: &str| -> Result<u32, BadPciAddress> {
            if x.is_empty() || x.len() > 8 || !x.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(x, 16).map_err(|_| bad())
        };
        let (domain, rest) = match s.matches(':').count() {
            2 => {
                let (d, r) = s.split_once(':').ok_or_else(bad)?;
                if d.len() < 4 || (d.len() > 4 && d.starts_with('0')) {
                    return Err(bad());
                }
                (hex(d)?, r)
            }
            1 => (0, s),
            _ => return Err(bad()),
        };
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
        if bus.len() != 2 || dev.len() != 2 || func.len() != 1 {
            return Err(bad());
        }
        let addr = PciAddress {
            domain,
            bus: hex(bus)? as u8,
            device: hex(dev)? as u8,
            function: hex(func)? as u8,
        };
        if addr.device > 0x1f || addr.function > 7 {
            return Err(bad());
        }
        Ok(addr)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl PciAddress {
    /// The slot (`0000:3b:00`) that all functions of one device share.
    pub fn slot(&self) -> String {
        format!("{:04x}:{:02x}:{:02x}", self.domain, self.bus, self.device)
    }
}

impl Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One PCI function as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    pub address: PciAddress,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    /// 24-bit class code (`0x030200` for a 3D controller).
    pub class: u32,
    pub revision: Option<u8>,
    /// `None` when the kernel reports -1 (no NUMA affinity) or the file is absent.
    pub numa_node: Option<u32>,
    /// The IOMMU group number, from the `iommu_group` link; `None` when the IOMMU is off.
    pub iommu_group: Option<u32>,
    /// Name of the bound driver, from the `driver` link.
    pub driver: Option<String>,
    /// `driver_override` content; `None` when empty or `(null)`.
    pub driver_override: Option<String>,
    pub modalias: Option<String>,
    /// `boot_vga` is present only on VGA-class devices; `Some(true)` marks the console.
    pub boot_vga: Option<bool>,
    /// The canonical sysfs path, e.g. `/sys/devices/pci0000:00/0000:00:02.0/0000:3b:00.0`.
    pub sysfs_path: PathBuf,
    /// Names of `vfio-dev/vfioN` entries (iommufd cdev), if any.
    pub vfio_dev: Option<String>,
}

impl PciDevice {
    /// Class without the programming interface: `0x0302`.
    pub fn class_code(&self) -> u16 {
        (self.class >> 8) as u16
    }

    /// The sysfs directory of this device, as a host path.
    pub fn dir(&self) -> PathBuf {
        device_dir(&self.address)
    }

    /// Addresses of the upstream bridges, nearest last, parsed from the canonical path.
    pub fn upstream_bridges(&self) -> Vec<PciAddress> {
        let mut out: Vec<PciAddress> = self
            .sysfs_path
            .components()
            .filter_map(|c| c.as_os_str().to_str()?.parse().ok())
            .collect();
        out.pop(); // the device itself
        out
    }
}

pub fn device_dir(addr: &PciAddress) -> PathBuf {
    PathBuf::from(PCI_DEVICES).join(addr.to_string())
}

fn parse_hex<T: TryFrom<u64>>(host_path: &std::path::Path, raw: &str) -> Result<T, HostError> {
    let s = raw.trim();
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let v = u64::from_str_radix(digits, 16)
        .map_err(|_| HostError::malformed(host_path, format!("not a hex number: {s:?}")))?;
    T::try_from(v).map_err(|_| HostError::malformed(host_path, format!("value out of range: {s}")))
}

impl HostRoot {
    /// Addresses of all PCI functions, sorted. A host without PCI (or without sysfs)
    /// has none.
    pub fn pci_addresses(&self) -> Result<Vec<PciAddress>, HostError> {
        let mut out = Vec::new();
        for name in self.list_dir_opt(PCI_DEVICES)? {
            match name.parse() {
                Ok(addr) => out.push(addr),
                Err(_) => tracing::warn!(name, "ignoring a non-PCI-address entry in {PCI_DEVICES}"),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads one PCI function. Required attributes (vendor, device, class) must parse;
    /// optional ones that are missing are `None`, malformed ones are errors.
    pub fn pci_device(&self, addr: &PciAddress) -> Result<PciDevice, HostError> {
        let dir = device_dir(addr);
        // The directory is resolved inside the root once; its attributes are read
        // relative to it without following links (see host/pci_scan.rs).
        let fd = self.dir_fd(&dir)?;
        let attr_opt = |name: &str| -> Result<Option<String>, HostError> {
            match self.read_small_at(&fd, name, &dir.join(name)) {
                Ok(s) => Ok(Some(s.trim().to_string())),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        };
        let link_opt = |name: &str| -> Result<Option<String>, HostError> {
            // Recorded like `read_link`, or `cchost capture` leaves the link out.
            self.record(&dir.join(name), super::Access::Link);
            match nix::fcntl::readlinkat(&fd, name) {
                Ok(t) => Ok(Path::new(&t)
                    .file_name()
                    .and_then(std::ffi::OsStr::to_str)
                    .map(str::to_string)),
                Err(e) => {
                    let e = HostError::io(dir.join(name), e.into());
                    if e.is_not_found() { Ok(None) } else { Err(e) }
                }
            }
        };
        let req_hex = |name: &str| -> Result<u64, HostError> {
            let p = dir.join(name);
            let raw = attr_opt(name)?.ok_or_else(|| {
                HostError::io(&p, std::io::Error::from(std::io::ErrorKind::NotFound))
            })?;
            parse_hex(&p, &raw)
        };
        let opt_hex = |name: &str| -> Result<Option<u64>, HostError> {
            let p = dir.join(name);
            match attr_opt(name)? {
                Some(raw) => parse_hex(&p, &raw).map(Some),
                None => Ok(None),
            }
        };
        let narrow16 = |name: &str, v: u64| -> Result<u16, HostError> {
            u16::try_from(v).map_err(|_| HostError::malformed(dir.join(name), "value above 0xffff"))
        };
        let vendor = narrow16("vendor", req_hex("vendor")?)?;
        let device = narrow16("device", req_hex("device")?)?;
        let class = req_hex("class")?;
        if class > 0xff_ffff {
            return Err(HostError::malformed(
                dir.join("class"),
                "class above 0xffffff",
            ));
        }
        let subsystem_vendor = opt_hex("subsystem_vendor")?
            .map(|v| narrow16("subsystem_vendor", v))
            .transpose()?;
        let subsystem_device = opt_hex("subsystem_device")?
            .map(|v| narrow16("subsystem_device", v))
            .transpose()?;
        let revision = opt_hex("revision")?
            .map(|v| {
                u8::try_from(v)
                    .map_err(|_| HostError::malformed(dir.join("revision"), "above 0xff"))
            })
            .transpose()?;
        let numa_node = match attr_opt("numa_node")? {
            None => None,
            Some(s) => {
                let n: i64 = s.parse().map_err(|_| {
                    HostError::malformed(dir.join("numa_node"), format!("not a number: {s:?}"))
                })?;
                u32::try_from(n).ok()
            }
        };
        let iommu_group = match link_opt("iommu_group")? {
            None => None,
            Some(g) => Some(g.parse().map_err(|_| {
                HostError::malformed(
                    dir.join("iommu_group"),
                    format!("group is not a number: {g:?}"),
                )
            })?),
        };
        let driver = link_opt("driver")?;
        let driver_override =
            attr_opt("driver_override")?.filter(|s| !s.is_empty() && s != "(null)");
        let modalias = attr_opt("modalias")?;
        let boot_vga = match attr_opt("boot_vga")? {
            None => None,
            Some(s) => Some(match s.as_str() {
                "1" => true,
                "0" => false,
                _ => {
                    return Err(HostError::malformed(
                        dir.join("boot_vga"),
                        format!("expected 0 or 1, got {s:?}"),
                    ));
                }
            }),
        };
        let sysfs_path = self.host_path_of(&fd).unwrap_or_else(|| dir.clone());
        let vfio_dev = self
            .list_dir_opt(dir.join("vfio-dev"))?
            .into_iter()
            .find(|n| n.starts_with("vfio"));
        Ok(PciDevice {
            address: *addr,
            vendor,
            device,
            subsystem_vendor,
            subsystem_device,
            class: class as u32,
            revision,
            numa_node,
            iommu_group,
            driver,
            driver_override,
            modalias,
            boot_vga,
            sysfs_path,
            vfio_dev,
        })
    }

    /// Members of an IOMMU group, from `/sys/kernel/iommu_groups/<n>/devices`.
    pub fn iommu_group_devices(&self, group: u32) -> Result<Vec<PciAddress>, HostError> {
        let dir = format!("/sys/kernel/iommu_groups/{group}/devices");
        let mut out: Vec<PciAddress> = self
            .list_dir(&dir)?
            .into_iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Other functions in the same slot (e.g. the HDMI audio function of a VGA GPU).
    pub fn pci_slot_siblings(&self, addr: &PciAddress) -> Result<Vec<PciAddress>, HostError> {
        Ok(self
            .pci_addresses()?
            .into_iter()
            .filter(|a| a.slot() == addr.slot() && a != addr)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_addresses() {
        let a: PciAddress = "0000:3b:00.1".parse().unwrap();
        assert_eq!(a.bus, 0x3b);
        assert_eq!(a.function, 1);
        assert_eq!(a.to_string(), "0000:3b:00.1");
        assert_eq!(a.slot(), "0000:3b:00");
        let short: PciAddress = "3b:00.0".parse().unwrap();
        assert_eq!(short.to_string(), "0000:3b:00.0");
        let wide: PciAddress = "10000:01:00.0".parse().unwrap();
        assert_eq!(wide.domain, 0x10000);
        assert_eq!(wide.to_string(), "10000:01:00.0");
        let upper: PciAddress = "0000:3B:1F.7".parse().unwrap();
        assert_eq!(upper.to_string(), "0000:3b:1f.7");
    }

    #[test]
    fn rejects_bad_addresses() {
        for s in [
            "",
            "0000:3b:00",
            "0000:3b:00.8",
            "0000:3b:20.0",
            "zz:00.0",
            "0000:3b:00.00",
            "0000:0:0:0.0",
            "../../etc",
            // Issue 14.9: forms the kernel never prints.
            "C:4.1",
            "+1:3b:00.0",
            "0000:+f:00.0",
            "000000000:3b:00.0",
            "00000:3b:00.0",
            "000:3b:00.0",
            "0000:3b:0.0",
            "0000:3b:00.+1",
            "0000:3b:+0.0",
            "0000: 3b:00.0",
        ] {
            assert!(s.parse::<PciAddress>().is_err(), "{s}");
        }
    }

    #[test]
    fn hex_attributes_parse_with_and_without_prefix() {
        let p = std::path::Path::new("/x");
        assert_eq!(parse_hex::<u16>(p, "0x10de\n").unwrap(), 0x10de);
        assert_eq!(parse_hex::<u16>(p, "10de").unwrap(), 0x10de);
        assert!(parse_hex::<u16>(p, "0x1ffff").is_err());
        assert!(parse_hex::<u16>(p, "nvidia").is_err());
    }
}
