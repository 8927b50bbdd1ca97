use std::cell::RefCell;
use std::path::PathBuf;

use super::*;
use crate::config::Config;
use crate::fixture::{PciSpec, Tree};
use crate::gpu::services::{STOP_KIND, UnitError};
use crate::plan::vfio::{Selection, plan_bind};

const P: &str = "nvidia-persistenced.service";

/// A GPU on nvidia held by nvidia-persistenced (pid 1111).
fn host() -> Tree {
    let t = Tree::new();
    t.kernel("6.8.0-test", "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n");
    t.pci(
        &PciSpec::new("0000:3b:00.0", 0x10de, 0x2330, 0x030200)
            .driver("nvidia")
            .group(1),
    )
    .nvidia_minor("0000:3b:00.0", 0)
    .process_holding(1111, "nvidia-persistenced", 3, "/dev/nvidia0");
    t
}

/// A unit that, when stopped, takes its process's fd away (as the daemon exiting would)
/// or, with `keeps_holding`, stops but leaves the holder (another process of that name).
struct Daemon {
    fd: PathBuf,
    state: RefCell<String>,
    deny: bool,
    keeps_holding: bool,
    calls: RefCell<Vec<String>>,
}

impl Daemon {
    fn new(t: &Tree) -> Self {
        Daemon {
            fd: t.path("/proc/1111/fd/3"),
            state: RefCell::new("active".into()),
            deny: false,
            keeps_holding: false,
            calls: RefCell::new(Vec::new()),
        }
    }
}

impl Units for Daemon {
    fn active_state(&self, _: &str) -> Result<String, UnitError> {
        Ok(self.state.borrow().clone())
    }
    fn stop(&self, unit: &str) -> Result<(), UnitError> {
        self.calls.borrow_mut().push(format!("stop {unit}"));
        if self.deny {
            return Err(UnitError::Denied {
                unit: unit.into(),
                reason: "Access denied".into(),
            });
        }
        if !self.keeps_holding {
            std::fs::remove_file(&self.fd).unwrap();
        }
        *self.state.borrow_mut() = "inactive".into();
        Ok(())
    }
    fn start(&self, unit: &str) -> Result<(), UnitError> {
        self.calls.borrow_mut().push(format!("start {unit}"));
        *self.state.borrow_mut() = "active".into();
        Ok(())
    }
}

fn opted_in() -> Config {
    let mut c = Config::default();
    c.vfio.stop_nvidia_services = true;
    c
}

fn replan(t: &Tree) -> Result<crate::plan::vfio::Plan, PlanError> {
    let cfg = Config::default();
    let inv = crate::inventory::discover_gpus(&t.host, &cfg.matching);
    plan_bind(&t.host, &cfg, &inv, &Selection::All)
}

#[test]
fn without_the_option_the_daemon_refuses_the_bind() {
    let t = host();
    assert!(matches!(replan(&t), Err(PlanError::Refused(_))));
}

#[test]
fn the_plan_names_the_unit_and_the_bind_goes_ahead_once_it_stopped() {
    let t = host();
    let cfg = opted_in();
    let inv = crate::inventory::discover_gpus(&t.host, &cfg.matching);
    let plan = plan_bind(&t.host, &cfg, &inv, &Selection::All).unwrap();
    assert_eq!(plan.stop_units, [P]);
    let mut j = Journal::open(&t.host).unwrap();
    let d = Daemon::new(&t);
    let (again, stopped) = free_then_replan(&mut j, &d, &plan.stop_units, || replan(&t)).unwrap();
    assert_eq!(stopped, [P]);
    assert!(again.items.iter().any(|i| i.changes), "{again:?}");
    assert!(again.stop_units.is_empty());
    let e = j.find(STOP_KIND, P).expect("journaled");
    assert_eq!(e.state, crate::journal::EntryState::Applied);
}

#[test]
fn a_holder_left_after_the_stop_refuses_and_starts_the_unit_again() {
    let t = host();
    let mut j = Journal::open(&t.host).unwrap();
    let mut d = Daemon::new(&t);
    d.keeps_holding = true;
    let err = free_then_replan(&mut j, &d, &[P.to_string()], || replan(&t)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, FreeError::StillHeld { .. })
            && msg.contains(P)
            && msg.contains("pid 1111")
            && msg.contains("started again"),
        "{msg}"
    );
    assert_eq!(
        *d.calls.borrow(),
        [format!("stop {P}"), format!("start {P}")]
    );
    assert!(j.entries().is_empty(), "{:?}", j.entries());
}

#[test]
fn a_denied_stop_refuses_naming_the_unit_and_changes_nothing() {
    let t = host();
    let mut j = Journal::open(&t.host).unwrap();
    let mut d = Daemon::new(&t);
    d.deny = true;
    let units = [P.to_string(), "nvidia-fabricmanager.service".to_string()];
    let err = free_then_replan(&mut j, &d, &units, || replan(&t)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(P) && msg.contains("nvidia-fabricmanager.service") && msg.contains("refused"),
        "{msg}"
    );
    assert!(j.entries().is_empty());
    assert!(t.path("/proc/1111/fd/3").symlink_metadata().is_ok());
}

/// Stops the unit through `free_then_replan` (as `gpu bind --stop-services` does), so the
/// journal holds its entry.
fn stopped_for_a_bind(t: &Tree, j: &mut Journal, d: &Daemon) {
    let (_, stopped) = free_then_replan(j, d, &[P.to_string()], || replan(t)).unwrap();
    assert_eq!(stopped, [P]);
}

/// A bind entry as `gpu bind` leaves it (the device on vfio-pci, nvidia to go back to).
fn bound(j: &mut Journal, address: &str) -> u64 {
    let was = serde_json::json!({ "driver": "nvidia", "driver_override": null });
    let now = serde_json::json!({ "driver": "vfio-pci", "driver_override": "vfio-pci" });
    let seq = j
        .begin(crate::gpu::vfio::BIND_KIND, address, &now, &was)
        .unwrap();
    j.applied(seq).unwrap();
    seq
}

#[test]
fn after_the_last_unbind_the_stopped_unit_is_started_and_its_entry_dropped() {
    let t = host();
    let mut j = Journal::open(&t.host).unwrap();
    let d = Daemon::new(&t);
    stopped_for_a_bind(&t, &mut j, &d);
    let a = bound(&mut j, "0000:3b:00.0");
    let b = bound(&mut j, "0000:3c:00.0");

    // One of two devices released: the unit stays stopped, nothing asked of the bus.
    j.forget(a).unwrap();
    assert_eq!(
        start_when_released(&mut j, &d),
        AfterUnbind::KeptStopped {
            units: vec![P.to_string()],
            bound: 1
        }
    );
    assert_eq!(*d.calls.borrow(), [format!("stop {P}")]);
    assert!(j.find(STOP_KIND, P).is_some());

    // The last one released: started, entry gone.
    j.forget(b).unwrap();
    assert_eq!(
        start_when_released(&mut j, &d),
        AfterUnbind::Started(vec![P.to_string()])
    );
    assert_eq!(
        *d.calls.borrow(),
        [format!("stop {P}"), format!("start {P}")]
    );
    assert!(j.entries().is_empty(), "{:?}", j.entries());
    // Nothing left to start: the bus is not called again.
    assert_eq!(start_when_released(&mut j, &d), AfterUnbind::NoneStopped);
    assert_eq!(d.calls.borrow().len(), 2);
}

/// A unit systemd will not start stays in the journal, for `cchost undo`.
#[test]
fn a_start_that_fails_keeps_the_entry_and_says_which_unit() {
    struct WontStart;
    impl Units for WontStart {
        fn active_state(&self, _: &str) -> Result<String, UnitError> {
            Ok("inactive".into())
        }
        fn stop(&self, _: &str) -> Result<(), UnitError> {
            Ok(())
        }
        fn start(&self, unit: &str) -> Result<(), UnitError> {
            Err(UnitError::Denied {
                unit: unit.into(),
                reason: "Access denied".into(),
            })
        }
    }
    let t = host();
    let mut j = Journal::open(&t.host).unwrap();
    let d = Daemon::new(&t);
    stopped_for_a_bind(&t, &mut j, &d);
    match start_when_released(&mut j, &WontStart) {
        AfterUnbind::StartFailed(msg) => assert!(msg.contains(P), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(j.find(STOP_KIND, P).is_some());
}
