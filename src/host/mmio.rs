//! Memory-mapped PCI BARs (`/sys/bus/pci/devices/<BDF>/resource0`) and the runtime-PM
//! wake-up that must precede them, through the host door.
//!
//! Queries map read-only (`O_RDONLY` + `PROT_READ`): a read-only mapping cannot change the
//! device even by mistake (docs/facts/gpu.md#cc-read-only-query). Only a mode *set* maps read-write.

use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use super::pci::{PciAddress, device_dir};
use super::{HostError, HostRoot};

/// How a resource file is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAccess {
    /// `O_RDONLY` + `PROT_READ`: register reads only.
    ReadOnly,
    /// `O_RDWR` + `PROT_READ|PROT_WRITE`: needed to talk to the firmware mailbox.
    ReadWrite,
}

/// A mapped BAR (or any file standing in for one).
#[derive(Debug)]
pub struct MmioMap {
    map: MmapRaw,
    access: MapAccess,
    /// The host path, for messages.
    path: PathBuf,
}

/// A register access the mapping cannot serve. Each names the resource file.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("{}: offset {offset:#x} is outside the {len:#x}-byte mapping", path.display())]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        len: usize,
    },
    #[error("{}: offset {offset:#x} is not 4-byte aligned", path.display())]
    Unaligned { path: PathBuf, offset: u64 },
    #[error("{}: mapped read-only; refusing to write {offset:#x}", path.display())]
    ReadOnly { path: PathBuf, offset: u64 },
}

impl MmioMap {
    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    pub fn access(&self) -> MapAccess {
        self.access
    }

    /// The host path of the mapped file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, offset: u64) -> Result<usize, MmioError> {
        if !offset.is_multiple_of(4) {
            return Err(MmioError::Unaligned {
                path: self.path.clone(),
                offset,
            });
        }
        let len = self.map.len();
        match usize::try_from(offset) {
            Ok(o) if o.checked_add(4).is_some_and(|end| end <= len) => Ok(o),
            _ => Err(MmioError::OutOfRange {
                path: self.path.clone(),
                offset,
                len,
            }),
        }
    }

    /// One 32-bit little-endian register read (a single volatile load, as MMIO needs).
    pub fn read32(&self, offset: u64) -> Result<u32, MmioError> {
        let o = self.check(offset)?;
        // SAFETY: `o + 4 <= len` was checked, the mapping is page-aligned so `o` (a multiple
        // of 4) is 4-aligned, and the mapping lives as long as `self`. A volatile load is
        // required: every read of a device register is a side effect the compiler must keep.
        let raw = unsafe { std::ptr::read_volatile(self.map.as_ptr().add(o).cast::<u32>()) };
        Ok(u32::from_le(raw))
    }

    /// One 32-bit little-endian register write. Refused on a read-only mapping.
    pub fn write32(&self, offset: u64, value: u32) -> Result<(), MmioError> {
        let o = self.check(offset)?;
        if self.access != MapAccess::ReadWrite {
            return Err(MmioError::ReadOnly {
                path: self.path.clone(),
                offset,
            });
        }
        // SAFETY: as in `read32`; the mapping was created PROT_WRITE (ReadWrite access).
        unsafe {
            std::ptr::write_volatile(self.map.as_mut_ptr().add(o).cast::<u32>(), value.to_le())
        };
        Ok(())
    }
}

/// Puts a device's runtime-PM `power/control` back the way it was when dropped.
#[derive(Debug)]
pub struct PowerGuard {
    host: HostRoot,
    control: PathBuf,
    restore: Option<String>,
}

impl PowerGuard {
    /// True when the device was runtime-suspended and this guard woke it.
    pub fn woke(&self) -> bool {
        self.restore.is_some()
    }

    /// Restores `power/control` now and reports a failure (drop only logs it).
    pub fn restore(mut self) -> Result<(), HostError> {
        match self.restore.take() {
            Some(old) => self.host.write_attr(&self.control, &old),
            None => Ok(()),
        }
    }
}

impl Drop for PowerGuard {
    fn drop(&mut self) {
        if let Some(old) = self.restore.take()
            && let Err(e) = self.host.write_attr(&self.control, &old)
        {
            tracing::warn!(error = %e, "could not restore runtime power control");
        }
    }
}

/// EPERM from mmap of a `resourceN` file is kernel lockdown (pci_mmap_resource checks
/// LOCKDOWN_PCI_ACCESS; the kernel logs "direct PCI access is restricted"), seen on the
/// real H100 guest. Say so instead of a bare "Operation not permitted".
fn explain_mmap_error(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(libc::EPERM) {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "mapping refused (EPERM): kernel lockdown forbids user-space PCI BAR access; \
             see `cchost check` (gpu.bar_access)",
        )
    } else {
        e
    }
}

impl HostRoot {
    /// Maps a resource file (a BAR) given as a host path, resolved inside the root.
    pub fn map_resource(
        &self,
        host_path: impl AsRef<Path>,
        access: MapAccess,
    ) -> Result<MmioMap, HostError> {
        let host_path = host_path.as_ref();
        // Opened inside the root like every host file (open.rs); sysfs `resourceN` is a
        // regular file (a binary attribute), so anything else is refused.
        let flags = match access {
            MapAccess::ReadOnly => nix::fcntl::OFlag::O_RDONLY,
            MapAccess::ReadWrite => nix::fcntl::OFlag::O_RDWR,
        };
        let file = self.open_expect(host_path, flags, super::open::Expect::File)?;
        // sysfs gives resourceN the BAR's length as its size.
        let len = file
            .metadata()
            .map_err(|e| HostError::io(host_path, e))?
            .len();
        if len < 4 {
            return Err(HostError::malformed(
                host_path,
                format!("resource is {len} bytes; nothing to map"),
            ));
        }
        let len = usize::try_from(len).map_err(|_| {
            HostError::malformed(host_path, "resource larger than the address space")
        })?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        let map = match access {
            MapAccess::ReadOnly => opts.map_raw_read_only(&file),
            MapAccess::ReadWrite => opts.map_raw(&file),
        }
        .map_err(|e| HostError::io(host_path, explain_mmap_error(e)))?;
        Ok(MmioMap {
            map,
            access,
            path: host_path.to_path_buf(),
        })
    }

    /// Maps BAR0 of a PCI function (`resource0`).
    pub fn map_resource0(
        &self,
        addr: &PciAddress,
        access: MapAccess,
    ) -> Result<MmioMap, HostError> {
        self.map_resource(device_dir(addr).join("resource0"), access)
    }

    /// Wakes a runtime-suspended device (`power/control` = `on`) so its BARs answer; the
    /// guard restores the old value. A VFIO-bound idle GPU is typically suspended and then
    /// reads all-ones (docs/facts/gpu.md#cc-read-only-query). Devices without runtime PM files are left alone.
    pub fn wake_pci_device(&self, addr: &PciAddress) -> Result<PowerGuard, HostError> {
        let dir = device_dir(addr);
        let control = dir.join("power/control");
        let mut guard = PowerGuard {
            host: self.clone(),
            control: control.clone(),
            restore: None,
        };
        let status = self.read_attr_opt(dir.join("power/runtime_status"))?;
        if status.as_deref().is_none_or(|s| s == "active") {
            return Ok(guard);
        }
        let Some(old) = self.read_string_opt(&control)? else {
            return Ok(guard);
        };
        if old.trim() != "on" {
            self.write_attr(&control, "on")?;
            // Put back exactly what was read ("auto\n"): the kernel's control_store
            // compares with sysfs_streq, which ignores the newline
            // (drivers/base/power/sysfs.c), and a copy of sysfs stays byte for byte.
            guard.restore = Some(old);
        }
        Ok(guard)
    }

    /// The device's PCI configuration space as sysfs `config` shows it (4 KiB with the
    /// extended capabilities for root; 64 bytes otherwise). Read-only.
    pub fn pci_config(&self, addr: &PciAddress) -> Result<Vec<u8>, HostError> {
        self.read_bytes_limited(device_dir(addr).join("config"), 4096)
    }

    /// Whether the PCI COMMAND register has Memory Space Enable set (bit 1 at config
    /// offset 4). `None` when config space is shorter than that. cchost checks this and
    /// refuses rather than writing config space (docs/facts/gpu.md#cc-read-only-query).
    pub fn pci_memory_decode(&self, addr: &PciAddress) -> Result<Option<bool>, HostError> {
        let bytes = self.read_bytes_limited(device_dir(addr).join("config"), 4096)?;
        Ok(bytes
            .get(4..6)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) & 0x2 != 0))
    }
}

#[cfg(test)]
mod tests {
    //! These tests map a regular temp file standing in for `resource0`: they prove the
    //! mapping, bounds and offset arithmetic, not anything about real hardware.
    use super::*;

    fn root_with_resource(bytes: &[u8]) -> (tempfile::TempDir, HostRoot, PciAddress) {
        let dir = tempfile::tempdir().unwrap();
        let addr: PciAddress = "0000:3b:00.0".parse().unwrap();
        let dev = dir.path().join("sys/bus/pci/devices/0000:3b:00.0");
        std::fs::create_dir_all(dev.join("power")).unwrap();
        std::fs::write(dev.join("resource0"), bytes).unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        (dir, host, addr)
    }

    #[test]
    fn read_only_map_reads_little_endian_at_offsets() {
        let mut bytes = vec![0u8; 8192];
        bytes[0x10..0x14].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        bytes[0x1ffc..0x2000].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        let (_d, host, addr) = root_with_resource(&bytes);
        let map = host.map_resource0(&addr, MapAccess::ReadOnly).unwrap();
        assert_eq!(map.len(), 8192);
        assert_eq!(map.read32(0x10).unwrap(), 0xdead_beef);
        assert_eq!(map.read32(0x1ffc).unwrap(), 0x1234_5678);
        assert!(matches!(
            map.read32(0x2000),
            Err(MmioError::OutOfRange { offset: 0x2000, .. })
        ));
        assert!(matches!(map.read32(0x11), Err(MmioError::Unaligned { .. })));
        let err = map.write32(0x10, 1).unwrap_err();
        assert!(matches!(err, MmioError::ReadOnly { .. }));
        assert!(err.to_string().contains("resource0"), "{err}");
    }

    #[test]
    fn read_write_map_writes_through_to_the_file() {
        let (dir, host, addr) = root_with_resource(&[0u8; 4096]);
        let map = host.map_resource0(&addr, MapAccess::ReadWrite).unwrap();
        map.write32(0x200, 0xa1b2_c3d4).unwrap();
        assert_eq!(map.read32(0x200).unwrap(), 0xa1b2_c3d4);
        drop(map);
        let raw = std::fs::read(
            dir.path()
                .join("sys/bus/pci/devices/0000:3b:00.0/resource0"),
        )
        .unwrap();
        assert_eq!(&raw[0x200..0x204], &0xa1b2_c3d4u32.to_le_bytes());
    }

    #[test]
    fn missing_or_empty_resource_is_a_named_error() {
        let (_d, host, _) = root_with_resource(&[]);
        let err = host
            .map_resource0(&"0000:3b:00.0".parse().unwrap(), MapAccess::ReadOnly)
            .unwrap_err();
        assert!(err.to_string().contains("resource0"), "{err}");
        let err = host
            .map_resource0(&"0000:99:00.0".parse().unwrap(), MapAccess::ReadOnly)
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn wake_sets_control_on_and_restores_it() {
        let (dir, host, addr) = root_with_resource(&[0u8; 4096]);
        let power = dir.path().join("sys/bus/pci/devices/0000:3b:00.0/power");
        std::fs::write(power.join("runtime_status"), "suspended\n").unwrap();
        std::fs::write(power.join("control"), "auto\n").unwrap();
        let guard = host.wake_pci_device(&addr).unwrap();
        assert!(guard.woke());
        let control = || std::fs::read_to_string(power.join("control")).unwrap();
        assert_eq!(control(), "on");
        guard.restore().unwrap();
        assert_eq!(control().trim_end(), "auto");

        std::fs::write(power.join("runtime_status"), "active\n").unwrap();
        std::fs::write(power.join("control"), "auto\n").unwrap();
        let guard = host.wake_pci_device(&addr).unwrap();
        assert!(!guard.woke());
        drop(guard);
        assert_eq!(
            std::fs::read_to_string(power.join("control")).unwrap(),
            "auto\n"
        );
    }

    #[test]
    fn memory_decode_bit_is_read_from_config() {
        let (dir, host, addr) = root_with_resource(&[0u8; 4096]);
        let cfg = dir.path().join("sys/bus/pci/devices/0000:3b:00.0/config");
        std::fs::write(&cfg, [0xde, 0x10, 0x30, 0x23, 0x06, 0x04, 0, 0]).unwrap();
        assert_eq!(host.pci_memory_decode(&addr).unwrap(), Some(true));
        std::fs::write(&cfg, [0xde, 0x10, 0x30, 0x23, 0x04, 0x04, 0, 0]).unwrap();
        assert_eq!(host.pci_memory_decode(&addr).unwrap(), Some(false));
        std::fs::write(&cfg, [0xde, 0x10]).unwrap();
        assert_eq!(host.pci_memory_decode(&addr).unwrap(), None);
    }
}
