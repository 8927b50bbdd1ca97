//! Journaled CC and PPCIe switches, `undo`, and recovery after a crash mid-switch,
//! against the FSP simulator. The devices are opened through `open_for_switch` (the
//! driver / in-use checks on a fixture sysfs) with an `Opener` that hands out the
//! simulator instead of an mmap of `resource0`; everything above `Bar0` is the code
//! `cchost gpu cc set` and `cchost undo` run.
//!
//! A crash is modelled by an observer that panics at the chosen step and at every later
//! step of any device: each switch thread stops there, without any clean-up, and only
//! what is on disk (the journal) and in the device (the simulator) survives.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::support::sim_opener::{SimOpener, fast};
use cchost::fixture::{FixtureHost, PciSpec};
use cchost::gpu::cc::journaled::{self, CC_KIND, CcRestorer};
use cchost::gpu::cc::live::{LiveDevice, open_for_switch};
use cchost::gpu::cc::sim::{SimConfig, SimGpu};
use cchost::gpu::cc::switch::{Status, SwitchStep};
use cchost::gpu::cc::{CcMode, Family, TargetMode};
use cchost::gpu::vfio::{BIND_KIND, Binding};
use cchost::host::HostRoot;
use cchost::host::pci::PciDevice;
use cchost::journal::{self, Entry, EntryState, Journal, Recovery, RestoreError, Restorer};

const GPU0: &str = "0000:3b:00.0";
const GPU1: &str = "0000:5d:00.0";
const SW0: &str = "0000:8a:00.0";
/// Knob IDs (docs/facts/gpu.md#cc-registers): CCM (CC on), PPCIe.
const CCM: u16 = 8;
const PPCIE: u16 = 45;

struct Rig {
    _dir: tempfile::TempDir,
    host: HostRoot,
    sims: HashMap<String, SimGpu>,
    opener: SimOpener,
}

impl Rig {
    /// H100s (and NVSwitches) on vfio-pci, each in its own IOMMU group, CC off.
    fn new(gpus: &[&str], switches: &[&str]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut fx = FixtureHost::new(dir.path());
        let mut sims = HashMap::new();
        for (i, a) in gpus.iter().enumerate() {
            fx = fx.pci(
                PciSpec::h100_sxm5(a)
                    .driver("vfio-pci")
                    .group(10 + i as u32),
            );
            sims.insert(a.to_string(), sim(Family::Hopper));
        }
        for (i, a) in switches.iter().enumerate() {
            fx = fx.pci(
                PciSpec::nvswitch_ls10(a)
                    .driver("vfio-pci")
                    .group(40 + i as u32),
            );
            sims.insert(a.to_string(), sim(Family::Ls10));
        }
        let host = fx.build().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let opener = SimOpener(sims.clone());
        Rig {
            _dir: dir,
            host,
            sims,
            opener,
        }
    }

    fn root(&self) -> &Path {
        self._dir.path()
    }

    fn sim(&self, a: &str) -> &SimGpu {
        &self.sims[a]
    }

    fn restorer(&self) -> CcRestorer<'_> {
        CcRestorer {
            opener: &self.opener,
        }
    }

    fn open(&self, addrs: &[&str]) -> Vec<LiveDevice> {
        addrs
            .iter()
            .map(|a| {
                let pci = self.host.pci_device(&a.parse().unwrap()).unwrap();
                let family = self.sim(a).family();
                open_for_switch(&self.host, &pci, family, &self.opener).unwrap()
            })
            .collect()
    }

    fn set_cc(
        &self,
        addrs: &[&str],
        mode: TargetMode,
        observe: journaled::StepObserver<'_>,
    ) -> Vec<Status> {
        let live = self.open(addrs);
        let devs: Vec<_> = live.iter().map(|l| (&l.pci, &l.device)).collect();
        let mut j = Journal::open(&self.host).unwrap();
        journaled::set_cc(&mut j, &devs, mode, observe)
            .into_iter()
            .map(|o| o.status)
            .collect()
    }

    fn entries(&self) -> Vec<Entry> {
        Journal::peek(&self.host).unwrap()
    }

    fn mode(&self, a: &str) -> CcMode {
        self.sim(a).device(a, fast()).query().unwrap().mode.unwrap()
    }

    /// What the next reset of the device would activate: nothing may be left pending.
    fn nothing_pending(&self, a: &str) {
        let before = self.sim(a).active_register();
        self.sim(a).reset_handle().reset().unwrap();
        self.sim(a).device(a, fast()).query().unwrap();
        assert_eq!(
            self.sim(a).active_register(),
            before,
            "{a}: a reset changed the active state: knobs were left pending"
        );
    }
}

fn sim(family: Family) -> SimGpu {
    SimGpu::new(SimConfig::new(family).reset_delay(Duration::from_millis(20)))
}

fn quiet(_: &str, _: SwitchStep) {}

#[test]
fn set_is_journaled_before_the_first_knob_and_undo_restores_the_mode() {
    let rig = Rig::new(&[GPU0], &[]);
    // When the knobs are being written, the entry is already on disk, `applying`, and
    // holds the mode read before.
    let journal_file = rig.root().join("var/lib/cchost/journal.json");
    let seen = std::sync::Mutex::new(Vec::new());
    let observe = |dev: &str, step: SwitchStep| {
        if step == SwitchStep::Staged {
            let text = std::fs::read_to_string(&journal_file).unwrap();
            seen.lock().unwrap().push(format!("{dev} {text}"));
        }
    };
    assert_eq!(
        rig.set_cc(&[GPU0], TargetMode::On, &observe),
        vec![Status::Switched]
    );
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].contains("\"applying\"") && seen[0].contains("\"gpu.cc\""),
        "{}",
        seen[0]
    );
    assert_eq!(rig.mode(GPU0), CcMode::On);

    let e = rig.entries();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].kind.as_str(), e[0].subject.as_str()), (CC_KIND, GPU0));
    assert_eq!(e[0].state, EntryState::Applied);
    assert_eq!(e[0].restore["before"]["mode"], "off");
    assert_eq!(e[0].change["setting"]["cc"], "on");

    // Setting the mode it already has changes nothing and journals nothing new.
    let resets = rig.sim(GPU0).resets();
    assert_eq!(
        rig.set_cc(&[GPU0], TargetMode::On, &quiet),
        vec![Status::Unchanged]
    );
    assert_eq!(rig.sim(GPU0).resets(), resets);
    assert_eq!(rig.entries(), e);

    // A second switch keeps the state before the *first* one.
    assert_eq!(
        rig.set_cc(&[GPU0], TargetMode::Devtools, &quiet),
        vec![Status::Switched]
    );
    let e = rig.entries();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].restore["before"]["mode"], "off");
    assert_eq!(e[0].change["setting"]["cc"], "devtools");

    // undo puts it back through the switch code: staged, reset, verified.
    let mut j = Journal::open(&rig.host).unwrap();
    let done = journal::undo_all(&mut j, &[&rig.restorer()]).unwrap();
    assert_eq!(done.len(), 1);
    drop(j);
    assert_eq!(rig.mode(GPU0), CcMode::Off);
    rig.nothing_pending(GPU0);
    assert!(rig.entries().is_empty());
}

#[test]
fn switching_back_to_the_original_mode_leaves_nothing_to_undo() {
    let rig = Rig::new(&[GPU0], &[]);
    rig.set_cc(&[GPU0], TargetMode::On, &quiet);
    assert_eq!(rig.entries().len(), 1);
    assert_eq!(
        rig.set_cc(&[GPU0], TargetMode::Off, &quiet),
        vec![Status::Switched]
    );
    assert!(rig.entries().is_empty());
}

#[test]
fn a_failed_switch_that_changed_nothing_leaves_no_entry_one_that_did_stays_for_undo() {
    let rig = Rig::new(&[GPU0, GPU1], &[]);
    // GPU0's firmware refuses in-band CC control (CCM_ALLOW_INB = 0): staging fails on
    // CCM after knobs 2/4/34/decoupler were written, and those are put back.
    rig.sim(GPU0).set_knob(7, 0);
    // GPU1 comes back from its reset in the invalid mode.
    rig.sim(GPU1)
        .inject(cchost::gpu::cc::sim::Fault::InvalidModeAfterReset);
    let st = rig.set_cc(&[GPU0, GPU1], TargetMode::On, &quiet);
    assert_eq!(st, vec![Status::Failed, Status::Failed]);
    let e = rig.entries();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].subject, GPU1);
    assert_eq!(e[0].state, EntryState::Applied);
    assert_eq!(rig.mode(GPU1), CcMode::Invalid);
    // undo restores the recorded mode (setting a mode fixes the invalid one).
    let mut j = Journal::open(&rig.host).unwrap();
    journal::undo_all(&mut j, &[&rig.restorer()]).unwrap();
    drop(j);
    assert_eq!(rig.mode(GPU1), CcMode::Off);
    rig.nothing_pending(GPU1);
}

/// An observer that "kills the process" at the `k`-th step: panics there and at every
/// later step of any device.
fn crash_at(k: u32) -> impl Fn(&str, SwitchStep) + Sync {
    let n = AtomicU32::new(0);
    move |dev: &str, step: SwitchStep| {
        if n.fetch_add(1, Ordering::SeqCst) + 1 >= k {
            std::panic::panic_any(format!("crash after {dev} {step:?}"));
        }
    }
}

fn recover(rig: &Rig) -> Vec<Option<Recovery>> {
    let mut j = Journal::open(&rig.host).unwrap();
    journal::recover(&mut j, &[&rig.restorer()])
        .unwrap()
        .into_iter()
        .map(|r| r.recovery)
        .collect()
}

#[test]
fn crash_after_each_step_of_a_switch_is_recovered_and_undone() {
    // Steps of one device: Journaled, Staged, Reset, Verified, Committed.
    let expect = [
        (1, Some(Recovery::RolledBack), CcMode::Off),
        (2, Some(Recovery::RolledBack), CcMode::Off),
        (3, Some(Recovery::Finished), CcMode::On),
        (4, Some(Recovery::Finished), CcMode::On),
        (5, None, CcMode::On),
    ];
    for (k, recovery, mode) in expect {
        let rig = Rig::new(&[GPU0], &[]);
        let observe = crash_at(k);
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rig.set_cc(&[GPU0], TargetMode::On, &observe)
        }));
        assert!(crashed.is_err(), "step {k}: no crash");
        let left = rig.entries();
        assert_eq!(left.len(), 1, "step {k}");
        let resets = rig.sim(GPU0).resets();
        let got = recover(&rig);
        assert_eq!(
            got,
            recovery.into_iter().map(Some).collect::<Vec<_>>(),
            "step {k}"
        );
        assert_eq!(rig.mode(GPU0), mode, "step {k}");
        if k == 2 {
            // Staged, never reset: the knobs are put back, no reset is needed...
            assert_eq!(rig.sim(GPU0).resets(), resets, "step {k}");
            assert_eq!(rig.sim(GPU0).pending_knob(CCM), Some(0), "step {k}");
        }
        // ...and nothing is left pending for a later reset (a VM start's FLR) to
        // activate, whichever way recovery went.
        rig.nothing_pending(GPU0);
        let e = rig.entries();
        if mode == CcMode::On {
            assert_eq!(e.len(), 1, "step {k}");
            assert_eq!(e[0].state, EntryState::Applied, "step {k}");
            let mut j = Journal::open(&rig.host).unwrap();
            journal::undo_all(&mut j, &[&rig.restorer()]).unwrap();
            drop(j);
            assert_eq!(rig.mode(GPU0), CcMode::Off, "step {k}");
        }
        assert!(rig.entries().is_empty(), "step {k}");
    }
}

#[test]
fn crash_mid_ppcie_switch_rolls_the_whole_board_back() {
    let rig = Rig::new(&[GPU0, GPU1], &[SW0]);
    let live = rig.open(&[GPU0, GPU1, SW0]);
    let devs: Vec<_> = live.iter().map(|l| (&l.pci, &l.device)).collect();
    let observe = crash_at(4); // a few devices journaled / staged, none reset
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut j = Journal::open(&rig.host).unwrap();
        journaled::set_ppcie(&mut j, &devs, true, &observe)
    }));
    assert!(crashed.is_err());
    assert!(!rig.entries().is_empty());
    recover(&rig);
    for a in [GPU0, GPU1, SW0] {
        assert_eq!(rig.sim(a).pending_knob(PPCIE), Some(0), "{a}");
        rig.nothing_pending(a);
        let st = rig.sim(a).device(a, fast()).query().unwrap();
        assert_eq!(st.ppcie, Some(false), "{a}");
    }
    assert!(rig.entries().is_empty());

    // A completed PPCIe switch is undone device by device.
    let mut j = Journal::open(&rig.host).unwrap();
    let r = journaled::set_ppcie(&mut j, &devs, true, &quiet);
    assert_eq!(r.status, Status::Switched);
    assert_eq!(j.entries().len(), 3);
    journal::undo_all(&mut j, &[&rig.restorer()]).unwrap();
    drop(j);
    for a in [GPU0, GPU1, SW0] {
        let st = rig.sim(a).device(a, fast()).query().unwrap();
        assert_eq!(st.ppcie, Some(false), "{a}");
        rig.nothing_pending(a);
    }
}

/// Stands in for the vfio restorer on the fixture (the real one is proven on a real
/// kernel in tests/real_kernel/vfio.rs): "rebinds" by re-pointing the `driver` link.
struct FakeVfio {
    root: PathBuf,
}

impl Restorer for FakeVfio {
    fn kind(&self) -> &str {
        BIND_KIND
    }
    fn restore(&self, host: &HostRoot, entry: &Entry) -> Result<(), RestoreError> {
        let want: Binding = entry.restore_as()?;
        let pci = host.pci_device(&entry.subject.parse().unwrap()).unwrap();
        relink(&self.root, &pci, want.driver.as_deref().unwrap());
        Ok(())
    }
}

fn relink(root: &Path, pci: &PciDevice, driver: &str) {
    let dev = root
        .join("sys/bus/pci/devices")
        .join(pci.address.to_string());
    let link = std::fs::canonicalize(&dev).unwrap().join("driver");
    let old = std::fs::read_link(&link).unwrap();
    let new = old.with_file_name(driver);
    std::fs::create_dir_all(root.join("sys/bus/pci/drivers").join(driver)).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(new, &link).unwrap();
}

#[test]
fn undo_goes_newest_first_so_the_cc_restore_runs_while_the_gpu_is_still_on_vfio() {
    let rig = Rig::new(&[GPU0], &[]);
    // cchost bound the GPU to vfio-pci (it was on nvidia), then switched CC on.
    let mut j = Journal::open(&rig.host).unwrap();
    let seq = j
        .begin(
            BIND_KIND,
            GPU0,
            Binding {
                driver: Some("vfio-pci".into()),
                driver_override: Some("vfio-pci".into()),
            },
            Binding {
                driver: Some("nvidia".into()),
                driver_override: None,
            },
        )
        .unwrap();
    j.applied(seq).unwrap();
    drop(j);
    rig.set_cc(&[GPU0], TargetMode::On, &quiet);
    let fake = FakeVfio {
        root: rig.root().to_path_buf(),
    };
    let mut j = Journal::open(&rig.host).unwrap();
    let done = journal::undo_all(&mut j, &[&fake, &rig.restorer()]).unwrap();
    drop(j);
    let kinds: Vec<&str> = done.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, vec![CC_KIND, BIND_KIND]);
    assert_eq!(rig.mode(GPU0), CcMode::Off);
    let pci = rig.host.pci_device(&GPU0.parse().unwrap()).unwrap();
    assert_eq!(pci.driver.as_deref(), Some("nvidia"));
}

#[test]
fn undo_refuses_a_gpu_now_bound_to_nvidia_and_keeps_the_entry() {
    let rig = Rig::new(&[GPU0], &[]);
    rig.set_cc(&[GPU0], TargetMode::On, &quiet);
    let pci = rig.host.pci_device(&GPU0.parse().unwrap()).unwrap();
    relink(rig.root(), &pci, "nvidia");
    let mut j = Journal::open(&rig.host).unwrap();
    let err = journal::undo_all(&mut j, &[&rig.restorer()])
        .unwrap_err()
        .to_string();
    drop(j);
    assert!(err.contains("bound to nvidia"), "{err}");
    assert_eq!(rig.mode(GPU0), CcMode::On);
    assert_eq!(rig.entries().len(), 1);
}
