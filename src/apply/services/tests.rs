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
    t.file("/proc/sys/kernel/osrelease", "6.8.0-test\n").file(
        "/lib/modules/6.8.0-test/modules.alias",
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n",
    );
    t.pci(
        &PciSpec::new("0000:3b:00.0", 0x10de, 0x2330, 0x030200)
            .driver("nvidia")
            .group(1),
    )
    .file(
        "/proc/driver/nvidia/gpus/0000:3b:00.0/information",
        "Device Minor: \t 0\n",
    )
    .file("/proc/1111/comm", "nvidia-persiste\n")
    .link("/proc/1111/fd/3", "/dev/nvidia0");
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
