//! `[[cc.modes]]` at start: a mixed node of eight H100s, four to CC on and four to off,
//! through the real opening checks, switch and journal, with the FSP simulator behind
//! `Bar0` (support/sim_opener.rs). The refusals leave every GPU as it was.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use cchost::config::Config;
use cchost::daemon::cc_on_start::set_modes;
use cchost::fixture::{FixtureHost, PciSpec};
use cchost::gpu::cc::journaled::CC_KIND;
use cchost::gpu::cc::sim::{SimConfig, SimGpu};
use cchost::gpu::cc::switch::{self, Status};
use cchost::gpu::cc::{CcMode, Family, TargetMode};
use cchost::host::HostRoot;
use cchost::journal::Journal;

use crate::support::sim_opener::{SimOpener, fast};

use crate::support::sim_opener::HGX_GPUS as GPUS;

struct Node {
    _dir: tempfile::TempDir,
    host: HostRoot,
    sims: HashMap<String, SimGpu>,
}

/// Eight idle H100s on vfio-pci, NUMA node 0 and 1; the two given start in CC on.
fn node(start_on: &[&str]) -> Node {
    node_with(start_on, None)
}

/// As [`node`], with the GPU `nvidia` (if any) bound to the nvidia driver.
fn node_with(start_on: &[&str], nvidia: Option<&str>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut fx = FixtureHost::new(dir.path());
    let mut sims = HashMap::new();
    for (i, a) in GPUS.iter().enumerate() {
        fx = fx.pci(
            PciSpec::h100_sxm5(a)
                .driver(if nvidia == Some(*a) {
                    "nvidia"
                } else {
                    "vfio-pci"
                })
                .group(20 + i as u32)
                .numa((i / 4) as u32),
        );
        let sim =
            SimGpu::new(SimConfig::new(Family::Hopper).reset_delay(Duration::from_millis(20)));
        if start_on.contains(a) {
            let d = sim.device(*a, fast());
            assert_eq!(
                switch::set_cc_all(&[&d], TargetMode::On)[0].status,
                Status::Switched
            );
        }
        sims.insert(a.to_string(), sim);
    }
    let host = fx.build().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    Node {
        _dir: dir,
        host,
        sims,
    }
}

fn config(text: &str) -> Config {
    Config::from_toml(text, Path::new("c.toml")).unwrap()
}

const FOUR_AND_FOUR: &str =
    "[[cc.modes]]\nmode = \"on\"\ncount = 4\n[[cc.modes]]\nmode = \"off\"\ncount = 4\n";

fn modes(n: &Node) -> Vec<CcMode> {
    GPUS.iter()
        .map(|a| n.sims[*a].device(*a, fast()).query().unwrap().mode.unwrap())
        .collect()
}

fn cc_entries(j: &Journal) -> usize {
    j.entries().iter().filter(|e| e.kind == CC_KIND).count()
}

#[test]
fn four_of_eight_switch_to_cc_and_the_rest_to_off() {
    // Two of the "off" half start in CC on, so both directions are exercised.
    let n = node(&["0000:9a:00.0", "0000:ab:00.0"]);
    let opener = SimOpener(n.sims.clone());
    let cfg = config(FOUR_AND_FOUR);
    let mut journal = Journal::open(&n.host).unwrap();
    let done = set_modes(&n.host, &mut journal, &cfg, true, &opener);
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    use CcMode::{Off, On};
    assert_eq!(modes(&n), [On, On, On, On, Off, Off, Off, Off]);
    let status: HashMap<&str, Status> = done
        .outcomes
        .iter()
        .map(|o| (o.device.as_str(), o.status))
        .collect();
    for a in &GPUS[..6] {
        assert_eq!(status[a], Status::Switched, "{a}: {:?}", done.outcomes);
    }
    for a in &GPUS[6..] {
        assert_eq!(status[a], Status::Unchanged, "{a} was already off");
        assert_eq!(
            n.sims[*a].resets(),
            0,
            "{a} already in its mode is not reset"
        );
        assert_eq!(n.sims[*a].knob_writes(), 0, "{a}: no knob written");
    }
    assert_eq!(cc_entries(&journal), 6, "one entry per switched GPU");

    // The next start finds every GPU in its mode: nothing switched, nothing journaled.
    let again = set_modes(&n.host, &mut journal, &cfg, true, &opener);
    assert!(
        again.outcomes.iter().all(|o| o.status == Status::Unchanged),
        "{:?}",
        again.outcomes
    );
    assert_eq!(cc_entries(&journal), 6);
}

/// A GPU another driver holds is refused and left as it is; the others still switch.
#[test]
fn a_gpu_on_another_driver_is_left_and_the_rest_switch() {
    let held = GPUS[1];
    let n = node_with(&[], Some(held));
    let opener = SimOpener(n.sims.clone());
    let mut journal = Journal::open(&n.host).unwrap();
    let done = set_modes(&n.host, &mut journal, &config(FOUR_AND_FOUR), true, &opener);
    assert_eq!(done.refused.len(), 1, "{:?}", done.refused);
    assert!(
        done.refused[0].starts_with(held) && done.refused[0].contains("nvidia"),
        "{:?}",
        done.refused
    );
    use CcMode::{Off, On};
    assert_eq!(modes(&n), [On, Off, On, On, Off, Off, Off, Off]);
    assert_eq!(n.sims[held].resets(), 0);
    assert_eq!(cc_entries(&journal), 3);
}

#[test]
fn numa_selectors_pick_the_halves() {
    let n = node(&[]);
    let opener = SimOpener(n.sims.clone());
    let cfg = config("[cc]\nmodes = [{ mode = \"off\", numa = 0 }, { mode = \"on\", numa = 1 }]\n");
    let mut journal = Journal::open(&n.host).unwrap();
    let done = set_modes(&n.host, &mut journal, &cfg, true, &opener);
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    use CcMode::{Off, On};
    assert_eq!(modes(&n), [Off, Off, Off, Off, On, On, On, On]);
}

#[test]
fn refusals_switch_nothing() {
    use CcMode::{Off, On};
    // No CPU TEE: a GPU in CC mode would be useless, and nothing is switched.
    let n = node(&["0000:9a:00.0"]);
    let opener = SimOpener(n.sims.clone());
    let mut journal = Journal::open(&n.host).unwrap();
    let done = set_modes(
        &n.host,
        &mut journal,
        &config(FOUR_AND_FOUR),
        false,
        &opener,
    );
    assert!(done.outcomes.is_empty(), "{:?}", done.outcomes);
    assert!(done.refused[0].contains("no CPU TEE"), "{:?}", done.refused);
    assert_eq!(modes(&n), [Off, Off, Off, Off, On, Off, Off, Off]);

    // More GPUs asked for than the host has.
    let done = set_modes(
        &n.host,
        &mut journal,
        &config(
            "[[cc.modes]]\nmode = \"on\"\ncount = 4\n[[cc.modes]]\nmode = \"off\"\ncount = 5\n",
        ),
        true,
        &opener,
    );
    assert!(done.outcomes.is_empty());
    assert!(
        done.refused[0].contains("asks for 5 GPUs, but only 4"),
        "{:?}",
        done.refused
    );
    assert_eq!(cc_entries(&journal), 0);

    // A board in Protected PCIe: per-GPU modes would leave it half PPCIe.
    let d = n.sims[GPUS[2]].device(GPUS[2], fast());
    assert_eq!(switch::set_ppcie_all(&[&d], true).status, Status::Switched);
    let done = set_modes(&n.host, &mut journal, &config(FOUR_AND_FOUR), true, &opener);
    assert!(done.outcomes.is_empty(), "{:?}", done.outcomes);
    assert!(
        done.refused
            .iter()
            .any(|r| r.contains("Protected PCIe") && r.contains(GPUS[2])),
        "{:?}",
        done.refused
    );
    assert_eq!(cc_entries(&journal), 0);
    assert_eq!(
        n.sims[GPUS[2]]
            .device(GPUS[2], fast())
            .query()
            .unwrap()
            .ppcie,
        Some(true)
    );
}
