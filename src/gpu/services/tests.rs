use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;
use crate::journal::{self, Journal};

/// What a fake unit does when asked to stop.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OnStop {
    Stops,
    Denies,
    /// Stays active: the wait runs out.
    Hangs,
    /// Half way: deactivating when the wait runs out.
    Deactivating,
}

#[derive(Default)]
struct Fake {
    state: RefCell<BTreeMap<String, String>>,
    on_stop: RefCell<BTreeMap<String, OnStop>>,
    calls: RefCell<Vec<String>>,
}

impl Fake {
    fn unit(self, name: &str, state: &str, on_stop: OnStop) -> Self {
        self.state.borrow_mut().insert(name.into(), state.into());
        self.on_stop.borrow_mut().insert(name.into(), on_stop);
        self
    }
    fn state(&self, name: &str) -> String {
        self.state.borrow().get(name).cloned().unwrap_or_default()
    }
}

impl Units for Fake {
    fn active_state(&self, unit: &str) -> Result<String, UnitError> {
        Ok(self.state(unit))
    }
    fn stop(&self, unit: &str) -> Result<(), UnitError> {
        self.calls.borrow_mut().push(format!("stop {unit}"));
        let how = self.on_stop.borrow().get(unit).copied();
        let set = |s: &str| self.state.borrow_mut().insert(unit.into(), s.into());
        match how {
            Some(OnStop::Stops) => {
                set("inactive");
                Ok(())
            }
            Some(OnStop::Denies) => Err(UnitError::Denied {
                unit: unit.into(),
                reason: "org.freedesktop.DBus.Error.AccessDenied".into(),
            }),
            Some(OnStop::Hangs) => Err(UnitError::Timeout {
                unit: unit.into(),
                state: "active".into(),
                waited_ms: 10,
            }),
            Some(OnStop::Deactivating) | None => {
                set("deactivating");
                Err(UnitError::Timeout {
                    unit: unit.into(),
                    state: "deactivating".into(),
                    waited_ms: 10,
                })
            }
        }
    }
    fn start(&self, unit: &str) -> Result<(), UnitError> {
        self.calls.borrow_mut().push(format!("start {unit}"));
        self.state.borrow_mut().insert(unit.into(), "active".into());
        Ok(())
    }
}

const P: &str = "nvidia-persistenced.service";

fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(dir.path()).unwrap();
    let j = Journal::open(&host).unwrap();
    (dir, j)
}

#[test]
fn the_daemons_are_known_by_their_cut_process_names() {
    assert_eq!(unit_of_comm("nvidia-persiste"), Some(P));
    assert_eq!(
        unit_of_comm("nv-fabricmanage"),
        Some("nvidia-fabricmanager.service")
    );
    assert_eq!(unit_of_comm("python3"), None);
    assert_eq!(unit_of_comm("nvidia-smi"), None);
}

#[test]
fn a_running_unit_is_stopped_after_its_entry_is_written() {
    let (_d, mut j) = journal();
    let fake = Fake::default().unit(P, "active", OnStop::Stops);
    assert!(stop_journaled(&mut j, &fake, P).unwrap());
    assert_eq!(fake.state(P), "inactive");
    let e = j.find(STOP_KIND, P).expect("journaled");
    assert_eq!(e.state, journal::EntryState::Applied);
    assert_eq!(e.restore_as::<UnitStop>().unwrap().unit, P);
}

#[test]
fn a_unit_already_down_is_neither_stopped_nor_journaled() {
    let (_d, mut j) = journal();
    let fake = Fake::default().unit(P, "inactive", OnStop::Stops);
    assert!(!stop_journaled(&mut j, &fake, P).unwrap());
    assert!(fake.calls.borrow().is_empty());
    assert!(j.entries().is_empty());
}

#[test]
fn a_refused_or_hung_stop_leaves_the_unit_running_and_the_journal_clean() {
    for how in [OnStop::Denies, OnStop::Hangs, OnStop::Deactivating] {
        let (_d, mut j) = journal();
        let fake = Fake::default().unit(P, "active", how);
        let err = stop_journaled(&mut j, &fake, P).unwrap_err();
        assert!(err.to_string().contains(P), "{how:?}: {err}");
        assert!(j.entries().is_empty(), "{how:?}: {:?}", j.entries());
        assert_eq!(fake.state(P), "active", "{how:?}");
        // Started again only when it got as far as deactivating.
        let started = fake.calls.borrow().iter().any(|c| c.starts_with("start"));
        assert_eq!(started, how == OnStop::Deactivating, "{how:?}");
    }
}

thread_local! {
    static UNDO_FAKE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct Recording;
impl Units for Recording {
    fn active_state(&self, _: &str) -> Result<String, UnitError> {
        Ok("inactive".into())
    }
    fn stop(&self, _: &str) -> Result<(), UnitError> {
        Ok(())
    }
    fn start(&self, unit: &str) -> Result<(), UnitError> {
        UNDO_FAKE.with(|c| c.borrow_mut().push(unit.to_string()));
        Ok(())
    }
}

struct NoBus;
impl Units for NoBus {
    fn active_state(&self, _: &str) -> Result<String, UnitError> {
        unreachable!()
    }
    fn stop(&self, _: &str) -> Result<(), UnitError> {
        unreachable!()
    }
    fn start(&self, _: &str) -> Result<(), UnitError> {
        Err(UnitError::NoBus {
            address: "unix:path=/nowhere".into(),
            reason: "No such file or directory".into(),
        })
    }
}

#[test]
fn undo_starts_exactly_the_units_that_were_stopped() {
    let (_d, mut j) = journal();
    let fake = Fake::default().unit(P, "active", OnStop::Stops).unit(
        "nvidia-fabricmanager.service",
        "inactive",
        OnStop::Stops,
    );
    stop_journaled(&mut j, &fake, P).unwrap();
    stop_journaled(&mut j, &fake, "nvidia-fabricmanager.service").unwrap();
    let r = ServiceRestorer {
        connect: |_| Box::new(Recording),
    };
    let done = journal::undo_all(&mut j, &[&r]).unwrap();
    assert_eq!(done.len(), 1);
    UNDO_FAKE.with(|c| assert_eq!(*c.borrow(), vec![P.to_string()]));
    assert!(j.entries().is_empty());
}

#[test]
fn undo_without_a_bus_keeps_the_entry_and_says_why() {
    let (_d, mut j) = journal();
    let fake = Fake::default().unit(P, "active", OnStop::Stops);
    stop_journaled(&mut j, &fake, P).unwrap();
    let r = ServiceRestorer {
        connect: |_| Box::new(NoBus),
    };
    let err = journal::undo_all(&mut j, &[&r]).unwrap_err().to_string();
    assert!(err.contains(P) && err.contains("no system bus"), "{err}");
    let e = j.find(STOP_KIND, P).expect("kept");
    assert_eq!(e.state, journal::EntryState::Applied);
}

#[test]
fn a_bus_socket_that_is_not_there_is_no_bus() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(dir.path()).unwrap();
    let bus = SystemBus::for_host(&host, Duration::from_millis(200));
    let err = bus.active_state(P).unwrap_err();
    assert!(
        matches!(err, UnitError::NoBus { .. }) && err.untouched(),
        "{err}"
    );
}
