//! systemd's manager on the host's system bus: the D-Bus proxies cchost uses
//! (docs/facts/systemd-dbus.md), and where the bus socket is.
//!
//! The proxies only describe the interface; who calls them decides what to do
//! (`dcap::systemd` restarts QGS, `gpu::services` stops NVIDIA's daemons).

use std::path::Path;

use zbus::zvariant::OwnedObjectPath;

use super::{HostError, HostRoot};

/// The host's system bus socket (resolved inside the host root, so a DaemonSet with the
/// host at /host reaches the host's systemd).
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// The bus address of the host's system bus under this root (`unix:path=...`).
pub fn bus_address(host: &HostRoot) -> Result<String, HostError> {
    let local = host.resolve(Path::new(SYSTEM_BUS_SOCKET))?;
    Ok(format!("unix:path={}", local.display()))
}

/// `org.freedesktop.systemd1.Manager` at `/org/freedesktop/systemd1`
/// (org.freedesktop.systemd1(5)).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub trait Manager {
    /// `LoadUnit(in s name, out o unit)`: the unit's object, loading it if needed.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// `StartUnit(in s name, in s mode, out o job)`.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// `StopUnit(in s name, in s mode, out o job)`.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// `RestartUnit(in s name, in s mode, out o job)`.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
}

/// `org.freedesktop.systemd1.Unit` of one unit object.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
}
