//! Advisory locks on host files, so that two cchost processes (a daemon and a person at
//! the shell) never interleave their changes.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{HostError, HostRoot};

/// An exclusive `flock(2)` on a host file; released when dropped.
#[derive(Debug)]
pub struct HostLock {
    _file: fs::File,
}

impl HostRoot {
    /// Takes an exclusive lock on `host_path` (created, mode 0600, parents too), waiting
    /// for another holder to let go.
    pub fn lock_exclusive(&self, host_path: impl AsRef<Path>) -> Result<HostLock, HostError> {
        let host_path = host_path.as_ref();
        if let Some(parent) = host_path.parent() {
            self.create_dir_all(parent)?;
        }
        let local = self.resolve(host_path)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&local)
            .map_err(|e| HostError::io(host_path, e))?;
        let meta = file.metadata().map_err(|e| HostError::io(host_path, e))?;
        if !meta.file_type().is_file() {
            return Err(HostError::UnexpectedKind {
                path: host_path.to_path_buf(),
                found: super::kind_of(&meta.file_type()),
            });
        }
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(HostError::io(host_path, err));
            }
        }
        Ok(HostLock { _file: file })
    }
}
