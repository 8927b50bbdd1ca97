//! The inventory's verdicts and the readiness tree on every fixture host in
//! tests/host/ (trees laid out as the kernel shows them).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use cchost::check::{Profile, Report, Status, remedy};
use cchost::config::Config;
use cchost::host::HostRoot;
use cchost::inventory::{Blocker, GpuKind, Inventory, IommuMode, State};

fn inv(scenario: &str) -> Inventory {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/host")
        .join(scenario);
    let host = HostRoot::new(&root).unwrap();
    let inv = Inventory::collect(&host, &Config::default());
    assert!(inv.problems.is_empty(), "{scenario}: {:?}", inv.problems);
    assert!(
        inv.gpus.problems.is_empty(),
        "{scenario}: {:?}",
        inv.gpus.problems
    );
    inv
}

fn status(r: &Report, id: &str) -> Status {
    r.find(id)
        .unwrap_or_else(|| panic!("no {id}"))
        .outcome
        .status
}

#[test]
fn tdx_8xh100_4nvswitch() {
    let i = inv("tdx-8xh100-4nvswitch");
    assert!(i.tdx.verdict.is_yes());
    assert_eq!(i.tdx.keys, Some(31));
    assert_eq!(i.sev.snp.state, State::NotApplicable);
    assert_eq!(i.iommu.mode, IommuMode::Translated);
    assert_eq!(i.gpus.gpus().count(), 8);
    assert_eq!(i.gpus.nvswitches().count(), 4);
    assert!(
        i.gpus
            .gpus()
            .all(|g| g.cc_capable && g.chip.as_deref() == Some("GH100"))
    );
    assert!(
        i.gpus
            .nvswitches()
            .all(|s| s.ppcie_capable && s.chip.as_deref() == Some("LS10"))
    );
    let mut numa: Vec<u32> = i.gpus.devices.iter().filter_map(|d| d.numa_node).collect();
    numa.sort();
    numa.dedup();
    assert_eq!(numa, [0, 1]);
    let r = Report::new(&i, &Config::default(), Profile::Auto);
    assert_eq!(status(&r, "tdx.kvm"), Status::Pass);
    assert_eq!(status(&r, "gpu.iommu_group"), Status::Pass);
}

#[test]
fn snp_8xb200() {
    let i = inv("snp-8xb200");
    assert!(i.sev.snp.is_yes());
    assert_eq!(i.tdx.verdict.state, State::NotApplicable);
    assert_eq!(i.gpus.gpus().count(), 8);
    assert!(
        i.gpus
            .gpus()
            .all(|g| g.chip.as_deref() == Some("GB100") && g.cc_capable)
    );
    let r = Report::new(&i, &Config::default(), Profile::Auto);
    assert_eq!(r.resolved_profile, Some(Profile::Snp));
    assert_eq!(status(&r, "snp.kvm"), Status::Pass);
    assert_eq!(status(&r, "snp.iommu"), Status::Pass);
}

#[test]
fn snp_iommu_pt() {
    let i = inv("snp-iommu-pt");
    assert_eq!(i.sev.snp.state, State::No);
    assert_eq!(
        i.sev.snp.reason.as_deref(),
        Some(
            "SNP off: IOMMU in passthrough mode (iommu=pt on the kernel command line) disables SNP"
        )
    );
    assert_eq!(
        i.sev.snp.blocker,
        Some(Blocker::IommuPassthrough {
            argument: Some("iommu=pt".into())
        })
    );
    assert_eq!(
        remedy::of_verdict(&i.sev.snp, &i).as_deref(),
        Some("remove iommu=pt from the kernel command line and reboot")
    );
    assert_eq!(i.iommu.mode, IommuMode::Passthrough);
    let r = Report::new(&i, &Config::default(), Profile::Snp);
    assert!(!r.ready);
    assert_eq!(status(&r, "snp.iommu"), Status::Fail);
}

#[test]
fn tdx_module_failed() {
    let i = inv("tdx-module-failed");
    assert_eq!(i.tdx.verdict.state, State::No);
    assert!(
        i.tdx
            .verdict
            .reason
            .as_deref()
            .unwrap()
            .contains("initialization failed (-5)")
    );
    let r = Report::new(&i, &Config::default(), Profile::Tdx);
    assert_eq!(status(&r, "tdx.module"), Status::Fail);
    assert_eq!(status(&r, "tdx.keys"), Status::Skip);
}

#[test]
fn no_iommu() {
    let i = inv("no-iommu");
    assert_eq!(i.iommu.mode, IommuMode::Off);
    assert_eq!(i.iommu.present.state, State::No);
    assert!(i.gpus.devices.iter().all(|d| d.iommu_group.is_none()));
    let r = Report::new(&i, &Config::default(), Profile::Auto);
    assert_eq!(status(&r, "iommu.firmware"), Status::Fail);
    assert_eq!(status(&r, "gpu.iommu_group"), Status::Fail);
}

#[test]
fn workstation_bootvga() {
    let i = inv("workstation-bootvga");
    let vga: Vec<_> = i.gpus.devices.iter().filter(|d| d.boot_vga).collect();
    assert_eq!(vga.len(), 1);
    assert_eq!(vga[0].address.to_string(), "0000:01:00.0");
    assert!(
        i.gpus
            .devices
            .iter()
            .any(|d| !d.boot_vga && d.chip.as_deref() == Some("GH100"))
    );
    let r = Report::new(&i, &Config::default(), Profile::Auto);
    assert_eq!(status(&r, "gpu.boot_vga"), Status::Warn);
}

#[test]
fn gpus_on_vfio() {
    let i = inv("gpus-on-vfio");
    assert_eq!(i.gpus.gpus().count(), 4);
    assert!(
        i.gpus
            .gpus()
            .all(|g| g.is_on_vfio() && g.kind == GpuKind::Gpu)
    );
    let r = Report::new(&i, &Config::default(), Profile::Auto);
    assert_eq!(status(&r, "gpu.vfio_bound"), Status::Pass);
}

#[test]
fn tdx_module_version_is_reported_when_the_kernel_shows_it() {
    let i = inv("tdx-8xh100-4nvswitch");
    assert_eq!(
        i.tdx.module_version.as_deref(),
        Some("1.5 build 698 (20240129)")
    );
    let r = Report::new(&i, &Config::default(), Profile::Auto);
    let m = &r.find("tdx.module").expect("tdx.module").outcome;
    assert_eq!(m.status, Status::Pass);
    assert!(m.message.contains("version 1.5 build 698"), "{}", m.message);
    // A log without the line: no version claimed.
    assert_eq!(inv("gpus-on-vfio").tdx.module_version, None);
}

/// Every committed host, built (tests/host/) and captured (tests/host-captured/).
fn every_fixture_host() -> Vec<std::path::PathBuf> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut hosts = Vec::new();
    for dir in ["host", "host-captured"] {
        for e in std::fs::read_dir(base.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                hosts.push(p);
            }
        }
    }
    hosts.sort();
    assert!(hosts.len() >= 8, "{hosts:?}");
    hosts
}

/// Counts the verdict-shaped objects (`state` and `evidence`) in the inventory's JSON.
fn verdicts_in_json(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(m) => {
            usize::from(m.contains_key("state") && m.contains_key("evidence"))
                + m.values().map(verdicts_in_json).sum::<usize>()
        }
        serde_json::Value::Array(a) => a.iter().map(verdicts_in_json).sum(),
        _ => 0,
    }
}

/// The inventory says what blocks every `no` (and nothing blocks any other answer);
/// check turns each blocker into a remedy, which `cchost inventory` shows.
#[test]
fn every_no_verdict_on_every_fixture_host_has_a_blocker() {
    let mut nos = 0;
    for root in every_fixture_host() {
        let host = HostRoot::new(&root).unwrap();
        let mut i = Inventory::collect(&host, &Config::default());
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(
            verdicts_in_json(&json),
            i.verdicts().len(),
            "{}: Inventory::verdicts misses one",
            root.display()
        );
        for (name, v) in i.verdicts() {
            assert_eq!(
                v.state == State::No,
                v.blocker.is_some(),
                "{} {name}: {v:?}",
                root.display()
            );
            assert!(v.remedy.is_none(), "the inventory writes no remedy text");
            nos += usize::from(v.state == State::No);
        }
        remedy::annotate(&mut i);
        for (name, v) in i.verdicts() {
            let r = v.remedy.as_deref().unwrap_or_default();
            assert_eq!(
                v.state == State::No,
                !r.is_empty(),
                "{} {name}",
                root.display()
            );
        }
    }
    assert!(nos > 0, "no fixture host has a `no` verdict");
}
