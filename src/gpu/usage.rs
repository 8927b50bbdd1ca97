//! Who is using a PCI device: processes holding its device nodes or sysfs files open.
//!
//! A GPU must not be moved between drivers (or reset for a CC-mode switch) while anything
//! holds it: that is how CC switches hang and leave the GPU in an invalid state
//! (docs/facts/gpu.md#in-use). We look at `/proc/<pid>/fd/*` links (and
//! `/proc/<pid>/maps` for the sysfs BAR files, which stay mapped after their fd is closed)
//! for:
//! - the GPU's `/dev/nvidiaN` node (the minor from `/proc/driver/nvidia/gpus/<BDF>/information`;
//!   every numbered `/dev/nvidia*` node when that file cannot tell),
//! - the device's vfio group node `/dev/vfio/<group>` and its iommufd cdev
//!   `/dev/vfio/devices/vfioN`,
//! - the device's sysfs `config`, `rom` and `resource*` files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::pci::{PciAddress, PciDevice};
use crate::host::{HostError, HostRoot};

/// `/proc/<pid>/maps` can exceed the usual read limit: at the default
/// `vm.max_map_count` (65530) of ~150-byte lines it reaches ~10 MiB.
const MAPS_LIMIT: u64 = 64 * 1024 * 1024;

/// One process holding one of a device's files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// The process name from `/proc/<pid>/comm` (`?` when it exited meanwhile).
    pub comm: String,
    /// The file held, as the kernel names it (`/dev/vfio/12`).
    pub path: PathBuf,
    /// How it is held: an open file descriptor or a memory mapping.
    pub how: HoldKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldKind {
    /// Open file descriptor number.
    Fd(u32),
    /// A mapping listed in `/proc/<pid>/maps`.
    Map,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.how {
            HoldKind::Fd(n) => write!(
                f,
                "pid {} ({}) holds {} open (fd {n})",
                self.pid,
                self.comm,
                self.path.display()
            ),
            HoldKind::Map => write!(
                f,
                "pid {} ({}) has {} mapped",
                self.pid,
                self.comm,
                self.path.display()
            ),
        }
    }
}

/// The files that mean "this device is in use".
#[derive(Debug, Clone, Default)]
struct Watched {
    /// Exact paths (device nodes).
    exact: BTreeSet<PathBuf>,
    /// Any numbered `/dev/nvidiaN` node (used when the minor is unknown).
    any_nvidia_minor: bool,
    /// sysfs directories whose config/rom/resource* files count.
    sysfs_dirs: Vec<PathBuf>,
}

impl Watched {
    fn for_device(host: &HostRoot, dev: &PciDevice) -> Result<Self, HostError> {
        let mut w = Watched::default();
        w.add(host, dev)?;
        Ok(w)
    }

    fn add(&mut self, host: &HostRoot, dev: &PciDevice) -> Result<(), HostError> {
        if let Some(g) = dev.iommu_group {
            self.exact.insert(PathBuf::from(format!("/dev/vfio/{g}")));
        }
        if let Some(v) = &dev.vfio_dev {
            self.exact
                .insert(PathBuf::from(format!("/dev/vfio/devices/{v}")));
        }
        if dev.driver.as_deref() == Some("nvidia") {
            match nvidia_minor(host, &dev.address)? {
                Some(m) => {
                    self.exact.insert(PathBuf::from(format!("/dev/nvidia{m}")));
                }
                None => self.any_nvidia_minor = true,
            }
        }
        self.sysfs_dirs.push(dev.sysfs_path.clone());
        self.sysfs_dirs.push(dev.dir());
        Ok(())
    }

    fn matches(&self, target: &Path) -> bool {
        if self.exact.contains(target) {
            return true;
        }
        if self.any_nvidia_minor
            && let Some(rest) = target.to_str().and_then(|s| s.strip_prefix("/dev/nvidia"))
            && !rest.is_empty()
            && rest.bytes().all(|b| b.is_ascii_digit())
        {
            return true;
        }
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return false;
        };
        let name = name.to_string_lossy();
        let bar_file = name == "config" || name == "rom" || name.starts_with("resource");
        bar_file && self.sysfs_dirs.iter().any(|d| d == parent)
    }
}

/// The nvidia driver's minor number for a GPU (`Device Minor: 3` in its procfs file).
fn nvidia_minor(host: &HostRoot, addr: &PciAddress) -> Result<Option<u32>, HostError> {
    let path = format!("/proc/driver/nvidia/gpus/{addr}/information");
    let Some(text) = host.read_string_opt(&path)? else {
        return Ok(None);
    };
    Ok(text.lines().find_map(|l| {
        let v = l.strip_prefix("Device Minor:")?;
        v.trim().parse().ok()
    }))
}

/// A link target as the kernel prints it, without the ` (deleted)` suffix.
fn clean_target(raw: &Path) -> PathBuf {
    match raw.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(s) => PathBuf::from(s),
        None => raw.to_path_buf(),
    }
}

/// Processes whose files are gone by the time we look (exited) are skipped; anything else
/// we cannot read is an error, because "cannot tell" must not pass for "unused".
fn skip_vanished<T>(r: Result<T, HostError>) -> Result<Option<T>, HostError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() || is_esrch(&e) => Ok(None),
        Err(e) => Err(explain_denied(e)),
    }
}

/// Root without CAP_SYS_PTRACE (a container without it, or without the host's PID
/// namespace) gets EACCES on other processes' `fd` links. Seen on a real H100 guest,
/// where `/proc/1/fd/0` was denied to root. Say what is missing instead of a bare errno.
fn explain_denied(e: HostError) -> HostError {
    match e {
        HostError::Io { path, source } if source.raw_os_error() == Some(libc::EACCES) => {
            HostError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "permission denied: cchost cannot see which processes use the device; it \
                     needs root with CAP_SYS_PTRACE (in a pod: privileged and hostPID: true). \
                     \"Cannot tell\" is not taken for \"unused\"",
                ),
            }
        }
        e => e,
    }
}

fn is_esrch(e: &HostError) -> bool {
    matches!(e, HostError::Io { source, .. } if source.raw_os_error() == Some(libc::ESRCH))
}

/// Every process holding one of `dev`'s files, sorted by pid.
pub(crate) fn users_of(host: &HostRoot, dev: &PciDevice) -> Result<Vec<Holder>, HostError> {
    let watched = Watched::for_device(host, dev)?;
    scan(host, &watched)
}

/// Like [`users_of`] for several devices at once (one pass over `/proc`); each holder is
/// paired with the device it holds.
pub(crate) fn users_of_all(
    host: &HostRoot,
    devs: &[PciDevice],
) -> Result<Vec<(PciAddress, Holder)>, HostError> {
    let per_dev: Vec<(PciAddress, Watched)> = devs
        .iter()
        .map(|d| Ok((d.address, Watched::for_device(host, d)?)))
        .collect::<Result<_, HostError>>()?;
    let mut all = Watched::default();
    for (_, w) in &per_dev {
        all.exact.extend(w.exact.iter().cloned());
        all.any_nvidia_minor |= w.any_nvidia_minor;
        all.sysfs_dirs.extend(w.sysfs_dirs.iter().cloned());
    }
    let mut out = Vec::new();
    for h in scan(host, &all)? {
        for (addr, w) in &per_dev {
            if w.matches(&h.path) {
                out.push((*addr, h.clone()));
            }
        }
    }
    Ok(out)
}

fn scan(host: &HostRoot, watched: &Watched) -> Result<Vec<Holder>, HostError> {
    let mut out = Vec::new();
    let me = std::process::id();
    for name in host.list_dir("/proc")? {
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        // Our own fds (e.g. a sysfs file we are reading right now) are not a user.
        if host.is_live() && pid == me {
            continue;
        }
        let mut found = Vec::new();
        let fd_dir = format!("/proc/{pid}/fd");
        let Some(fds) = skip_vanished(host.list_dir(&fd_dir))? else {
            continue;
        };
        for fd in fds {
            let Ok(n) = fd.parse::<u32>() else { continue };
            let Some(target) = skip_vanished(host.read_link(format!("{fd_dir}/{fd}")))? else {
                continue;
            };
            let target = clean_target(&target);
            if watched.matches(&target) {
                found.push((target, HoldKind::Fd(n)));
            }
        }
        if !watched.sysfs_dirs.is_empty()
            && let Some(raw) =
                skip_vanished(host.read_bytes_limited(format!("/proc/{pid}/maps"), MAPS_LIMIT))?
        {
            // Mapped file names need not be UTF-8; ours are.
            let maps = String::from_utf8_lossy(&raw);
            let mut seen = BTreeSet::new();
            for line in maps.lines() {
                // The path is the sixth field and may contain spaces: take what follows
                // the fifth field (the inode).
                let Some(path) = line
                    .splitn(6, char::is_whitespace)
                    .nth(5)
                    .map(str::trim)
                    .filter(|p| p.starts_with('/'))
                else {
                    continue;
                };
                let target = clean_target(Path::new(path));
                if watched.matches(&target) && seen.insert(target.clone()) {
                    found.push((target, HoldKind::Map));
                }
            }
        }
        if found.is_empty() {
            continue;
        }
        let comm = skip_vanished(host.read_attr(format!("/proc/{pid}/comm")))?
            .unwrap_or_else(|| "?".to_string());
        for (path, how) in found {
            out.push(Holder {
                pid,
                comm: comm.clone(),
                path,
                how,
            });
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn device(addr: &str, group: Option<u32>, driver: Option<&str>) -> PciDevice {
        let address: PciAddress = addr.parse().unwrap();
        PciDevice {
            address,
            vendor: 0x10de,
            device: 0x2330,
            subsystem_vendor: None,
            subsystem_device: None,
            class: 0x030200,
            revision: None,
            numa_node: None,
            iommu_group: group,
            driver: driver.map(str::to_string),
            driver_override: None,
            modalias: None,
            boot_vga: None,
            sysfs_path: PathBuf::from(format!("/sys/devices/pci0000:00/0000:00:01.0/{addr}")),
            vfio_dev: None,
        }
    }

    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("proc")).unwrap();
            Tree { dir }
        }
        fn host(&self) -> HostRoot {
            HostRoot::new(self.dir.path()).unwrap()
        }
        /// A process with the given fds (fd number -> link target, as the kernel shows it).
        fn process(&self, pid: u32, comm: &str, fds: &[(u32, &str)], maps: &str) {
            let p = self.dir.path().join(format!("proc/{pid}"));
            fs::create_dir_all(p.join("fd")).unwrap();
            fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
            fs::write(p.join("maps"), maps).unwrap();
            for (n, target) in fds {
                symlink(target, p.join(format!("fd/{n}"))).unwrap();
            }
        }
    }

    #[test]
    fn finds_the_vfio_group_node_and_cdev() {
        let t = Tree::new();
        t.process(
            100,
            "qemu-system-x86",
            &[
                (0, "/dev/null"),
                (5, "/dev/vfio/vfio"),
                (7, "/dev/vfio/12"),
                (9, "anon_inode:[vfio-device]"),
            ],
            "",
        );
        t.process(101, "other", &[(3, "/dev/vfio/13")], "");
        t.process(102, "iommufd-user", &[(4, "/dev/vfio/devices/vfio0")], "");
        let mut dev = device("0000:3b:00.0", Some(12), Some("vfio-pci"));
        dev.vfio_dev = Some("vfio0".into());
        let users = users_of(&t.host(), &dev).unwrap();
        assert_eq!(users.len(), 2, "{users:?}");
        assert_eq!(users[0].pid, 100);
        assert_eq!(users[0].comm, "qemu-system-x86");
        assert_eq!(users[0].path, Path::new("/dev/vfio/12"));
        assert_eq!(users[0].how, HoldKind::Fd(7));
        assert_eq!(users[1].pid, 102);
        assert_eq!(users[1].path, Path::new("/dev/vfio/devices/vfio0"));
        assert!(users[0].to_string().contains("/dev/vfio/12"));
    }

    #[test]
    fn unused_device_has_no_holders() {
        let t = Tree::new();
        t.process(1, "init", &[(0, "/dev/null"), (1, "/dev/vfio/120")], "");
        let dev = device("0000:3b:00.0", Some(12), None);
        assert!(users_of(&t.host(), &dev).unwrap().is_empty());
    }

    #[test]
    fn nvidia_node_of_this_gpu_only_when_the_minor_is_known() {
        let t = Tree::new();
        t.process(
            200,
            "python3",
            &[(10, "/dev/nvidiactl"), (11, "/dev/nvidia3")],
            "",
        );
        t.process(201, "python3", &[(10, "/dev/nvidia1")], "");
        let info = t.dir.path().join("proc/driver/nvidia/gpus/0000:3b:00.0");
        fs::create_dir_all(&info).unwrap();
        fs::write(
            info.join("information"),
            "Model: \t\t NVIDIA H100\nIRQ:   \t\t 42\nDevice Minor: \t 1\n",
        )
        .unwrap();
        let dev = device("0000:3b:00.0", None, Some("nvidia"));
        let users = users_of(&t.host(), &dev).unwrap();
        assert_eq!(users.len(), 1, "{users:?}");
        assert_eq!(users[0].pid, 201);

        // Without the procfs file, any numbered node counts (cannot tell which GPU).
        fs::remove_file(info.join("information")).unwrap();
        let users = users_of(&t.host(), &dev).unwrap();
        let pids: Vec<u32> = users.iter().map(|h| h.pid).collect();
        assert_eq!(pids, vec![200, 201]);

        // A GPU not on the nvidia driver is not held by /dev/nvidia* nodes.
        let dev = device("0000:3b:00.0", None, None);
        assert!(users_of(&t.host(), &dev).unwrap().is_empty());
    }

    #[test]
    fn sysfs_bar_files_open_or_mapped_count() {
        let t = Tree::new();
        let sys = "/sys/devices/pci0000:00/0000:00:01.0/0000:3b:00.0";
        t.process(300, "gpu-tool", &[(3, &format!("{sys}/resource0"))], "");
        t.process(
            301,
            "mapper",
            &[],
            &format!(
                "7f0000000000-7f0001000000 rw-s 00000000 00:15 1234                       {sys}/resource0\n\
                 7f0001000000-7f0002000000 rw-s 00000000 00:15 1234                       {sys}/resource0\n\
                 7f0003000000-7f0003001000 r--p 00000000 08:01 99                         /usr/lib/libc.so.6\n"
            ),
        );
        // Reading the vendor attribute is not using the device.
        t.process(302, "lspci", &[(3, &format!("{sys}/vendor"))], "");
        t.process(303, "setpci", &[(3, &format!("{sys}/config"))], "");
        // A child device's files under a bridge's directory are not the bridge's.
        t.process(
            304,
            "x",
            &[(3, &format!("{sys}/0000:3c:00.0/resource0"))],
            "",
        );
        let dev = device("0000:3b:00.0", None, None);
        let users = users_of(&t.host(), &dev).unwrap();
        let got: Vec<(u32, HoldKind)> = users.iter().map(|h| (h.pid, h.how)).collect();
        assert_eq!(
            got,
            vec![
                (300, HoldKind::Fd(3)),
                (301, HoldKind::Map),
                (303, HoldKind::Fd(3))
            ]
        );
    }

    #[test]
    fn deleted_suffix_is_ignored_and_vanished_processes_are_skipped() {
        let t = Tree::new();
        t.process(400, "a", &[(3, "/dev/vfio/12 (deleted)")], "");
        // A pid directory without fd/ (the process exited while we looked).
        fs::create_dir_all(t.dir.path().join("proc/401")).unwrap();
        // Non-pid entries are ignored.
        fs::create_dir_all(t.dir.path().join("proc/sys")).unwrap();
        let dev = device("0000:3b:00.0", Some(12), Some("vfio-pci"));
        let users = users_of(&t.host(), &dev).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].path, Path::new("/dev/vfio/12"));
    }

    #[test]
    fn unreadable_fd_dir_is_an_error_not_unused() {
        // Root reads everything regardless of mode bits; this check needs a non-root user.
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let t = Tree::new();
        t.process(500, "secret", &[(3, "/dev/vfio/12")], "");
        let fd = t.dir.path().join("proc/500/fd");
        fs::set_permissions(&fd, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let dev = device("0000:3b:00.0", Some(12), None);
        let err = users_of(&t.host(), &dev).unwrap_err();
        assert!(err.to_string().contains("/proc/500/fd"), "{err}");
        fs::set_permissions(&fd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }

    #[test]
    fn denied_fd_links_name_the_missing_capability() {
        let denied = HostError::io(
            "/proc/1/fd/0",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        let msg = explain_denied(denied).to_string();
        assert!(
            msg.starts_with("/proc/1/fd/0: permission denied") && msg.contains("CAP_SYS_PTRACE"),
            "{msg}"
        );
        let other = HostError::io("/proc/1/fd/0", std::io::Error::from_raw_os_error(libc::EIO));
        assert!(!explain_denied(other).to_string().contains("CAP_SYS_PTRACE"));
    }

    #[test]
    fn non_utf8_mapped_names_do_not_break_the_scan() {
        let t = Tree::new();
        t.process(700, "odd", &[], "");
        let sys = "/sys/devices/pci0000:00/0000:00:01.0/0000:3b:00.0";
        let mut maps = b"7f00-7f01 r--p 00000000 08:01 99   /tmp/\xff\xfe\n".to_vec();
        maps.extend(format!("7f02-7f03 rw-s 00000000 00:15 12   {sys}/resource1\n").bytes());
        fs::write(t.dir.path().join("proc/700/maps"), maps).unwrap();
        let dev = device("0000:3b:00.0", None, None);
        let users = users_of(&t.host(), &dev).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].how, HoldKind::Map);
    }

    #[test]
    fn batch_scan_pairs_holders_with_devices() {
        let t = Tree::new();
        t.process(600, "q", &[(3, "/dev/vfio/12"), (4, "/dev/vfio/14")], "");
        let a = device("0000:3b:00.0", Some(12), Some("vfio-pci"));
        let b = device("0000:3c:00.0", Some(13), Some("vfio-pci"));
        let c = device("0000:3d:00.0", Some(14), Some("vfio-pci"));
        let got = users_of_all(&t.host(), &[a, b, c]).unwrap();
        let addrs: Vec<String> = got.iter().map(|(a, _)| a.to_string()).collect();
        assert_eq!(addrs, vec!["0000:3b:00.0", "0000:3d:00.0"]);
    }

    #[test]
    fn live_scan_runs_on_this_machine() {
        // A live assertion that holds anywhere: no process holds a made-up device's files.
        let host = HostRoot::live();
        let dev = device("0000:ff:1f.7", Some(99999), None);
        if let Ok(users) = users_of(&host, &dev) {
            assert!(users.is_empty());
        }
    }
}
