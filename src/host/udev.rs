//! The `udev` device-event source (cargo feature `udev`): events from systemd-udevd
//! through libudev, after udevd has run its rules, so a `/dev/vfio/<group>` node named in
//! an `add` event already has its final owner and mode. Same filter as the netlink
//! source (PCI, vfio, vfio-dev, iommu, misc), done in the kernel by libudev's socket
//! filter. Needs udevd on the host (`/run/udev/control`) and, in a pod,
//! `hostNetwork: true`, as for netlink.

use std::os::fd::{AsRawFd, RawFd};

use super::device_events::DeviceEventSource;
use super::uevent::Uevent;

/// Subsystems whose events can change what the plugin advertises (the netlink source's
/// [`super::uevent::is_passthrough_relevant`] keeps the same ones).
const SUBSYSTEMS: [&str; 5] = ["pci", "vfio", "vfio-dev", "iommu", "misc"];

pub struct UdevMonitor {
    socket: udev::MonitorSocket,
}

impl AsRawFd for UdevMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl UdevMonitor {
    /// Listens to udevd's processed events (libudev's `udev` monitor, non-blocking).
    pub fn open() -> std::io::Result<Self> {
        let mut b = udev::MonitorBuilder::new()?;
        for s in SUBSYSTEMS {
            b = b.match_subsystem(s)?;
        }
        Ok(UdevMonitor {
            socket: b.listen()?,
        })
    }
}

/// An event's properties (udev's `ACTION`, `DEVPATH`, `SUBSYSTEM`, ... — the kernel's
/// uevent variables plus what udev rules added) as a [`Uevent`].
pub fn uevent_from_properties<'a>(
    props: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Uevent> {
    let env: std::collections::BTreeMap<String, String> = props
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Uevent {
        action: env.get("ACTION")?.clone(),
        devpath: env.get("DEVPATH")?.clone(),
        env,
    })
}

impl DeviceEventSource for UdevMonitor {
    fn name(&self) -> &'static str {
        "udev"
    }

    fn recv(&self) -> std::io::Result<Option<Uevent>> {
        match self.socket.iter().next() {
            Some(ev) => {
                let props: Vec<(String, String)> = ev
                    .properties()
                    .map(|p| {
                        (
                            p.name().to_string_lossy().into_owned(),
                            p.value().to_string_lossy().into_owned(),
                        )
                    })
                    .collect();
                Ok(uevent_from_properties(
                    props.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ))
            }
            // libudev returns NULL with errno set: EAGAIN when nothing is queued (its
            // socket is non-blocking), anything else is a real error (ENOBUFS: events
            // were dropped, the caller rescans).
            None => {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(0) | None => {
                        Err(std::io::ErrorKind::WouldBlock.into())
                    }
                    Some(_) => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::uevent::is_passthrough_relevant;

    #[test]
    fn properties_of_a_bind_event_become_the_same_uevent_netlink_gives() {
        let props = [
            ("ACTION", "bind"),
            ("DEVPATH", "/devices/pci0000:00/0000:00:03.0"),
            ("SUBSYSTEM", "pci"),
            ("DRIVER", "vfio-pci"),
            ("PCI_SLOT_NAME", "0000:00:03.0"),
            ("SEQNUM", "1234"),
            ("USEC_INITIALIZED", "5218841"),
        ];
        let ev = uevent_from_properties(props).unwrap();
        let raw = b"bind@/devices/pci0000:00/0000:00:03.0\0ACTION=bind\0DEVPATH=/devices/pci0000:00/0000:00:03.0\0SUBSYSTEM=pci\0DRIVER=vfio-pci\0PCI_SLOT_NAME=0000:00:03.0\0SEQNUM=1234\0";
        let kernel = Uevent::parse(raw).unwrap();
        assert_eq!(ev.action, kernel.action);
        assert_eq!(ev.devpath, kernel.devpath);
        assert_eq!(ev.subsystem(), kernel.subsystem());
        assert!(is_passthrough_relevant(&ev));
        // Without ACTION or DEVPATH it is not an event.
        assert!(uevent_from_properties([("SUBSYSTEM", "pci")]).is_none());
    }

    #[test]
    fn the_monitor_opens_without_udevd_and_does_not_block() {
        // A netlink socket bound to udev's group: no daemon needed to open it; with
        // nothing queued, recv says WouldBlock instead of blocking the runtime.
        let m = UdevMonitor::open().unwrap();
        assert!(m.as_raw_fd() >= 0);
        match m.recv() {
            Ok(_) => {} // udevd running on this machine and an event just came in
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        }
    }
}
