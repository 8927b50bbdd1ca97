//! Fast screening of PCI functions: vendor, device and class only, with the device's
//! directory resolved once instead of once per attribute. Matching 1,000 functions
//! against the GPU rules must stay in the tens of milliseconds.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::pci::{PCI_DEVICES, PciAddress, device_dir};
use super::{HostError, HostRoot};

/// What matching needs to know about a PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIdent {
    pub vendor: u16,
    pub device: u16,
    /// 24-bit class code.
    pub class: u32,
}

/// One function's address and identity (or the error reading it).
pub type ScannedFunction = (PciAddress, Result<PciIdent, HostError>);

/// sysfs attributes are at most a page.
const ATTR_LIMIT: u64 = 4096;

impl HostRoot {
    /// Every PCI function with its identity (or the error reading it), sorted by
    /// address. The bus view's links all point into /sys/devices; their parent
    /// directories are resolved once each (many functions share a bridge) instead of
    /// walking the whole path for every attribute.
    pub fn pci_scan(&self) -> Result<Vec<ScannedFunction>, HostError> {
        let addrs = self.pci_addresses()?;
        let bus_host = Path::new(PCI_DEVICES);
        if addrs.is_empty() {
            return Ok(Vec::new());
        }
        let bus = self.dir_fd(bus_host)?;
        // `..` in the links may be applied lexically only when the bus directory's own
        // path holds no symlinks (always so in real sysfs).
        let lexical_ok = bus_host.ancestors().all(|p| {
            p == Path::new("/")
                || self
                    .stat_node(p, false)
                    .is_ok_and(|st| super::kind_of_mode(st.st_mode) == super::NodeKind::Dir)
        });
        let mut parents: HashMap<PathBuf, OwnedFd> = HashMap::new();
        let mut out = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let fast = if lexical_ok {
                self.fast_device_dir(&bus, bus_host, &addr, &mut parents)
            } else {
                None
            };
            let ident = match fast {
                Some(fd) => self.ident_at(&device_dir(&addr), &fd),
                None => self.pci_ident(&addr),
            };
            out.push((addr, ident));
        }
        Ok(out)
    }

    /// A handle on the device directory via the bus link (every directory resolved
    /// inside the root, the device's `openat` relative to its parent's handle), or
    /// `None` to take the slow path.
    fn fast_device_dir(
        &self,
        bus: &OwnedFd,
        bus_host: &Path,
        addr: &PciAddress,
        parents: &mut HashMap<PathBuf, OwnedFd>,
    ) -> Option<OwnedFd> {
        let name = addr.to_string();
        let target = PathBuf::from(nix::fcntl::readlinkat(bus, name.as_str()).ok()?);
        // Host path of the target, `..` clamped at the root like the resolver does.
        let mut host = if target.is_absolute() {
            PathBuf::from("/")
        } else {
            bus_host.to_path_buf()
        };
        for c in target.components() {
            match c {
                Component::Normal(n) => host.push(n),
                Component::ParentDir => {
                    host.pop();
                }
                _ => {}
            }
        }
        let parent_host = host.parent()?.to_path_buf();
        let leaf = host.file_name()?.to_owned();
        let parent = match parents.entry(parent_host) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let fd = self.dir_fd(e.key()).ok()?;
                e.insert(fd)
            }
        };
        // The device directory itself must be a real directory, not another link
        // (O_NOFOLLOW on a link with O_DIRECTORY fails).
        nix::fcntl::openat(
            &*parent,
            leaf.as_os_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
    }

    /// Reads vendor, device and class of one function.
    pub fn pci_ident(&self, addr: &PciAddress) -> Result<PciIdent, HostError> {
        let dir = device_dir(addr);
        let fd = self.dir_fd(&dir)?;
        self.ident_at(&dir, &fd)
    }

    /// An `O_PATH` handle on a directory resolved inside the root (open.rs), for reading
    /// its attributes with `*at` calls.
    pub(super) fn dir_fd(&self, host_path: &Path) -> Result<OwnedFd, HostError> {
        self.open_in_root(host_path, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
    }

    fn ident_at(&self, dir: &Path, fd: &OwnedFd) -> Result<PciIdent, HostError> {
        let read = |name: &str, max: u64| -> Result<u64, HostError> {
            let host_path = dir.join(name);
            let raw = self.read_small_at(fd, name, &host_path)?;
            let s = raw.trim();
            let digits = s
                .strip_prefix("0x")
                .or_else(|| s.strip_prefix("0X"))
                .unwrap_or(s);
            match u64::from_str_radix(digits, 16) {
                Ok(v) if v <= max => Ok(v),
                _ => Err(HostError::malformed(
                    host_path,
                    format!("expected a hex number up to {max:#x}, got {s:?}"),
                )),
            }
        };
        Ok(PciIdent {
            vendor: read("vendor", 0xffff)? as u16,
            device: read("device", 0xffff)? as u16,
            class: read("class", 0xff_ffff)? as u32,
        })
    }

    /// Reads a small file `name` in a directory already resolved inside the root
    /// (`openat` relative to its handle), without following a final symlink: a
    /// symlinked attribute, which real sysfs never has, goes through the full in-root
    /// resolution of `host_path` instead.
    pub(super) fn read_small_at(
        &self,
        dir: &OwnedFd,
        name: &str,
        host_path: &Path,
    ) -> Result<String, HostError> {
        self.record(host_path, super::Access::Read);
        // O_NONBLOCK and the type check: a FIFO planted as an attribute must not block
        // the scan (open.rs).
        let file = match nix::fcntl::openat(
            dir,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => std::fs::File::from(fd),
            Err(Errno::ELOOP) => return self.read_attr(host_path),
            Err(e) => return Err(HostError::io(host_path, e.into())),
        };
        let meta = file.metadata().map_err(|e| HostError::io(host_path, e))?;
        if !meta.file_type().is_file() {
            return Err(HostError::UnexpectedKind {
                path: host_path.to_path_buf(),
                found: super::kind_of(&meta.file_type()),
            });
        }
        let mut buf = Vec::new();
        file.take(ATTR_LIMIT + 1)
            .read_to_end(&mut buf)
            .map_err(|e| HostError::io(host_path, e))?;
        if buf.len() as u64 > ATTR_LIMIT {
            return Err(HostError::TooLarge {
                path: host_path.to_path_buf(),
                limit: ATTR_LIMIT,
            });
        }
        String::from_utf8(buf).map_err(|_| HostError::NotUtf8(host_path.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, HostRoot, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("sys/devices/pci0000:00/0000:3b:00.0");
        fs::create_dir_all(&dev).unwrap();
        fs::create_dir_all(dir.path().join("sys/bus/pci/devices")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:3b:00.0",
            dir.path().join("sys/bus/pci/devices/0000:3b:00.0"),
        )
        .unwrap();
        fs::write(dev.join("vendor"), "0x10de\n").unwrap();
        fs::write(dev.join("device"), "0x2330\n").unwrap();
        fs::write(dev.join("class"), "0x030200\n").unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        (dir, host, dev)
    }

    #[test]
    fn reads_ident() {
        let (_d, host, _) = tree();
        let id = host.pci_ident(&"0000:3b:00.0".parse().unwrap()).unwrap();
        assert_eq!(
            id,
            PciIdent {
                vendor: 0x10de,
                device: 0x2330,
                class: 0x030200
            }
        );
    }

    #[test]
    fn scan_matches_slow_path() {
        let (d, host, _) = tree();
        let dev2 = d
            .path()
            .join("sys/devices/pci0000:00/0000:00:01.0/0000:3c:00.0");
        fs::create_dir_all(&dev2).unwrap();
        fs::write(dev2.join("vendor"), "0x8086\n").unwrap();
        fs::write(dev2.join("device"), "0x1234\n").unwrap();
        fs::write(dev2.join("class"), "0x020000\n").unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:00:01.0/0000:3c:00.0",
            d.path().join("sys/bus/pci/devices/0000:3c:00.0"),
        )
        .unwrap();
        // A link that loops, and one that climbs out of the root: errors, not escapes.
        symlink(
            "0000:3d:00.0",
            d.path().join("sys/bus/pci/devices/0000:3d:00.0"),
        )
        .unwrap();
        symlink(
            "../../../../../../../../../etc",
            d.path().join("sys/bus/pci/devices/0000:3e:00.0"),
        )
        .unwrap();
        let scan = host.pci_scan().unwrap();
        assert_eq!(scan.len(), 4);
        for (addr, ident) in &scan {
            let slow = host.pci_ident(addr);
            match (ident, &slow) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!("{addr}: {ident:?} vs {slow:?}"),
            }
        }
        assert_eq!(scan[1].1.as_ref().unwrap().vendor, 0x8086);
        assert!(scan[2].1.is_err() && scan[3].1.is_err());
    }

    #[test]
    fn symlinked_attribute_cannot_escape_the_root() {
        let (_d, host, dev) = tree();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("v"), "0x8086\n").unwrap();
        fs::remove_file(dev.join("vendor")).unwrap();
        symlink(outside.path().join("v"), dev.join("vendor")).unwrap();
        let err = host
            .pci_ident(&"0000:3b:00.0".parse().unwrap())
            .unwrap_err();
        assert!(err.is_not_found(), "re-rooted, so not found: {err}");
    }

    #[test]
    fn bad_attributes_are_typed_errors_naming_the_file() {
        let (_d, host, dev) = tree();
        let addr = "0000:3b:00.0".parse().unwrap();
        fs::write(dev.join("class"), "0x1030200\n").unwrap();
        let e = host.pci_ident(&addr).unwrap_err();
        assert!(e.to_string().contains("0000:3b:00.0/class"), "{e}");
        fs::write(dev.join("class"), vec![b'0'; 5000]).unwrap();
        assert!(matches!(
            host.pci_ident(&addr).unwrap_err(),
            HostError::TooLarge { .. }
        ));
        fs::write(dev.join("class"), [0xff, 0xfe]).unwrap();
        assert!(matches!(
            host.pci_ident(&addr).unwrap_err(),
            HostError::NotUtf8(_)
        ));
        fs::write(dev.join("class"), "").unwrap();
        assert!(host.pci_ident(&addr).is_err(), "truncated");
        fs::remove_file(dev.join("class")).unwrap();
        assert!(host.pci_ident(&addr).unwrap_err().is_not_found());
    }
}
