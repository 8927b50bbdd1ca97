//! Kernel uevents from a `NETLINK_KOBJECT_UEVENT` socket: device add/remove and driver
//! bind/unbind, as the kernel broadcasts them (multicast group 1, before udev). No
//! libudev needed.
//!
//! A kernel uevent datagram is `ACTION@DEVPATH\0KEY=VALUE\0KEY=VALUE\0...`. udev's own
//! re-broadcasts (group 2) start with `libudev\0` and are not read here.
//! Uevents reach the network namespace of the initial user namespace, so in a
//! DaemonSet the pod needs `hostNetwork: true` for this socket to see them.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recvfrom, setsockopt,
    socket, sockopt,
};

/// One parsed kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `bind`, `unbind`, `move`, `online`, `offline`.
    pub action: String,
    /// Path below /sys, e.g. `/devices/pci0000:00/0000:00:02.0/0000:01:00.0`.
    pub devpath: String,
    /// `SUBSYSTEM`, `DRIVER`, `DEVNAME`, `PCI_SLOT_NAME`, ...
    pub env: BTreeMap<String, String>,
}

impl Uevent {
    pub fn subsystem(&self) -> Option<&str> {
        self.env.get("SUBSYSTEM").map(String::as_str)
    }

    /// Parses one datagram; `None` for udev re-broadcasts and garbage.
    pub fn parse(buf: &[u8]) -> Option<Uevent> {
        let mut parts = buf.split(|b| *b == 0).filter(|p| !p.is_empty());
        let head = std::str::from_utf8(parts.next()?).ok()?;
        let (action, devpath) = head.split_once('@')?;
        let mut env = BTreeMap::new();
        for p in parts {
            let Ok(s) = std::str::from_utf8(p) else {
                continue;
            };
            if let Some((k, v)) = s.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        // The kernel always sends ACTION and DEVPATH again as variables; trust them.
        let action = env
            .get("ACTION")
            .cloned()
            .unwrap_or_else(|| action.to_string());
        let devpath = env
            .get("DEVPATH")
            .cloned()
            .unwrap_or_else(|| devpath.to_string());
        Some(Uevent {
            action,
            devpath,
            env,
        })
    }
}

/// A bound, non-blocking uevent socket.
pub struct UeventSocket {
    fd: OwnedFd,
}

impl AsRawFd for UeventSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Kernel uevents go to multicast group 1 (udev uses 2 for its own).
const KERNEL_GROUP: u32 = 1;

impl UeventSocket {
    /// Opens the socket and joins the kernel's uevent group.
    pub fn open() -> std::io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // Bursts (a driver bind on 8 GPUs) must not overflow the default buffer.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))?;
        Ok(UeventSocket { fd })
    }

    /// Registers the socket with the tokio reactor.
    pub fn into_async(self) -> std::io::Result<tokio::io::unix::AsyncFd<UeventSocket>> {
        // SAFETY: the fd is the OwnedFd inside `self`, which the AsyncFd owns from here
        // on; it stays open and `as_raw_fd` returns the same fd until it is dropped.
        unsafe { Ok(tokio::io::unix::AsyncFd::register(self)?) }
    }

    /// Receives one uevent; `Ok(None)` when nothing is queued (EAGAIN) or the
    /// datagram was not a kernel uevent.
    pub fn recv(&self) -> std::io::Result<Option<Uevent>> {
        let mut buf = [0u8; 8192];
        match recvfrom::<NetlinkAddr>(self.fd.as_raw_fd(), &mut buf) {
            Ok((n, from)) => Ok(from_kernel(from.map(|a| a.pid()), &buf[..n])),
            Err(nix::errno::Errno::EAGAIN) => Err(std::io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A datagram counts only when the kernel sent it: netlink port id 0. Any process
/// that may send to the group could forge one otherwise; udev drops such messages the
/// same way (systemd src/libsystemd/sd-device/device-monitor.c, "Multicast kernel
/// netlink message from PID … ignored"; netlink(7): the kernel's nl_pid is 0).
fn from_kernel(sender_port: Option<u32>, datagram: &[u8]) -> Option<Uevent> {
    if sender_port != Some(0) {
        return None;
    }
    Uevent::parse(datagram)
}

/// Does this uevent concern passthrough devices (PCI functions, their drivers, vfio
/// nodes)? Everything else (block, net, input, ...) is ignored.
pub fn is_passthrough_relevant(ev: &Uevent) -> bool {
    matches!(
        ev.subsystem(),
        Some("pci" | "vfio" | "vfio-dev" | "iommu" | "misc")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_bind_event() {
        let raw = b"bind@/devices/pci0000:00/0000:00:03.0\0ACTION=bind\0DEVPATH=/devices/pci0000:00/0000:00:03.0\0SUBSYSTEM=pci\0DRIVER=vfio-pci\0PCI_SLOT_NAME=0000:00:03.0\0SEQNUM=1234\0";
        let ev = Uevent::parse(raw).unwrap();
        assert_eq!(ev.action, "bind");
        assert_eq!(ev.devpath, "/devices/pci0000:00/0000:00:03.0");
        assert_eq!(ev.subsystem(), Some("pci"));
        assert_eq!(ev.env["DRIVER"], "vfio-pci");
        assert!(is_passthrough_relevant(&ev));
    }

    /// Issue 14.10: a uevent from a process (port id not 0) is not the kernel's.
    #[test]
    fn only_the_kernel_port_is_believed() {
        let raw = b"remove@/devices/pci0000:00/0000:00:03.0\0ACTION=remove\0SUBSYSTEM=pci\0";
        assert!(from_kernel(Some(0), raw).is_some());
        assert!(from_kernel(Some(4242), raw).is_none());
        assert!(from_kernel(None, raw).is_none());
    }

    #[test]
    fn ignores_garbage_and_other_subsystems() {
        assert!(Uevent::parse(b"").is_none());
        assert!(Uevent::parse(b"\0\0").is_none());
        assert!(Uevent::parse(b"no-at-sign\0A=B\0").is_none());
        let ev = Uevent::parse(b"add@/devices/virtual/net/lo\0SUBSYSTEM=net\0").unwrap();
        assert!(!is_passthrough_relevant(&ev));
        let ev = Uevent::parse(b"add@/devices/virtual/vfio/3\0SUBSYSTEM=vfio\0DEVNAME=vfio/3\0")
            .unwrap();
        assert!(is_passthrough_relevant(&ev));
    }

    #[test]
    fn live_socket_opens_on_any_linux() {
        // Holds on any Linux kernel with netlink (every CI machine).
        let s = UeventSocket::open().unwrap();
        match s.recv() {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        }
    }
}
