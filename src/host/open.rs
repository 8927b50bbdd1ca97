//! Opening host files: resolved inside the root by the kernel where it can, never
//! blocking, and only the kinds of file cchost expects.
//!
//! Where the kernel has `openat2(2)` (Linux 5.6), a path is opened relative to a
//! descriptor of the root with `RESOLVE_IN_ROOT`: the kernel itself treats the root as
//! `/` for every component, so a symlink swapped in between cchost's checks and its open
//! cannot lead outside the root (openat2(2), "RESOLVE_IN_ROOT"; fs/namei.c). Magic links
//! (`/proc/<pid>/root`) are refused too (`RESOLVE_NO_MAGICLINKS`). Where openat2 is
//! missing or filtered (ENOSYS, or EPERM from a seccomp profile), cchost falls back to
//! its user-space resolution (resolve.rs), which gives the same answers without the
//! protection against a concurrent swap.
//!
//! Every open carries `O_NONBLOCK`: opening a FIFO for reading otherwise waits for a
//! writer forever (fifo(7)). The descriptor's type is checked with `fstat` right after
//! the open, so a FIFO, socket or device where a regular file belongs is a clear error.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::{HostError, HostRoot, NodeKind, kind_of};

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
        let flags = flags | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let file = match self.open_kernel(host_path, flags) {
            Some(r) => r?,
            None => self.open_user_space(host_path, flags)?,
        };
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

    /// `None` when openat2 cannot be used here (then the caller falls back).
    fn open_kernel(&self, host_path: &Path, flags: OFlag) -> Option<Result<File, HostError>> {
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
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // EAGAIN: a rename elsewhere in the filesystem raced the lookup; the kernel asks
        // the caller to try again (openat2(2), ERRORS).
        let mut tries = 0;
        loop {
            match openat2(root.as_fd(), &rel, how) {
                Ok(fd) => {
                    OPENAT2.store(1, Ordering::Relaxed);
                    return Some(Ok(File::from(fd)));
                }
                Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                Err(Errno::ENOSYS) | Err(Errno::EPERM) | Err(Errno::E2BIG)
                    if OPENAT2.load(Ordering::Relaxed) != 1 =>
                {
                    tracing::debug!("openat2 is not available here; resolving paths in user space");
                    OPENAT2.store(2, Ordering::Relaxed);
                    return None;
                }
                Err(Errno::ELOOP) => {
                    return Some(Err(HostError::SymlinkLoop(host_path.to_path_buf())));
                }
                Err(e) => return Some(Err(HostError::io(host_path, e.into()))),
            }
        }
    }

    fn open_user_space(&self, host_path: &Path, flags: OFlag) -> Result<File, HostError> {
        let local = self.resolve(host_path)?;
        let access = flags & OFlag::O_ACCMODE;
        std::fs::OpenOptions::new()
            .read(access == OFlag::O_RDONLY || access == OFlag::O_RDWR)
            .write(access == OFlag::O_WRONLY || access == OFlag::O_RDWR)
            .custom_flags((flags & !OFlag::O_ACCMODE).bits())
            .open(&local)
            .map_err(|e| HostError::io(host_path, e))
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
