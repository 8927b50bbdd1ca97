//! Where `cchost run` hears about device changes: a small trait over event sources, so
//! the daemon's watch loop is the same whichever one is configured
//! (`device_plugin.event_source`):
//!
//! - `netlink` (default, [`UeventSocket`]): the kernel's own uevents, straight from a
//!   `NETLINK_KOBJECT_UEVENT` socket; no library, works in a static binary.
//! - `udev` (cargo feature `udev`, [`super::udev::UdevMonitor`]): the same events after
//!   systemd-udevd has processed them (rules run, /dev nodes created with their final
//!   owner and mode), through libudev. Needs udevd running on the host.
//!
//! A source is a non-blocking file descriptor the tokio reactor waits on, and a `recv`
//! that returns one parsed event at a time.

use std::os::fd::{AsRawFd, RawFd};

use super::uevent::{Uevent, UeventSocket};

pub trait DeviceEventSource: AsRawFd + Send + Sync + 'static {
    /// `netlink` or `udev`, for logs.
    fn name(&self) -> &'static str;
    /// One queued event. `Err(WouldBlock)` when nothing is queued; `Ok(None)` for a
    /// message that is not a device event (skipped).
    fn recv(&self) -> std::io::Result<Option<Uevent>>;
}

impl DeviceEventSource for UeventSocket {
    fn name(&self) -> &'static str {
        "netlink"
    }

    fn recv(&self) -> std::io::Result<Option<Uevent>> {
        UeventSocket::recv(self)
    }
}

/// A boxed source the tokio reactor can register (`AsyncFd` needs `AsRawFd`).
pub struct BoxedSource(pub Box<dyn DeviceEventSource>);

impl AsRawFd for BoxedSource {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl BoxedSource {
    /// Registers the source with the tokio reactor.
    pub fn into_async(self) -> std::io::Result<tokio::io::unix::AsyncFd<BoxedSource>> {
        // SAFETY: the fd belongs to the boxed source, which the AsyncFd owns from here
        // on; it stays open and `as_raw_fd` returns the same fd until it is dropped.
        unsafe { Ok(tokio::io::unix::AsyncFd::register(self)?) }
    }
}

/// Opens the kernel's uevent netlink socket (`event_source = "netlink"`).
pub fn open_netlink() -> std::io::Result<BoxedSource> {
    Ok(BoxedSource(Box::new(UeventSocket::open()?)))
}

/// Opens a libudev monitor (`event_source = "udev"`); an error in a build without the
/// `udev` cargo feature.
pub fn open_udev() -> std::io::Result<BoxedSource> {
    #[cfg(feature = "udev")]
    {
        Ok(BoxedSource(Box::new(super::udev::UdevMonitor::open()?)))
    }
    #[cfg(not(feature = "udev"))]
    {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "event_source = \"udev\" needs cchost built with the `udev` cargo feature",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// A source fed by the test: kernel-format datagrams over a socket pair.
    struct Fed(UnixDatagram);

    impl AsRawFd for Fed {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    impl DeviceEventSource for Fed {
        fn name(&self) -> &'static str {
            "test"
        }
        fn recv(&self) -> std::io::Result<Option<Uevent>> {
            let mut buf = [0u8; 4096];
            let n = self.0.recv(&mut buf)?;
            Ok(Uevent::parse(&buf[..n]))
        }
    }

    #[tokio::test]
    async fn any_source_drives_the_reactor_the_same_way() {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let src = BoxedSource(Box::new(Fed(a))).into_async().unwrap();
        b.send(b"unbind@/devices/pci0000:00/0000:00:03.0\0SUBSYSTEM=pci\0")
            .unwrap();
        let guard = src.readable().await.unwrap();
        let ev = guard.get_inner().0.recv().unwrap().unwrap();
        assert_eq!(ev.action, "unbind");
        assert_eq!(guard.get_inner().0.name(), "test");
        let again = guard.get_inner().0.recv().unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn netlink_is_always_available() {
        let s = open_netlink().unwrap();
        assert_eq!(s.0.name(), "netlink");
    }

    #[cfg(not(feature = "udev"))]
    #[test]
    fn udev_without_the_feature_says_so() {
        let e = open_udev().err().unwrap();
        assert!(e.to_string().contains("udev` cargo feature"), "{e}");
    }
}
