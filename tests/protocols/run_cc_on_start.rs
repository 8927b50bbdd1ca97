//! `cc.mode_on_start`: what `cchost run` does at start, through the same opening checks
//! and journal as `cchost gpu cc set`, with an `Opener` that hands out the FSP simulator
//! instead of an mmap of `resource0` (everything above `Bar0` is the real code).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use cchost::config::Config;
use cchost::daemon::cc_on_start::set_mode;
use cchost::fixture::{FixtureHost, PciSpec};
use cchost::gpu::cc::journaled::CC_KIND;

use crate::support::sim_opener::{SimOpener, fast};
use cchost::gpu::cc::sim::{SimConfig, SimGpu};
use cchost::gpu::cc::switch::Status;
use cchost::gpu::cc::{CcMode, Family, TargetMode};
use cchost::journal::Journal;

const ON_VFIO: [&str; 2] = ["0000:3b:00.0", "0000:5d:00.0"];
const ON_NVIDIA: &str = "0000:9a:00.0";

#[test]
fn run_switches_idle_vfio_gpus_and_leaves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut fx = FixtureHost::new(dir.path());
    let mut sims = HashMap::new();
    for (i, a) in ON_VFIO.iter().chain([&ON_NVIDIA]).enumerate() {
        let driver = if *a == ON_NVIDIA {
            "nvidia"
        } else {
            "vfio-pci"
        };
        fx = fx.pci(PciSpec::h100_sxm5(a).driver(driver).group(10 + i as u32));
        sims.insert(
            a.to_string(),
            SimGpu::new(SimConfig::new(Family::Hopper).reset_delay(Duration::from_millis(20))),
        );
    }
    let host = fx.build().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    let opener = SimOpener(sims.clone());
    let mode = |a: &str| sims[a].device(a, fast()).query().unwrap().mode.unwrap();
    let config = Config::default();

    let mut journal = Journal::open(&host).unwrap();
    let done = set_mode(&host, &mut journal, &config, TargetMode::On, &opener);
    let statuses: Vec<(String, Status)> = done
        .outcomes
        .iter()
        .map(|o| (o.device.clone(), o.status))
        .collect();
    assert_eq!(
        statuses,
        ON_VFIO
            .iter()
            .map(|a| (a.to_string(), Status::Switched))
            .collect::<Vec<_>>()
    );
    assert_eq!(done.refused.len(), 1, "{:?}", done.refused);
    assert!(
        done.refused[0].starts_with(ON_NVIDIA) && done.refused[0].contains("nvidia"),
        "{:?}",
        done.refused
    );
    for a in ON_VFIO {
        assert_eq!(mode(a), CcMode::On, "{a}");
    }
    assert_eq!(
        mode(ON_NVIDIA),
        CcMode::Off,
        "the nvidia-bound GPU is not touched"
    );
    let entries = |j: &Journal| j.entries().iter().filter(|e| e.kind == CC_KIND).count();
    assert_eq!(entries(&journal), 2, "one journal entry per switched GPU");

    // The next start finds them in the mode: nothing is switched, nothing journaled.
    let again = set_mode(&host, &mut journal, &config, TargetMode::On, &opener);
    assert!(
        again.outcomes.iter().all(|o| o.status == Status::Unchanged),
        "{:?}",
        again.outcomes
    );
    assert_eq!(entries(&journal), 2);
}
