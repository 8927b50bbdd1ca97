//! Stopping NVIDIA's host daemons before a bind, over a real bus: the real client
//! ([`SystemBus`], the one `gpu bind --stop-services` uses) against a private dbus-daemon
//! with a stand-in for systemd's manager (tests/support/systemd.rs). The bus listens
//! where the host's system bus socket is under the fixture host's root, so the client
//! finds it exactly as it finds the host's.
//!
//! What a fixture host cannot show is the sysfs bind itself (no kernel behind its sysfs):
//! the tests stop where the plan, made again once the daemon is gone, says the bind goes
//! ahead; the bind is proven on a real kernel in tests/real_kernel/vfio.rs.

use std::path::Path;
use std::time::Duration;

use crate::support::systemd::{OnStop, StandInSystemd, StandInUnit};
use cchost::apply::services::{AfterUnbind, FreeError, free_then_replan, start_when_released};
use cchost::config::Config;
use cchost::fixture::{FixtureHost, PciSpec};
use cchost::gpu::services::{STOP_KIND, ServiceRestorer, SystemBus, UnitStop};
use cchost::gpu::vfio::{BIND_KIND, Binding};
use cchost::host::HostRoot;
use cchost::host::systemd::SYSTEM_BUS_SOCKET;
use cchost::inventory::discover_gpus;
use cchost::journal::{self, EntryState, Journal};
use cchost::plan::vfio::{Plan, PlanError, Selection, plan_bind};

const P: &str = "nvidia-persistenced.service";
const FM: &str = "nvidia-fabricmanager.service";
const HOLDER: &str = "/proc/1111/fd/3";

/// An H100 on nvidia, its /dev/nvidia0 held by nvidia-persistenced (pid 1111).
fn host(dir: &Path) -> HostRoot {
    FixtureHost::new(dir)
        .osrelease("6.8.0-test")
        .modules_alias("alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n")
        .pci(PciSpec::h100_sxm5("0000:3b:00.0").driver("nvidia").group(1))
        .file(
            "/proc/driver/nvidia/gpus/0000:3b:00.0/information",
            "Device Minor: \t 0\n",
        )
        .file("/proc/1111/comm", "nvidia-persiste\n")
        .symlink(HOLDER, "/dev/nvidia0")
        .dev("/dev/nvidia0")
        .build()
        .unwrap()
}

fn stop_on() -> Config {
    let mut c = Config::default();
    c.vfio.stop_nvidia_services = true;
    c
}

fn plan(host: &HostRoot, cfg: &Config) -> Result<Plan, PlanError> {
    let inv = discover_gpus(host, &cfg.matching);
    plan_bind(host, cfg, &inv, &Selection::All)
}

fn socket(dir: &Path) -> std::path::PathBuf {
    dir.join(SYSTEM_BUS_SOCKET.trim_start_matches('/'))
}

fn persistenced(dir: &Path, on_stop: OnStop) -> Vec<StandInUnit> {
    vec![
        StandInUnit {
            name: P,
            active: "active",
            on_stop,
            holder: Some((
                dir.join(HOLDER.trim_start_matches('/')),
                "/dev/nvidia0".into(),
            )),
        },
        StandInUnit {
            name: FM,
            active: "inactive",
            on_stop: OnStop::Stops,
            holder: None,
        },
    ]
}

#[test]
fn the_daemon_is_stopped_over_the_bus_the_bind_goes_ahead_and_undo_starts_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let sd = StandInSystemd::start(&socket(dir.path()), persistenced(dir.path(), OnStop::Stops));
    let first = plan(&host, &stop_on()).unwrap();
    assert_eq!(first.stop_units, [P]);

    let mut j = Journal::open(&host).unwrap();
    let bus = SystemBus::for_host(&host, Duration::from_secs(10));
    let (again, stopped) = free_then_replan(&mut j, &bus, &first.stop_units, || {
        plan(&host, &Config::default())
    })
    .unwrap();
    assert_eq!(stopped, [P]);
    assert_eq!(sd.jobs(), [format!("StopUnit {P} replace")]);
    assert_eq!(sd.active(P), "inactive", "waited for the job to finish");
    assert!(
        again.items.iter().any(|i| i.changes) && again.stop_units.is_empty(),
        "the holder is gone, the bind goes ahead: {again:?}"
    );
    let e = j.find(STOP_KIND, P).expect("the stop is journaled");
    assert_eq!(e.state, EntryState::Applied);
    assert_eq!(e.restore_as::<UnitStop>().unwrap().unit, P);
    assert!(
        j.find(STOP_KIND, FM).is_none(),
        "a unit that was not running is not recorded (undo must not start it)"
    );

    // `cchost undo`'s restorer, over the same bus: starts exactly the stopped unit.
    let done = journal::undo_all(&mut j, &[&ServiceRestorer::SYSTEM]).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        sd.jobs(),
        [
            format!("StopUnit {P} replace"),
            format!("StartUnit {P} replace")
        ]
    );
    assert_eq!(sd.active(P), "active");
    assert!(j.entries().is_empty());
    assert!(
        dir.path()
            .join(HOLDER.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok(),
        "the daemon holds its GPU again"
    );
}

#[test]
fn a_crash_between_the_stop_and_the_bind_is_recovered_by_starting_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let sd = StandInSystemd::start(&socket(dir.path()), persistenced(dir.path(), OnStop::Stops));
    let mut j = Journal::open(&host).unwrap();
    // What a run killed while the stop was under way leaves behind.
    let data = UnitStop { unit: P.into() };
    j.begin(STOP_KIND, P, &data, &data).unwrap();
    drop(j);
    let mut j = Journal::open(&host).unwrap();
    let done = journal::recover(&mut j, &[&ServiceRestorer::SYSTEM]).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(sd.jobs(), [format!("StartUnit {P} replace")]);
    assert!(j.entries().is_empty());
}

#[test]
fn a_unit_that_will_not_stop_refuses_the_bind_and_leaves_nothing_behind() {
    for (how, says) in [
        (OnStop::Denies, "AccessDenied"),
        (OnStop::Hangs, "still active after 400 ms"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        let sd = StandInSystemd::start(&socket(dir.path()), persistenced(dir.path(), how));
        let mut j = Journal::open(&host).unwrap();
        let bus = SystemBus::for_host(&host, Duration::from_millis(400));
        let mut replanned = false;
        let err = free_then_replan(&mut j, &bus, &[P.to_string()], || {
            replanned = true;
            plan(&host, &Config::default())
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, FreeError::Stop { .. })
                && msg.contains(P)
                && msg.contains(says)
                && msg.contains("nothing was bound"),
            "{how:?}: {msg}"
        );
        assert!(!replanned, "{how:?}: no bind was planned");
        assert!(j.entries().is_empty(), "{how:?}: {:?}", j.entries());
        assert_eq!(sd.active(P), "active", "{how:?}");
    }
}

#[test]
fn without_a_bus_the_refusal_names_the_units() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let mut j = Journal::open(&host).unwrap();
    let bus = SystemBus::for_host(&host, Duration::from_secs(2));
    let err = free_then_replan(&mut j, &bus, &[P.to_string(), FM.to_string()], || {
        plan(&host, &Config::default())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(P) && err.contains(FM) && err.contains("no system bus"),
        "{err}"
    );
    assert!(j.entries().is_empty());
}

/// The command itself: `gpu bind --all --stop-services` with the unit refusing over the
/// bus exits 1 naming it, and the journal stays empty.
#[test]
fn the_cli_refuses_naming_the_unit_when_systemd_says_no() {
    let dir = tempfile::tempdir().unwrap();
    let _host = host(dir.path());
    let _sd = StandInSystemd::start(
        &socket(dir.path()),
        persistenced(dir.path(), OnStop::Denies),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(dir.path())
        .args(["gpu", "bind", "--all", "--stop-services"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(P) && stderr.contains("AccessDenied"),
        "{stderr}"
    );
    let journal = dir.path().join("var/lib/cchost/journal.json");
    if let Ok(text) = std::fs::read_to_string(&journal) {
        assert!(!text.contains(STOP_KIND), "{text}");
    }
    // Without the option: refused before any bus call, naming the unit and the option.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(dir.path())
        .args(["gpu", "bind", "--all"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("systemctl stop nvidia-persistenced.service")
            && stderr.contains("--stop-services"),
        "{stderr}"
    );
}

/// `gpu unbind`'s last step over the real bus: once no device cchost bound is left on
/// vfio, the unit the bind stopped is started again and its entry dropped; while one is
/// left, the bus is not asked.
#[test]
fn the_last_unbind_starts_the_stopped_daemon_over_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let sd = StandInSystemd::start(&socket(dir.path()), persistenced(dir.path(), OnStop::Stops));
    let mut j = Journal::open(&host).unwrap();
    let bus = SystemBus::for_host(&host, Duration::from_secs(10));
    free_then_replan(&mut j, &bus, &[P.to_string()], || {
        plan(&host, &Config::default())
    })
    .unwrap();
    // The bind's entry, as `gpu bind` leaves it (the sysfs bind itself is proven on a
    // real kernel in tests/real_kernel/vfio.rs).
    let was = Binding {
        driver: Some("nvidia".into()),
        driver_override: None,
    };
    let now = Binding {
        driver: Some("vfio-pci".into()),
        driver_override: Some("vfio-pci".into()),
    };
    let seq = j.begin(BIND_KIND, "0000:3b:00.0", &now, &was).unwrap();
    j.applied(seq).unwrap();

    assert_eq!(
        start_when_released(&mut j, &bus),
        AfterUnbind::KeptStopped {
            units: vec![P.to_string()],
            bound: 1
        }
    );
    assert_eq!(sd.jobs(), [format!("StopUnit {P} replace")]);

    // The unbind itself (the product's function): the entry says nvidia, and the fixture
    // device is on nvidia already, as the kernel leaves it after the rebind.
    let addr: cchost::host::pci::PciAddress = "0000:3b:00.0".parse().unwrap();
    let out = cchost::gpu::vfio::unbind(&host, &mut j, &addr, &|d| d == "vfio-pci", &mut |_, _| {})
        .unwrap();
    assert!(
        matches!(out, cchost::gpu::vfio::UnbindOutcome::Restored { .. }),
        "{out:?}"
    );
    assert!(j.get(seq).is_none());
    assert_eq!(
        start_when_released(&mut j, &bus),
        AfterUnbind::Started(vec![P.to_string()])
    );
    assert_eq!(
        sd.jobs(),
        [
            format!("StopUnit {P} replace"),
            format!("StartUnit {P} replace")
        ]
    );
    assert_eq!(sd.active(P), "active");
    assert!(j.entries().is_empty(), "{:?}", j.entries());
}
