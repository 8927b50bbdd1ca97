//! The one resolver of the host door: every path under the host root is opened here,
//! resolved inside the root by the kernel where it can, never blocking, and only the
//! kinds of file cchost expects are read or written.
//!
//! Where the kernel has `openat2(2)` (Linux 5.6), a path is opened relative to a
//! descriptor of the root with `RESOLVE_IN_ROOT`: the kernel itself treats the root as
//! `/` for every component, so a symlink swapped in between cchost's checks and its open
//! cannot lead outside the root. Magic links (`/proc/<pid>/root`) are refused too
//! (`RESOLVE_NO_MAGICLINKS`). See docs/facts/kernel-paths.md#openat2-resolve-in-root.
//!
//! Every operation goes through [`HostRoot::open_in_root`]: reads and writes open the
//! file itself; `list_dir` reads the entries of a directory descriptor; `kind`,
//! `exists`, `mode_of` and `socket_id` `fstat` an `O_PATH` handle (of a final symlink
//! itself where the operation means the link); `read_link` is `readlinkat(handle, "")`
//! on the link's `O_PATH | O_NOFOLLOW` handle; `remove_file` is `unlinkat` and
//! `create_dir_all` `mkdirat` in a parent directory's handle; a PCI device's attributes
//! are `openat`/`readlinkat` relative to the device directory's handle; `chown_group`
//! is `fchownat(handle, "", AT_EMPTY_PATH)`; `set_mode` goes through the handle's
//! `/proc/self/fd` entry (docs/facts/kernel-paths.md#o-path-handles). Only a unix
//! socket's `bind`/`connect` and an inotify watch take a path string (the kernel has no
//! descriptor form for them): those paths are resolved in user space inside the root.
//!
//! Fallback: where openat2 is missing (ENOSYS, before Linux 5.6) or filtered (EPERM or
//! ENOSYS from a seccomp profile; E2BIG), cchost resolves the path with its user-space
//! resolver (resolve.rs: absolute targets restart at the root, `..` stops there) and
//! opens the result. The answers are the same; what is lost is the guarantee against a
//! symlink swapped in during the call. [`HostRoot::kernel_resolves`] says which is in
//! use; the first failure with ENOSYS/EPERM/E2BIG decides for the process.
//!
//! Every open for reading or writing carries `O_NONBLOCK`: opening a FIFO for reading
//! otherwise waits for a writer forever (fifo(7)). The descriptor's type is checked with
//! `fstat` right after the open, so a FIFO, socket or device where a regular file
//! belongs is a clear error.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, fstat};

use super::{HostError, HostRoot, NodeKind, kind_of, resolve};

/// How a host root resolves paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolution {
    /// The kernel's `openat2(RESOLVE_IN_ROOT)` where it works, else user space.
    #[default]
    Kernel,
    /// Always cchost's own user-space resolution (tests of the fallback).
    UserSpace,
}

/// 0 = not tried yet, 1 = openat2 works, 2 = it does not (ENOSYS / seccomp).
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// What the caller expects to find at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// A regular file (every sysfs/procfs attribute and config file is one).
    File,
    /// A directory (the parent of an atomic write).
    Dir,
}

impl HostRoot {
    /// The same host, resolving every path in user space (never with openat2).
    pub fn with_resolution(&self, resolution: Resolution) -> HostRoot {
        let mut h = self.clone();
        h.resolution = resolution;
        h
    }

    /// True when opens on this root go through `openat2(RESOLVE_IN_ROOT)`.
    pub fn kernel_resolves(&self) -> bool {
        self.resolution == Resolution::Kernel && OPENAT2.load(Ordering::Relaxed) != 2
    }

    /// Opens a host path (following symlinks inside the root) with `flags` (read or
    /// write access, `O_TRUNC`); `O_NONBLOCK | O_CLOEXEC | O_NOCTTY` are always added.
    /// The result is checked to be of the expected kind.
    pub(super) fn open_expect(
        &self,
        host_path: &Path,
        flags: OFlag,
        expect: Expect,
    ) -> Result<File, HostError> {
        let flags = flags | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let file = File::from(self.open_in_root(host_path, flags, Mode::empty())?);
        let meta = file.metadata().map_err(|e| HostError::io(host_path, e))?;
        let kind = kind_of(&meta.file_type());
        let ok = match expect {
            Expect::File => kind == NodeKind::File,
            Expect::Dir => kind == NodeKind::Dir,
        };
        if !ok {
            return Err(HostError::UnexpectedKind {
                path: host_path.to_path_buf(),
                found: kind,
            });
        }
        Ok(file)
    }

    /// The one resolver of the host door: opens `host_path` inside the root with
    /// `flags` (`O_CLOEXEC` always added; `O_NOFOLLOW` leaves a final symlink
    /// unfollowed, with `O_PATH` giving a handle on the link itself) and `mode` for
    /// `O_CREAT`. openat2(RESOLVE_IN_ROOT) where the kernel has it, else user space.
    pub(super) fn open_in_root(
        &self,
        host_path: &Path,
        flags: OFlag,
        mode: Mode,
    ) -> Result<OwnedFd, HostError> {
        let flags = flags | OFlag::O_CLOEXEC;
        match self.open_kernel(host_path, flags, mode) {
            Some(r) => r,
            None => self.open_user_space(host_path, flags, mode),
        }
    }

    /// An `O_PATH` handle on the node at `host_path` (the link itself when `follow` is
    /// false): for `fstat`, and as the directory of `*at` calls. Opening with `O_PATH`
    /// reads nothing and never blocks, whatever the node is (open(2), O_PATH).
    pub(super) fn node_fd(&self, host_path: &Path, follow: bool) -> Result<OwnedFd, HostError> {
        let mut flags = OFlag::O_PATH;
        if !follow {
            flags |= OFlag::O_NOFOLLOW;
        }
        self.open_in_root(host_path, flags, Mode::empty())
    }

    /// The status of the node at `host_path` (of a final symlink itself unless
    /// `follow`).
    pub(super) fn stat_node(&self, host_path: &Path, follow: bool) -> Result<FileStat, HostError> {
        let fd = self.node_fd(host_path, follow)?;
        fstat(&fd).map_err(|e| HostError::io(host_path, e.into()))
    }

    /// The directory that holds `host_path` (resolved inside the root, every link
    /// followed) and the final name in it, for `unlinkat`, `mkdirat` and the like: the
    /// final component itself is never followed. A path without a final name (`/`,
    /// `/a/..`) is refused.
    pub(super) fn parent_fd(&self, host_path: &Path) -> Result<(OwnedFd, OsString), HostError> {
        let name = match host_path.components().next_back() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => return Err(HostError::BadPath(host_path.to_path_buf())),
        };
        let parent = host_path.parent().unwrap_or(Path::new("/"));
        let fd = self.open_in_root(parent, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
        Ok((fd, name))
    }

    /// The host path of the node a descriptor (opened inside the root) names, as the
    /// kernel reports it in `/proc/self/fd` (proc(5)); `None` when that cannot be read or
    /// lies outside the root.
    pub(super) fn host_path_of(&self, fd: &OwnedFd) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        let local = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        self.to_host_path(&local)
    }

    /// `None` when openat2 cannot be used here (then the caller falls back).
    fn open_kernel(
        &self,
        host_path: &Path,
        flags: OFlag,
        mode: Mode,
    ) -> Option<Result<OwnedFd, HostError>> {
        if self.resolution != Resolution::Kernel || OPENAT2.load(Ordering::Relaxed) == 2 {
            return None;
        }
        let root = match nix::fcntl::open(
            &self.root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => return Some(Err(HostError::io(&self.root, e.into()))),
        };
        let rel = relative(host_path);
        let how = OpenHow::new()
            .flags(flags)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // EAGAIN: a rename elsewhere in the filesystem raced the lookup; the kernel asks
        // the caller to try again (openat2(2), ERRORS).
        let mut tries = 0;
        loop {
            match openat2(root.as_fd(), &rel, how) {
                Ok(fd) => {
                    OPENAT2.store(1, Ordering::Relaxed);
                    return Some(Ok(fd));
                }
                Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                Err(Errno::ENOSYS) | Err(Errno::EPERM) | Err(Errno::E2BIG)
                    if OPENAT2.load(Ordering::Relaxed) != 1 =>
                {
                    tracing::debug!("openat2 is not available here; resolving paths in user space");
                    OPENAT2.store(2, Ordering::Relaxed);
                    return None;
                }
                Err(e) => return Some(Err(open_error(host_path, flags, e))),
            }
        }
    }

    /// The fallback: cchost's own resolution (resolve.rs), then a plain open of the
    /// path it gives.
    fn open_user_space(
        &self,
        host_path: &Path,
        flags: OFlag,
        mode: Mode,
    ) -> Result<OwnedFd, HostError> {
        let follow_last = !flags.contains(OFlag::O_NOFOLLOW);
        let local = resolve::resolve_in_root(&self.root, host_path, follow_last)?;
        nix::fcntl::open(&local, flags, mode).map_err(|e| open_error(host_path, flags, e))
    }
}

/// ELOOP from an open that follows links is a loop (or a chain longer than the
/// kernel's 40); with `O_NOFOLLOW` it is the final symlink refused, a plain error.
fn open_error(host_path: &Path, flags: OFlag, e: Errno) -> HostError {
    if e == Errno::ELOOP && !flags.contains(OFlag::O_NOFOLLOW) {
        HostError::SymlinkLoop(host_path.to_path_buf())
    } else {
        HostError::io(host_path, e.into())
    }
}

/// The host path relative to the root (`/sys/x` -> `sys/x`; `/` -> `.`).
fn relative(host_path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in host_path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => out.push(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}
