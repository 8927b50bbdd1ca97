//! Sockets a host service listens on (the QGS unix socket, vsock on the local CID).
//!
//! A unix socket is a host path, so it is resolved inside the root like every other host
//! path. vsock has no path; it is reached through the kernel of the machine cchost runs
//! on, which is the host itself in every supported layout (a DaemonSet shares the host's
//! network and vsock namespace).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::{HostError, HostRoot};

/// `VMADDR_CID_LOCAL`: the host talking to itself (needs the `vsock_loopback` module).
pub const VMADDR_CID_LOCAL: u32 = 1;

impl HostRoot {
    /// Connects to a unix stream socket at a host path (resolved inside the root).
    pub async fn connect_unix(
        &self,
        host_path: impl AsRef<Path>,
    ) -> Result<tokio::net::UnixStream, HostError> {
        let host_path = host_path.as_ref();
        let local = self.resolve(host_path)?;
        tokio::net::UnixStream::connect(&local)
            .await
            .map_err(|e| HostError::io(host_path, e))
    }
}

/// A connected vsock stream with read and write timeouts (blocking; use it from
/// `spawn_blocking`). Errors are plain I/O errors: there is no host path to name.
pub struct VsockStream {
    file: std::fs::File,
}

impl VsockStream {
    pub fn connect(cid: u32, port: u32, timeout: Duration) -> std::io::Result<Self> {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, VsockAddr, connect, setsockopt, socket, sockopt,
        };
        use nix::sys::time::TimeVal;
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let tv = TimeVal::new(
            timeout.as_secs() as libc::time_t,
            timeout.subsec_micros() as libc::suseconds_t,
        );
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
        setsockopt(&fd, sockopt::SendTimeout, &tv)?;
        connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &VsockAddr::new(cid, port),
        )?;
        Ok(VsockStream {
            file: std::fs::File::from(fd),
        })
    }

    /// Sets `SO_RCVTIMEO` (a read blocks at most `timeout`; zero is refused, as the
    /// kernel would take it for "no timeout").
    pub fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        use nix::sys::time::TimeVal;
        if timeout.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let tv = TimeVal::new(
            timeout.as_secs() as libc::time_t,
            timeout.subsec_micros() as libc::suseconds_t,
        );
        setsockopt(&self.file, sockopt::ReceiveTimeout, &tv)?;
        Ok(())
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
