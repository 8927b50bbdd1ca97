//! A private bus (Debian's `dbus-daemon`, package `dbus`) and a stand-in for systemd's
//! manager on it, written from the documented interface (org.freedesktop.systemd1(5),
//! docs/facts/systemd-dbus.md): `LoadUnit`, `StopUnit`, `StartUnit` on
//! `org.freedesktop.systemd1.Manager` at `/org/freedesktop/systemd1`, and each unit's
//! `ActiveState` on `org.freedesktop.systemd1.Unit`. Not a real systemd: a stop or start
//! answers with a job path at once and the unit passes through `deactivating` /
//! `activating` before it settles, as systemd's jobs do, so the client has to wait.
//!
//! A unit may hold a fixture host's device node: a symlink `/proc/<pid>/fd/<n>` that the
//! stand-in removes when the unit stops and puts back when it starts, as the daemon's
//! process exiting and starting again would.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::zvariant::OwnedObjectPath;

/// How a stand-in unit answers `StopUnit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// Deactivates, then is inactive (its process gone).
    Stops,
    /// `org.freedesktop.DBus.Error.AccessDenied`, as systemd answers an unprivileged caller.
    Denies,
    /// Takes the job but stays active.
    Hangs,
}

#[derive(Debug)]
struct UnitState {
    active: String,
    on_stop: OnStop,
    /// (fd link, its target) the unit's process holds.
    holder: Option<(PathBuf, String)>,
}

/// What the stand-in was asked, in order (`StopUnit nvidia-persistenced.service replace`).
pub type Calls = Arc<Mutex<Vec<String>>>;

type Units = Arc<Mutex<BTreeMap<String, UnitState>>>;

/// A unit's object path as systemd builds it: every byte outside `[A-Za-z0-9]` becomes
/// `_` and two hex digits (sd_bus_path_encode).
pub fn unit_path(name: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

/// Settles a unit's state after a short delay (the job running).
fn settle(units: &Units, name: &str, state: &'static str) {
    let (units, name) = (units.clone(), name.to_string());
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let mut u = units.lock().unwrap();
        let Some(s) = u.get_mut(&name) else { return };
        if let Some((link, target)) = &s.holder {
            if state == "inactive" {
                let _ = std::fs::remove_file(link);
            } else {
                let _ = std::os::unix::fs::symlink(target, link);
            }
        }
        s.active = state.to_string();
    });
}

struct Manager {
    units: Units,
    calls: Calls,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn load_unit(&self, name: &str) -> zbus::fdo::Result<OwnedObjectPath> {
        self.calls.lock().unwrap().push(format!("LoadUnit {name}"));
        if !self.units.lock().unwrap().contains_key(name) {
            return Err(zbus::fdo::Error::Failed(format!("Unit {name} not found.")));
        }
        Ok(OwnedObjectPath::try_from(unit_path(name)).unwrap())
    }

    async fn stop_unit(&self, name: &str, mode: &str) -> zbus::fdo::Result<OwnedObjectPath> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("StopUnit {name} {mode}"));
        let mut u = self.units.lock().unwrap();
        let s = u
            .get_mut(name)
            .ok_or_else(|| zbus::fdo::Error::Failed(format!("Unit {name} not loaded.")))?;
        match s.on_stop {
            OnStop::Denies => {
                return Err(zbus::fdo::Error::AccessDenied("Access denied".to_string()));
            }
            OnStop::Hangs => {}
            OnStop::Stops => {
                s.active = "deactivating".into();
                drop(u);
                settle(&self.units, name, "inactive");
            }
        }
        Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/7").unwrap())
    }

    async fn start_unit(&self, name: &str, mode: &str) -> zbus::fdo::Result<OwnedObjectPath> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("StartUnit {name} {mode}"));
        let mut u = self.units.lock().unwrap();
        let s = u
            .get_mut(name)
            .ok_or_else(|| zbus::fdo::Error::Failed(format!("Unit {name} not loaded.")))?;
        if s.active != "active" {
            s.active = "activating".into();
            drop(u);
            settle(&self.units, name, "active");
        }
        Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/8").unwrap())
    }
}

struct Unit {
    name: String,
    units: Units,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    async fn active_state(&self) -> String {
        self.units
            .lock()
            .unwrap()
            .get(&self.name)
            .map(|s| s.active.clone())
            .unwrap_or_default()
    }
    #[zbus(property)]
    async fn load_state(&self) -> String {
        "loaded".into()
    }
}

/// A private dbus-daemon listening on `socket`, with a minimal config (no system files).
pub struct PrivateBus {
    child: std::process::Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateBus {
    pub fn listen(socket: &Path) -> PrivateBus {
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (Debian package dbus) must be installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        PrivateBus {
            child,
            address: line.trim().to_string(),
            _dir: dir,
        }
    }
}

/// The stand-in systemd: owns `org.freedesktop.systemd1` on a private bus.
pub struct StandInSystemd {
    pub calls: Calls,
    units: Units,
    _conn: zbus::Connection,
    _rt: tokio::runtime::Runtime,
    pub bus: PrivateBus,
}

/// One unit of the stand-in.
pub struct StandInUnit {
    pub name: &'static str,
    pub active: &'static str,
    pub on_stop: OnStop,
    /// (fd link as a local path, its target) held while the unit runs.
    pub holder: Option<(PathBuf, String)>,
}

impl StandInSystemd {
    /// Starts a bus listening at `socket` and the stand-in on it.
    pub fn start(socket: &Path, units: Vec<StandInUnit>) -> StandInSystemd {
        let bus = PrivateBus::listen(socket);
        let state: Units = Arc::new(Mutex::new(
            units
                .iter()
                .map(|u| {
                    (
                        u.name.to_string(),
                        UnitState {
                            active: u.active.to_string(),
                            on_stop: u.on_stop,
                            holder: u.holder.clone(),
                        },
                    )
                })
                .collect(),
        ));
        let calls: Calls = Arc::default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let conn = rt.block_on(async {
            let mut b = zbus::connection::Builder::address(bus.address.as_str())
                .unwrap()
                .name("org.freedesktop.systemd1")
                .unwrap()
                .serve_at(
                    "/org/freedesktop/systemd1",
                    Manager {
                        units: state.clone(),
                        calls: calls.clone(),
                    },
                )
                .unwrap();
            for u in &units {
                b = b
                    .serve_at(
                        unit_path(u.name),
                        Unit {
                            name: u.name.to_string(),
                            units: state.clone(),
                        },
                    )
                    .unwrap();
            }
            b.build().await.unwrap()
        });
        StandInSystemd {
            calls,
            units: state,
            _conn: conn,
            _rt: rt,
            bus,
        }
    }

    /// A unit's `ActiveState` now.
    pub fn active(&self, name: &str) -> String {
        self.units.lock().unwrap()[name].active.clone()
    }

    /// The calls other than `LoadUnit` (the client loads a unit before each property read).
    pub fn jobs(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.starts_with("LoadUnit"))
            .cloned()
            .collect()
    }
}
