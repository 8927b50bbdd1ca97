//! `HostRoot`: the only door to the host.
//!
//! Every read and write of `/sys`, `/proc`, `/dev`, `/etc`, `/boot`, `/run` and `/var`
//! goes through here. The root is `/` on a plain host, `/host` in a DaemonSet, or a
//! fixture tree in tests. Paths are given as the host sees them (`/sys/bus/pci/devices`)
//! and resolved *inside* the root: absolute symlinks are re-rooted and `..` never climbs
//! above the root, so a hostile symlink cannot make cchost read or write outside it.

mod error;
mod record;
mod resolve;

pub mod exec;
pub mod kmsg;
mod lock;
pub mod mmio;
mod open;
pub mod owner;
pub mod socket;
pub mod systemd;

pub mod batch;
pub mod device_events;
pub mod pci;
pub mod pci_scan;
#[cfg(feature = "udev")]
pub mod udev;
pub mod uevent;
pub mod unix;

pub use error::HostError;
pub use lock::{HostLock, LockWait};
pub use open::Resolution;
pub use record::Access;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, fstat};
use nix::unistd::UnlinkatFlags;

/// Largest file cchost reads in one go. Real inputs are far smaller (cpuinfo of a
/// 512-thread host is ~1 MiB); anything bigger is a broken or hostile file.
pub const MAX_READ_BYTES: u64 = 8 * 1024 * 1024;

/// Where the host is, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
    /// Off unless [`HostRoot::with_recorder`] turned it on (`cchost capture`).
    recorder: record::Recorder,
    /// openat2 or user space (open.rs).
    resolution: Resolution,
}

/// What kind of thing sits at a host path (without following a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Socket,
    Fifo,
}

impl HostRoot {
    /// Opens a host root. The directory must exist.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, HostError> {
        let root = root.as_ref();
        let canonical = fs::canonicalize(root).map_err(|e| HostError::io(root, e))?;
        if !canonical.is_dir() {
            return Err(HostError::NotADirectory(canonical));
        }
        Ok(Self {
            root: canonical,
            recorder: record::Recorder::default(),
            resolution: Resolution::default(),
        })
    }

    /// The live host (`/`).
    pub fn live() -> Self {
        Self {
            root: PathBuf::from("/"),
            recorder: record::Recorder::default(),
            resolution: Resolution::default(),
        }
    }

    /// The root directory on this machine's filesystem.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this root is the machine's own `/`.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Maps a host path to the local path without resolving symlinks (for messages and
    /// for handing a path to a child process that runs on the same machine).
    pub fn lexical(&self, host_path: impl AsRef<Path>) -> PathBuf {
        resolve::lexical_join(&self.root, host_path.as_ref())
    }

    /// Resolves a host path to a local path, following symlinks inside the root.
    /// The final component may be missing (for creating files).
    pub fn resolve(&self, host_path: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        resolve::resolve_in_root(&self.root, host_path.as_ref(), true)
    }

    /// Resolves a host path but leaves a final symlink unfollowed.
    pub fn resolve_parent(&self, host_path: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        resolve::resolve_in_root(&self.root, host_path.as_ref(), false)
    }

    /// Maps a local path under the root back to the host path (`/host/sys/x` -> `/sys/x`).
    pub fn to_host_path(&self, local: &Path) -> Option<PathBuf> {
        let rel = local.strip_prefix(&self.root).ok()?;
        Some(Path::new("/").join(rel))
    }

    /// The kernel filesystems a whole host has that are missing or empty under this
    /// root (`sys`, `proc`, `dev`). A root that lacks one is not a host: every fact read
    /// from it would be an absence, and every remedy built on that absence wrong.
    pub fn missing_kernel_dirs(&self) -> Vec<&'static str> {
        ["sys", "proc", "dev"]
            .into_iter()
            .filter(|d| {
                let p = Path::new("/").join(d);
                self.kind_followed(&p) != Some(NodeKind::Dir)
                    || self.list_dir(&p).map(|v| v.is_empty()).unwrap_or(true)
            })
            .collect()
    }

    /// Does anything exist at this path (a dangling symlink counts)?
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.kind(host_path).is_some()
    }

    /// The kind of node at this path, following symlinks except the last one.
    pub fn kind(&self, host_path: impl AsRef<Path>) -> Option<NodeKind> {
        self.record(host_path.as_ref(), Access::Node);
        let st = self.stat_node(host_path.as_ref(), false).ok()?;
        Some(kind_of_mode(st.st_mode))
    }

    /// The kind of node at this path after following every symlink.
    pub fn kind_followed(&self, host_path: impl AsRef<Path>) -> Option<NodeKind> {
        self.record(host_path.as_ref(), Access::Node);
        let st = self.stat_node(host_path.as_ref(), true).ok()?;
        Some(kind_of_mode(st.st_mode))
    }

    /// Reads a whole file as bytes, at most `limit` bytes; a larger file is an error.
    pub fn read_bytes_limited(
        &self,
        host_path: impl AsRef<Path>,
        limit: u64,
    ) -> Result<Vec<u8>, HostError> {
        let host_path = host_path.as_ref();
        self.record(host_path, Access::Read);
        let file = self.open_expect(host_path, OFlag::O_RDONLY, open::Expect::File)?;
        let mut buf = Vec::new();
        // sysfs reports a size of 4096 for every attribute, so read, don't trust metadata.
        file.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| HostError::io(host_path, e))?;
        if buf.len() as u64 > limit {
            return Err(HostError::TooLarge {
                path: host_path.to_path_buf(),
                limit,
            });
        }
        Ok(buf)
    }

    /// Reads a whole file as bytes (bounded by [`MAX_READ_BYTES`]).
    pub fn read_bytes(&self, host_path: impl AsRef<Path>) -> Result<Vec<u8>, HostError> {
        self.read_bytes_limited(host_path, MAX_READ_BYTES)
    }

    /// Reads a whole UTF-8 text file.
    pub fn read_string(&self, host_path: impl AsRef<Path>) -> Result<String, HostError> {
        let host_path = host_path.as_ref();
        let bytes = self.read_bytes(host_path)?;
        String::from_utf8(bytes).map_err(|_| HostError::NotUtf8(host_path.to_path_buf()))
    }

    /// Reads a text file and trims surrounding whitespace (a sysfs attribute).
    pub fn read_attr(&self, host_path: impl AsRef<Path>) -> Result<String, HostError> {
        Ok(self.read_string(host_path)?.trim().to_string())
    }

    /// Like [`read_string`](Self::read_string), but a missing file is `Ok(None)`.
    pub fn read_string_opt(
        &self,
        host_path: impl AsRef<Path>,
    ) -> Result<Option<String>, HostError> {
        match self.read_string(host_path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Like [`read_attr`](Self::read_attr), but a missing file is `Ok(None)`.
    pub fn read_attr_opt(&self, host_path: impl AsRef<Path>) -> Result<Option<String>, HostError> {
        Ok(self
            .read_string_opt(host_path)?
            .map(|s| s.trim().to_string()))
    }

    /// The raw target of a symlink.
    pub fn read_link(&self, host_path: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        let host_path = host_path.as_ref();
        self.record(host_path, Access::Link);
        // A handle on the link itself (O_PATH | O_NOFOLLOW), then readlinkat(fd, ""):
        // the link read is the one resolved inside the root (readlinkat(2), "Since
        // Linux 2.6.39, pathname can be an empty string").
        let fd = self.node_fd(host_path, false)?;
        let st = fstat(&fd).map_err(|e| HostError::io(host_path, e.into()))?;
        if kind_of_mode(st.st_mode) != NodeKind::Symlink {
            return Err(HostError::io(
                host_path,
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        nix::fcntl::readlinkat(&fd, "")
            .map(PathBuf::from)
            .map_err(|e| HostError::io(host_path, e.into()))
    }

    /// The last component of a symlink's target: `driver -> ../../bus/pci/drivers/vfio-pci`
    /// gives `vfio-pci`. A missing link is `Ok(None)`.
    pub fn link_name(&self, host_path: impl AsRef<Path>) -> Result<Option<String>, HostError> {
        let host_path = host_path.as_ref();
        match self.read_link(host_path) {
            Ok(target) => Ok(target
                .file_name()
                .and_then(OsStr::to_str)
                .map(str::to_string)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names in a directory, sorted. A missing directory is an error.
    pub fn list_dir(&self, host_path: impl AsRef<Path>) -> Result<Vec<String>, HostError> {
        let host_path = host_path.as_ref();
        self.record(host_path, Access::List);
        let dir = self.open_expect(
            host_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            open::Expect::Dir,
        )?;
        let mut dir =
            nix::dir::Dir::from_fd(dir.into()).map_err(|e| HostError::io(host_path, e.into()))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| HostError::io(host_path, e.into()))?;
            let raw = entry.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            match std::str::from_utf8(raw) {
                Ok(name) => names.push(name.to_string()),
                Err(_) => {
                    tracing::warn!(dir = %host_path.display(), name = ?String::from_utf8_lossy(raw), "skipping non-UTF-8 name")
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Names in a directory, sorted; a missing directory is an empty list.
    pub fn list_dir_opt(&self, host_path: impl AsRef<Path>) -> Result<Vec<String>, HostError> {
        match self.list_dir(host_path) {
            Ok(v) => Ok(v),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Writes a file atomically: a temp file beside it, fsync, rename over. Parent
    /// directories are created. Never used for sysfs attributes (see [`write_attr`]).
    ///
    /// [`write_attr`]: Self::write_attr
    pub fn write_atomic(
        &self,
        host_path: impl AsRef<Path>,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), HostError> {
        let host_path = host_path.as_ref();
        let parent_host = host_path
            .parent()
            .ok_or_else(|| HostError::BadPath(host_path.to_path_buf()))?;
        let file_name = host_path
            .file_name()
            .ok_or_else(|| HostError::BadPath(host_path.to_path_buf()))?;
        self.create_dir_all(parent_host)?;
        // Everything below happens relative to one descriptor of the parent directory
        // (opened inside the root by the kernel where it can, open.rs): a symlink
        // swapped into the path meanwhile cannot move the write elsewhere.
        let dir = self.open_expect(
            parent_host,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            open::Expect::Dir,
        )?;
        // A dot-name: NFD, CDI and systemd readers all skip dot-files, so a reader never
        // sees the half-written temp file.
        let tmp = format!(
            ".{}.cchost-tmp.{}",
            file_name.to_string_lossy(),
            std::process::id()
        );
        let unlink_tmp = || nix::unistd::unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        let result = (|| -> nix::Result<()> {
            // A leftover (or planted) temp name is removed, and the new one must be
            // created afresh: O_EXCL never opens a FIFO or follows a link there.
            match unlink_tmp() {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let fd = nix::fcntl::openat(
                &dir,
                tmp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::from_bits_truncate(mode),
            )?;
            let mut f = fs::File::from(fd);
            let io = |e: std::io::Error| {
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
            };
            f.write_all(contents).map_err(io)?;
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io)?;
            f.sync_all().map_err(io)?;
            // Renaming over a symlink replaces the link itself: never a write through it.
            nix::fcntl::renameat(&dir, tmp.as_str(), &dir, file_name)?;
            let _ = dir.sync_all();
            Ok(())
        })();
        if let Err(e) = result {
            let _ = unlink_tmp();
            return Err(HostError::io(host_path, e.into()));
        }
        Ok(())
    }

    /// The permission bits of an existing file (not following a final symlink); `None`
    /// when there is none.
    pub fn mode_of(&self, host_path: impl AsRef<Path>) -> Option<u32> {
        let st = self.stat_node(host_path.as_ref(), false).ok()?;
        (kind_of_mode(st.st_mode) == NodeKind::File).then_some(st.st_mode & 0o7777)
    }

    /// Writes a kernel attribute (sysfs/procfs) in place: one `write(2)` of the whole
    /// value, no temp file (the kernel rejects creating files there).
    pub fn write_attr(&self, host_path: impl AsRef<Path>, value: &str) -> Result<(), HostError> {
        let host_path = host_path.as_ref();
        // O_TRUNC as the shell's `echo v > attr` does: kernfs and procfs ignore it, and
        // on a fixture's regular file it keeps a shorter value from leaving a tail behind.
        // O_NONBLOCK (open.rs) keeps a FIFO planted there from blocking the open.
        let mut f = self.open_expect(
            host_path,
            OFlag::O_WRONLY | OFlag::O_TRUNC,
            open::Expect::File,
        )?;
        f.write_all(value.as_bytes())
            .map_err(|e| HostError::io(host_path, e))
    }

    /// Creates a directory and its parents inside the root.
    /// Each missing directory is made with `mkdirat` in its parent, whose descriptor was
    /// itself resolved inside the root. A link on the way that leads nowhere yet has its
    /// target made (inside the root, as the link would be followed there); a name that
    /// exists but is no directory is an error.
    pub fn create_dir_all(&self, host_path: impl AsRef<Path>) -> Result<(), HostError> {
        self.create_dir_all_links(host_path.as_ref(), 0)
    }

    fn create_dir_all_links(&self, host_path: &Path, links: usize) -> Result<(), HostError> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let mut prefix = PathBuf::from("/");
        let mut parent = self.open_in_root(&prefix, dir_flags, Mode::empty())?;
        for c in host_path.components() {
            let name = match c {
                std::path::Component::Normal(n) => n,
                std::path::Component::ParentDir => OsStr::new(".."),
                _ => continue,
            };
            let at = prefix.clone();
            prefix.push(name);
            let fd = match self.open_in_root(&prefix, dir_flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if e.is_not_found() => {
                    match nix::sys::stat::mkdirat(&parent, name, Mode::from_bits_truncate(0o777)) {
                        Ok(()) => {}
                        Err(nix::errno::Errno::EEXIST) => {
                            // A dangling link: make its target (as a host path), at most
                            // as many links deep as the kernel follows (MAXSYMLINKS).
                            let target = nix::fcntl::readlinkat(&parent, name).map_err(|_| {
                                HostError::io(
                                    &prefix,
                                    std::io::Error::from(std::io::ErrorKind::NotFound),
                                )
                            })?;
                            if links >= 40 {
                                return Err(HostError::SymlinkLoop(host_path.to_path_buf()));
                            }
                            self.create_dir_all_links(&at.join(target), links + 1)?;
                        }
                        Err(e) => return Err(HostError::io(&prefix, e.into())),
                    }
                    self.open_in_root(&prefix, dir_flags, Mode::empty())?
                }
                Err(e) => return Err(e),
            };
            parent = fd;
        }
        Ok(())
    }

    /// Removes a file (or socket, or symlink: the link itself, with `unlinkat` in the
    /// directory resolved inside the root); a missing file is fine.
    pub fn remove_file(&self, host_path: impl AsRef<Path>) -> Result<(), HostError> {
        let host_path = host_path.as_ref();
        let (dir, name) = match self.parent_fd(host_path) {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        match nix::unistd::unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(HostError::io(host_path, e.into())),
        }
    }
}

impl NodeKind {
    /// "a FIFO", "a directory": for messages.
    pub fn describe(self) -> &'static str {
        match self {
            NodeKind::File => "a regular file",
            NodeKind::Dir => "a directory",
            NodeKind::Symlink => "a symbolic link",
            NodeKind::CharDevice => "a character device",
            NodeKind::BlockDevice => "a block device",
            NodeKind::Socket => "a socket",
            NodeKind::Fifo => "a FIFO",
        }
    }
}

/// Opens a file that lies outside any host root (the operator's config file) for
/// reading, never blocking: `O_NONBLOCK`, because opening a FIFO for reading otherwise
/// waits for a writer (fifo(7)), then only a regular file is accepted.
pub fn open_local_regular(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let kind = kind_of(&file.metadata()?.file_type());
    if kind != NodeKind::File {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "is {}, not a regular file; refusing to read it",
                kind.describe()
            ),
        ));
    }
    Ok(file)
}

/// The kind of node from `st_mode` (inode(7), "The file type and mode").
fn kind_of_mode(mode: libc::mode_t) -> NodeKind {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => NodeKind::Symlink,
        libc::S_IFDIR => NodeKind::Dir,
        libc::S_IFCHR => NodeKind::CharDevice,
        libc::S_IFBLK => NodeKind::BlockDevice,
        libc::S_IFSOCK => NodeKind::Socket,
        libc::S_IFIFO => NodeKind::Fifo,
        _ => NodeKind::File,
    }
}

fn kind_of(ft: &fs::FileType) -> NodeKind {
    if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else {
        NodeKind::File
    }
}

#[cfg(test)]
mod tests;
