//! systemd's service notification protocol, as sd_notify(3) documents it: the service
//! sends newline-separated `KEY=VALUE` assignments in one datagram to the `AF_UNIX`
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! `READY=1` ends start-up for `Type=notify`; `WATCHDOG=1` is the keep-alive for
//! `WatchdogSec=`, whose interval systemd passes in `$WATCHDOG_USEC` (microseconds),
//! only meant for `$WATCHDOG_PID` when that is set (sd_watchdog_enabled(3));
//! sending at half the interval is the documented recommendation. `STOPPING=1` and
//! `STATUS=` are informative. `vsock:` addresses (systemd ≥ 254, for VMs) are not
//! supported: cchost runs on the host.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connected-on-demand notifier for one `$NOTIFY_SOCKET`.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    shown: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?}: {1}")]
    Address(String, String),
    #[error("notify {0}: {1}")]
    Send(String, std::io::Error),
}

impl Notifier {
    /// From the value of `$NOTIFY_SOCKET`.
    pub fn new(notify_socket: &str) -> Result<Notifier, NotifyError> {
        let bad = |why: &str| NotifyError::Address(notify_socket.to_string(), why.to_string());
        let addr = if let Some(name) = notify_socket.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| bad(&e.to_string()))?
        } else if notify_socket.starts_with('/') {
            SocketAddr::from_pathname(notify_socket).map_err(|e| bad(&e.to_string()))?
        } else {
            return Err(bad(
                "not a socket path or @abstract name (vsock: is not supported)",
            ));
        };
        let socket = UnixDatagram::unbound().map_err(|e| bad(&e.to_string()))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Notifier {
            socket,
            addr,
            shown: notify_socket.to_string(),
        })
    }

    /// From the environment: `None` when `$NOTIFY_SOCKET` is unset (not run by systemd
    /// with `Type=notify`).
    pub fn from_env() -> Option<Result<Notifier, NotifyError>> {
        let v = std::env::var("NOTIFY_SOCKET").ok()?;
        Some(Notifier::new(&v))
    }

    /// Sends one message (`READY=1`, `WATCHDOG=1`, `STATUS=...`, several separated by
    /// newlines). Never blocks: a full socket buffer is an error, not a wait.
    pub(crate) fn notify(&self, message: &str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|e| NotifyError::Send(self.shown.clone(), e))
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the watchdog is on
/// and meant for this process (`$WATCHDOG_PID` unset or equal to `pid`).
pub(crate) fn watchdog_interval(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = watchdog_pid
        && p.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// [`watchdog_interval`] from this process's environment.
pub fn watchdog_from_env() -> Option<Duration> {
    watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// A `STATUS=` line: one line, no newline inside (it would start a new assignment).
pub(crate) fn status_line(text: &str) -> String {
    let one: String = text
        .chars()
        .map(|c| if c == '\n' { ';' } else { c })
        .take(400)
        .collect();
    format!("STATUS={one}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("cchost-test-{}", std::process::id());
        let abs =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .notify("WATCHDOG=1")
            .unwrap();
        let len = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn bad_addresses_and_a_missing_listener_are_errors() {
        assert!(Notifier::new("vsock:2:1234").is_err());
        assert!(Notifier::new("relative").is_err());
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(dir.path().join("nobody").to_str().unwrap()).unwrap();
        let e = n.notify("READY=1").unwrap_err().to_string();
        assert!(e.contains("nobody"), "{e}");
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_our_pid() {
        assert_eq!(
            watchdog_interval(Some("2000000"), None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(status_line("a\nb"), "STATUS=a;b");
    }
}
