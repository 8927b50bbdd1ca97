//! `cc.follow_label`: the node's CC mode from `nvidia.com/cc.mode`, applied through the
//! real opening checks, journal and switch code to an HGX board (8 H100s + 4 NVSwitches
//! on vfio-pci) whose BAR0s are the register-level FSP simulator (tests/support).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::sim_opener::{SimOpener, fast};
use cchost::config::{Config, RequestedMode};
use cchost::daemon::cc_label::Applier;
use cchost::fixture::{FixtureHost, PciSpec};
use cchost::gpu::cc::node_mode::NodeMode;
use cchost::gpu::cc::sim::{SimConfig, SimGpu};
use cchost::gpu::cc::{CcMode, CcState, Family, TargetMode};
use cchost::host::HostRoot;
use cchost::inventory::facts::NodeFacts;
use cchost::labels::cc_mode::{CcModeCache, NotAsked, SharedCcModes};
use cchost::labels::compute;
use cchost::labels::compute::{NV_CC_MODE_STATE, NV_CC_READY_STATE};

use crate::support::sim_opener::HGX_GPUS as GPUS;
const SWITCHES: [&str; 4] = [
    "0000:05:00.0",
    "0000:06:00.0",
    "0000:07:00.0",
    "0000:08:00.0",
];

struct Board {
    dir: tempfile::TempDir,
    host: HostRoot,
    sims: HashMap<String, SimGpu>,
}

/// The board; `nvidia_bound` GPUs are on the nvidia driver (cchost may not switch them).
fn board(nvidia_bound: &[&str]) -> Board {
    let dir = tempfile::tempdir().unwrap();
    let mut fx = FixtureHost::new(dir.path());
    let mut sims = HashMap::new();
    for (i, a) in GPUS.iter().enumerate() {
        let driver = if nvidia_bound.contains(a) {
            "nvidia"
        } else {
            "vfio-pci"
        };
        fx = fx.pci(PciSpec::h100_sxm5(a).driver(driver).group(10 + i as u32));
        sims.insert(a.to_string(), sim(Family::Hopper));
    }
    for (i, a) in SWITCHES.iter().enumerate() {
        fx = fx.pci(
            PciSpec::nvswitch_ls10(a)
                .driver("vfio-pci")
                .group(30 + i as u32),
        );
        sims.insert(a.to_string(), sim(Family::Ls10));
    }
    let host = fx.build().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    Board { dir, host, sims }
}

fn sim(f: Family) -> SimGpu {
    SimGpu::new(SimConfig::new(f).reset_delay(Duration::from_millis(5)))
}

impl Board {
    fn state(&self, a: &str) -> CcState {
        self.sims[a].device(a, fast()).query().unwrap()
    }

    fn applier(&self, tee_on: bool, default: RequestedMode) -> (Arc<Applier>, SharedCcModes) {
        let mut config = Config::default();
        config.cc.follow_label = true;
        config.cc.default_mode = default;
        let modes = SharedCcModes::default();
        let a = Arc::new(Applier {
            host: self.host.clone(),
            config: Arc::new(config),
            tee_on,
            opener: Arc::new(SimOpener(self.sims.clone())),
            modes: modes.clone(),
            retry: Duration::from_millis(50),
        });
        (a, modes)
    }

    fn resets(&self) -> u64 {
        self.sims.values().map(SimGpu::resets).sum()
    }

    /// Rebinds a GPU's `driver` link to vfio-pci: it became free.
    fn free(&self, a: &str) {
        let dev =
            std::fs::canonicalize(self.dir.path().join("sys/bus/pci/devices").join(a)).unwrap();
        let link = dev.join("driver");
        let target = std::fs::read_link(&link).unwrap();
        let new = Path::new(&target).with_file_name("vfio-pci");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(new, &link).unwrap();
    }

    /// The labels as the labeler shows them from the shared mode cache (no GPU is read
    /// directly here, so what shows is what the switches verified).
    fn labels(&self, modes: &SharedCcModes) -> compute::NodeLabels {
        let cfg = Config::default();
        let inv = cchost::inventory::Inventory::collect(&self.host, &cfg);
        let mut facts = NodeFacts::from_inventory(&inv);
        let not_now = |_: &_, _| Err(NotAsked::Busy("test: read from the cache".into()));
        modes
            .lock()
            .unwrap()
            .fill(&self.host, &cfg.matching, &mut facts, &not_now);
        compute::compute(&facts, &cfg.labels)
    }
}

fn label<'a>(l: &'a compute::NodeLabels, k: &str) -> Option<&'a str> {
    l.labels.get(k).map(String::as_str)
}

#[test]
fn ppcie_then_cc_on_leaves_no_nvswitch_in_ppcie() {
    let b = board(&[]);
    let (app, modes) = b.applier(true, RequestedMode::Keep);

    let r = app.apply_once(Some("ppcie")).expect("applied");
    assert!(r.done(), "{r:?}");
    for a in GPUS.iter().chain(&SWITCHES) {
        assert_eq!(b.state(a).ppcie, Some(true), "{a} in PPCIe");
    }
    let l = b.labels(&modes);
    assert_eq!(label(&l, NV_CC_MODE_STATE), Some("ppcie"));

    let r = app.apply_once(Some("on")).expect("applied");
    assert!(r.done(), "{r:?}");
    let cleared = r.ppcie_cleared.as_ref().expect("PPCIe was cleared first");
    assert_eq!(cleared.devices.len(), GPUS.len() + SWITCHES.len());
    for a in SWITCHES {
        assert_eq!(b.state(a).ppcie, Some(false), "NVSwitch {a} left in PPCIe");
    }
    for a in GPUS {
        let s = b.state(a);
        assert_eq!((s.mode, s.ppcie), (Some(CcMode::On), Some(false)), "{a}");
    }
    let l = b.labels(&modes);
    assert_eq!(label(&l, NV_CC_MODE_STATE), Some("on"));
    assert_eq!(label(&l, NV_CC_READY_STATE), Some("true"));

    // The same label again: nothing to do, nothing reset.
    let before = b.resets();
    assert!(app.apply_once(Some("on")).unwrap().done());
    assert_eq!(b.resets(), before);
}

#[test]
fn no_cpu_tee_refuses_on_and_ppcie_and_a_default_on_becomes_off() {
    let b = board(&[]);
    let (app, _) = b.applier(false, RequestedMode::On);
    assert!(app.apply_once(Some("on")).is_none());
    assert!(app.apply_once(Some("ppcie")).is_none());
    assert_eq!(b.resets(), 0, "nothing switched");
    // No label: the default `on` is turned into `off` (cc-manager's override), which the
    // GPUs already are.
    let r = app.apply_once(None).expect("applied");
    assert_eq!(r.wanted, NodeMode::Cc(TargetMode::Off));
    assert!(r.done(), "{r:?}");
    assert_eq!(b.resets(), 0);
}

#[test]
fn a_busy_gpu_is_reported_labelled_and_switched_once_free() {
    let busy = GPUS[3];
    let b = board(&[busy]);
    let (app, modes) = b.applier(true, RequestedMode::Keep);
    let r = app.apply_once(Some("on")).expect("applied");
    assert!(!r.done());
    assert_eq!(r.busy.len(), 1, "{:?}", r.busy);
    assert!(
        r.busy[0].starts_with(busy) && r.busy[0].contains("nvidia"),
        "{:?}",
        r.busy
    );
    assert_eq!(
        b.state(busy).mode,
        Some(CcMode::Off),
        "the busy GPU is not touched"
    );
    for a in GPUS.iter().filter(|a| **a != busy) {
        assert_eq!(b.state(a).mode, Some(CcMode::On), "{a}");
    }
    let l = b.labels(&modes);
    assert_eq!(label(&l, "cchost.io/cc.mode.pending"), Some("on"));
    // The busy GPU's mode was never read: the node state is not claimed.
    assert_eq!(label(&l, NV_CC_MODE_STATE), None);

    b.free(busy);
    let r = app.apply_once(Some("on")).expect("applied");
    assert!(r.done(), "{r:?}");
    assert_eq!(b.state(busy).mode, Some(CcMode::On));
    let l = b.labels(&modes);
    assert_eq!(label(&l, "cchost.io/cc.mode.pending"), None);
    assert_eq!(label(&l, NV_CC_MODE_STATE), Some("on"));
}

#[test]
fn ppcie_is_all_or_nothing_with_a_busy_device() {
    let b = board(&[GPUS[0]]);
    let (app, _) = b.applier(true, RequestedMode::Keep);
    let r = app.apply_once(Some("ppcie")).expect("applied");
    assert!(!r.done());
    assert!(r.ppcie.is_none(), "nothing staged: {r:?}");
    assert_eq!(b.resets(), 0);
    for a in SWITCHES {
        assert_eq!(b.state(a).ppcie, Some(false), "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_changes_drive_the_switches_and_busy_devices_are_retried() {
    let busy = GPUS[5];
    let b = board(&[busy]);
    let (app, _) = b.applier(true, RequestedMode::Off);
    let (tx, rx) = tokio::sync::watch::channel::<Option<String>>(None);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(app.clone().run(rx, stop));
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        for _ in 0..500 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}");
    };

    // Nothing is applied before the Node's first read arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.resets(), 0);
    tx.send_replace(Some("on".into()));
    let on = |a: &str| b.state(a).mode == Some(CcMode::On);
    tokio::task::block_in_place(|| {
        wait("the free GPUs to go on", &|| {
            GPUS.iter().filter(|a| **a != busy).all(|a| on(a))
        })
    });
    assert!(!on(busy));
    // Freed: the periodic retry switches it without a new label event.
    b.free(busy);
    tokio::task::block_in_place(|| wait("the freed GPU to go on", &|| on(busy)));
    // The label removed: the default (off) applies.
    tx.send_replace(None);
    tokio::task::block_in_place(|| {
        wait("every GPU to go off", &|| {
            GPUS.iter().all(|a| b.state(a).mode == Some(CcMode::Off))
        })
    });
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let _ = CcModeCache::default();
}
