//! Unix sockets and directory watches on host paths (the kubelet device-plugin
//! directory): bind a socket, find a socket to connect to, watch a directory with
//! inotify. Paths are host paths, resolved inside the root like every other door.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::{HostError, HostRoot, NodeKind};

/// `sun_path` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// A directory change seen by [`DirWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirEvent {
    /// A name appeared (created or moved in).
    Created(String),
    /// A name went away (deleted or moved out).
    Removed(String),
    /// The watched directory itself is gone.
    DirGone,
}

/// An inotify watch on one directory (non-blocking fd, for `tokio::io::unix::AsyncFd`).
pub struct DirWatch {
    inotify: Inotify,
    host_path: PathBuf,
}

impl AsRawFd for DirWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify.as_fd().as_raw_fd()
    }
}

impl DirWatch {
    /// Reads the pending events; `Ok(vec![])` when none are queued.
    pub fn read(&self) -> Result<Vec<DirEvent>, HostError> {
        let events = match self.inotify.read_events() {
            Ok(e) => e,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Vec::new()),
            Err(e) => return Err(HostError::io(&self.host_path, e.into())),
        };
        let mut out = Vec::new();
        for ev in events {
            if ev
                .mask
                .intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF)
            {
                out.push(DirEvent::DirGone);
                continue;
            }
            let Some(name) = ev.name.and_then(|n| n.into_string().ok()) else {
                continue;
            };
            if ev
                .mask
                .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
            {
                out.push(DirEvent::Created(name));
            } else if ev
                .mask
                .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM)
            {
                out.push(DirEvent::Removed(name));
            }
        }
        Ok(out)
    }

    pub fn host_path(&self) -> &Path {
        &self.host_path
    }

    /// Registers the watch with the tokio reactor.
    pub fn into_async(self) -> std::io::Result<tokio::io::unix::AsyncFd<DirWatch>> {
        // SAFETY: the fd belongs to `self.inotify`, which the AsyncFd owns from here
        // on; it stays open and `as_raw_fd` returns the same fd until it is dropped.
        unsafe { Ok(tokio::io::unix::AsyncFd::register(self)?) }
    }
}

impl HostRoot {
    /// The local path of a socket, checked against the `sun_path` limit.
    pub fn socket_path(&self, host_path: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        let host_path = host_path.as_ref();
        let local = self.resolve(host_path)?;
        if local.as_os_str().len() > SUN_PATH_MAX {
            return Err(HostError::malformed(
                host_path,
                format!(
                    "socket path {} is longer than {SUN_PATH_MAX} bytes",
                    local.display()
                ),
            ));
        }
        Ok(local)
    }

    /// Binds a listening unix socket (non-blocking). A stale socket at the path is
    /// removed first; anything else there (a file, a directory) is an error, never
    /// deleted.
    pub fn bind_unix(
        &self,
        host_path: impl AsRef<Path>,
    ) -> Result<std::os::unix::net::UnixListener, HostError> {
        let host_path = host_path.as_ref();
        match self.kind(host_path) {
            None => {}
            Some(NodeKind::Socket) => self.remove_file(host_path)?,
            Some(other) => {
                return Err(HostError::malformed(
                    host_path,
                    format!("expected a socket or nothing, found a {other:?}"),
                ));
            }
        }
        let local = self.socket_path(host_path)?;
        let listener = std::os::unix::net::UnixListener::bind(&local)
            .map_err(|e| HostError::io(host_path, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| HostError::io(host_path, e))?;
        Ok(listener)
    }

    /// Identity (device, inode) of the socket at a path; `None` when nothing or
    /// something else is there. A re-created socket has a new identity.
    pub fn socket_id(&self, host_path: impl AsRef<Path>) -> Option<(u64, u64)> {
        let st = self.stat_node(host_path.as_ref(), false).ok()?;
        (super::kind_of_mode(st.st_mode) == NodeKind::Socket).then_some((st.st_dev, st.st_ino))
    }

    /// Watches a directory for names appearing and going away.
    pub fn watch_dir(&self, host_path: impl AsRef<Path>) -> Result<DirWatch, HostError> {
        let host_path = host_path.as_ref();
        let local = self.resolve(host_path)?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| HostError::io(host_path, e.into()))?;
        inotify
            .add_watch(
                &local,
                AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF
                    | AddWatchFlags::IN_ONLYDIR,
            )
            .map_err(|e| HostError::io(host_path, e.into()))?;
        Ok(DirWatch {
            inotify,
            host_path: host_path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_replaces_a_stale_socket_but_never_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostRoot::new(tmp.path()).unwrap();
        host.create_dir_all("/run/dp").unwrap();
        let l = host.bind_unix("/run/dp/a.sock").unwrap();
        drop(l);
        assert_eq!(host.kind("/run/dp/a.sock"), Some(NodeKind::Socket));
        host.bind_unix("/run/dp/a.sock").unwrap();
        host.write_atomic("/run/dp/file", b"x", 0o644).unwrap();
        assert!(host.bind_unix("/run/dp/file").is_err());
        assert_eq!(host.read_string("/run/dp/file").unwrap(), "x");
    }

    #[test]
    fn watch_sees_create_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostRoot::new(tmp.path()).unwrap();
        host.create_dir_all("/d").unwrap();
        let w = host.watch_dir("/d").unwrap();
        assert!(w.read().unwrap().is_empty());
        host.write_atomic("/d/x", b"1", 0o644).unwrap();
        host.remove_file("/d/x").unwrap();
        let ev = w.read().unwrap();
        assert!(ev.contains(&DirEvent::Created("x".into())), "{ev:?}");
        assert!(ev.contains(&DirEvent::Removed("x".into())), "{ev:?}");
    }
}
