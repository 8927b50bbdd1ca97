//! Supervision mode (b): the zbus calls to systemd, tested against a private
//! dbus-daemon with a small stand-in for systemd's Manager and Unit objects (not a real
//! systemd). The QGS probe goes to the stand-in QGS.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::dcap::{StandIn, tdx_root};
use crate::support::systemd::PrivateBus;
use cchost::config::DcapConfig;
use cchost::dcap::supervisor::{Reason, Settings, State};
use cchost::dcap::systemd::{self, Driver};
use cchost::host::HostRoot;
use tokio::sync::watch;
use zbus::zvariant::OwnedObjectPath;

const UNIT_PATH: &str = "/org/freedesktop/systemd1/unit/qgsd_2eservice";

#[derive(Default)]
struct Fake {
    active: String,
    calls: Vec<String>,
}

struct Manager(Arc<Mutex<Fake>>);
struct Unit(Arc<Mutex<Fake>>);

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn load_unit(&self, name: &str) -> zbus::fdo::Result<OwnedObjectPath> {
        self.0
            .lock()
            .unwrap()
            .calls
            .push(format!("LoadUnit {name}"));
        if name != "qgsd.service" {
            return Err(zbus::fdo::Error::Failed(format!("no unit {name}")));
        }
        Ok(OwnedObjectPath::try_from(UNIT_PATH).unwrap())
    }
    async fn restart_unit(&self, name: &str, mode: &str) -> zbus::fdo::Result<OwnedObjectPath> {
        let mut f = self.0.lock().unwrap();
        f.calls.push(format!("RestartUnit {name} {mode}"));
        f.active = "active".into();
        Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/42").unwrap())
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    async fn active_state(&self) -> String {
        self.0.lock().unwrap().active.clone()
    }
    #[zbus(property)]
    async fn sub_state(&self) -> String {
        let a = self.0.lock().unwrap().active.clone();
        if a == "active" {
            "running".into()
        } else {
            "dead".into()
        }
    }
    #[zbus(property)]
    async fn load_state(&self) -> String {
        "loaded".into()
    }
}

async fn until(rx: &mut watch::Receiver<State>, what: &str, pred: impl Fn(&State) -> bool) {
    loop {
        if pred(&rx.borrow_and_update()) {
            return;
        }
        if !matches!(
            tokio::time::timeout(Duration::from_secs(60), rx.changed()).await,
            Ok(Ok(()))
        ) {
            panic!("never reached: {what}; state {:?}", rx.borrow());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_qgsd_service_over_dbus() {
    let sockets = tempfile::tempdir().unwrap();
    let bus = PrivateBus::listen(&sockets.path().join("bus"));
    let fake = Arc::new(Mutex::new(Fake {
        active: "active".into(),
        calls: Vec::new(),
    }));
    let _server = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .serve_at("/org/freedesktop/systemd1", Manager(fake.clone()))
        .unwrap()
        .serve_at(UNIT_PATH, Unit(fake.clone()))
        .unwrap()
        .build()
        .await
        .unwrap();

    let root = tdx_root();
    let host = HostRoot::new(root.path()).unwrap();
    let qgs = StandIn::start(&root.path().join("var/run/tdx-qgs/qgs.socket"), &[]);

    let driver = Driver::connect(&bus.address).await.unwrap();
    let st = driver.state("qgsd.service").await.unwrap();
    assert_eq!(
        (st.load.as_str(), st.active.as_str(), st.sub.as_str()),
        ("loaded", "active", "running")
    );
    let err = driver.state("nope.service").await.unwrap_err().to_string();
    assert!(err.contains("no unit nope.service"), "{err}");

    let mut s = Settings::from_config(&DcapConfig::default());
    s.probe_interval = Duration::from_millis(100);
    s.probe_timeout = Duration::from_millis(500);
    s.probe_failures = 2;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state_tx, mut state) = watch::channel(State::default());
    let task = tokio::spawn(systemd::supervise(host, s, driver, stop_rx, state_tx));

    until(&mut state, "healthy probe", |s| {
        s.healthy && s.probes_ok >= 2
    })
    .await;
    assert!(
        !fake
            .lock()
            .unwrap()
            .calls
            .iter()
            .any(|c| c.starts_with("RestartUnit"))
    );

    // The unit failed: RestartUnit(qgsd.service, replace).
    fake.lock().unwrap().active = "failed".into();
    until(&mut state, "restart of a failed unit", |s| {
        s.last_reason == Some(Reason::UnitNotActive)
    })
    .await;
    assert!(
        fake.lock()
            .unwrap()
            .calls
            .contains(&"RestartUnit qgsd.service replace".to_string())
    );

    // The unit says active but QGS does not answer: restarted on failed probes.
    drop(qgs);
    until(&mut state, "restart on failed probes", |s| {
        s.last_reason == Some(Reason::ProbeFailed)
    })
    .await;
    let restarts = fake
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.starts_with("RestartUnit"))
        .count();
    assert!(restarts >= 2, "{:?}", fake.lock().unwrap().calls);

    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}
