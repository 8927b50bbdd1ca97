//! Advisory locks on host files, so that two cchost processes (a daemon and a person at
//! the shell) never interleave their changes.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{HostError, HostRoot};

/// An exclusive `flock(2)` on a host file; released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct HostLock {
    _file: fs::File,
}

/// How long to wait for a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Do not wait: a held lock is [`HostError::Locked`] at once.
    No,
    /// Wait at most this long, saying so once the wait starts.
    Upto(Duration),
}

/// How often a waiting process tries again.
const POLL: Duration = Duration::from_millis(50);

impl HostRoot {
    /// Takes an exclusive lock on `host_path` (created, mode 0600, parents too), waiting
    /// for another holder to let go for at most `wait`.
    pub fn lock_exclusive(
        &self,
        host_path: impl AsRef<Path>,
        wait: LockWait,
    ) -> Result<HostLock, HostError> {
        let host_path = host_path.as_ref();
        if let Some(parent) = host_path.parent() {
            self.create_dir_all(parent)?;
        }
        // Created inside the root (open.rs); O_NOFOLLOW: a link planted at the lock's
        // name is refused, not followed.
        let file = fs::File::from(self.open_in_root(
            host_path,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(0o600),
        )?);
        let meta = file.metadata().map_err(|e| HostError::io(host_path, e))?;
        if !meta.file_type().is_file() {
            return Err(HostError::UnexpectedKind {
                path: host_path.to_path_buf(),
                found: super::kind_of(&meta.file_type()),
            });
        }
        let start = Instant::now();
        let mut said = false;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                if said {
                    tracing::info!(lock = %host_path.display(), waited_ms = start.elapsed().as_millis() as u64, "got the lock");
                }
                return Ok(HostLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => {}
                _ => return Err(HostError::io(host_path, err)),
            }
            let limit = match wait {
                LockWait::No => Duration::ZERO,
                LockWait::Upto(d) => d,
            };
            if start.elapsed() >= limit {
                return Err(HostError::Locked {
                    path: host_path.to_path_buf(),
                    waited: start.elapsed(),
                });
            }
            if !said {
                tracing::warn!(
                    lock = %host_path.display(),
                    limit_s = limit.as_secs_f64(),
                    "another cchost process holds the lock; waiting for it"
                );
                said = true;
            }
            std::thread::sleep(POLL.min(limit.saturating_sub(start.elapsed())));
        }
    }
}
