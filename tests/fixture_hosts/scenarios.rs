//! Verdicts on the committed fixture hosts (tests/host/, see its README), read from
//! the committed trees themselves, and bad input written through the fixture builder.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use cchost::config::Config;
use cchost::fixture::{FixtureHost, scenarios};
use cchost::host::HostRoot;
use cchost::inventory::tdx::TdxModuleState;
use cchost::inventory::{Inventory, IommuMode, State};

fn inventory(name: &str) -> Inventory {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/host")
        .join(name);
    Inventory::collect(&HostRoot::new(dir).unwrap(), &Config::default())
}

fn numa_nodes<'a>(it: impl Iterator<Item = &'a cchost::inventory::GpuDevice>) -> BTreeSet<u32> {
    it.filter_map(|d| d.numa_node).collect()
}

#[test]
fn tdx_8xh100_4nvswitch() {
    let inv = inventory("tdx-8xh100-4nvswitch");
    assert_eq!(inv.tdx.verdict.state, State::Yes, "{:?}", inv.tdx.verdict);
    assert_eq!(inv.tdx.module, TdxModuleState::Initialized);
    assert_eq!(inv.tdx.keys, Some(31));
    assert!(inv.tdx.nohibernate && inv.tdx.host_platform_flag);
    assert_eq!(inv.gpus.gpus().count(), 8);
    assert_eq!(inv.gpus.nvswitches().count(), 4);
    assert!(inv.gpus.gpus().all(|g| g.device == 0x2330 && g.cc_capable));
    assert!(inv.gpus.nvswitches().all(|g| g.device == 0x22a3));
    assert_eq!(numa_nodes(inv.gpus.gpus()), BTreeSet::from([0, 1]));
    assert!(
        inv.gpus
            .gpus()
            .all(|g| g.driver.as_deref() == Some("nvidia"))
    );
    assert!(inv.gpus.devices.iter().all(|g| !g.boot_vga));
    assert!(
        inv.gpus
            .devices
            .iter()
            .all(|g| g.foreign_group_members().is_empty())
    );
    assert_eq!(inv.iommu.mode, IommuMode::Translated);
    assert_eq!(inv.iommu.present.state, State::Yes);
    assert_eq!(inv.sev.snp.state, State::NotApplicable);
    assert!(inv.problems.is_empty(), "{:?}", inv.problems);
}

#[test]
fn snp_8xb200() {
    let inv = inventory("snp-8xb200");
    assert_eq!(inv.sev.snp.state, State::Yes, "{:?}", inv.sev.snp);
    assert!(inv.sev.dev_sev);
    assert_eq!((inv.sev.asids, inv.sev.es_asids), (Some(907), Some(99)));
    assert_eq!(inv.gpus.gpus().count(), 8);
    assert!(
        inv.gpus
            .gpus()
            .all(|g| g.device == 0x2901 && g.driver.is_none())
    );
    assert_eq!(numa_nodes(inv.gpus.gpus()), BTreeSet::from([0, 1]));
    assert_eq!(inv.tdx.verdict.state, State::NotApplicable);
    assert_eq!(inv.iommu.mode, IommuMode::Translated);
    assert!(inv.problems.is_empty(), "{:?}", inv.problems);
}

#[test]
fn snp_iommu_pt_says_why_snp_is_off() {
    let inv = inventory("snp-iommu-pt");
    assert_eq!(inv.sev.snp.state, State::No);
    let reason = inv.sev.snp.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("iommu=pt") || reason.contains("passthrough"),
        "{reason}"
    );
    assert!(inv.sev.snp.blocker.is_some());
    assert!(cchost::check::remedy::of_verdict(&inv.sev.snp, &inv).is_some());
    assert_eq!(inv.sev.sev.state, State::Yes);
    assert_eq!(inv.iommu.mode, IommuMode::Passthrough);
    assert!(inv.iommu.cmdline_passthrough);
}

#[test]
fn tdx_module_failed_says_why_tdx_is_off() {
    let inv = inventory("tdx-module-failed");
    assert_eq!(inv.tdx.verdict.state, State::No);
    assert_eq!(inv.tdx.module, TdxModuleState::Failed);
    assert!(inv.tdx.host_platform_flag);
    assert_eq!(inv.tdx.kvm_param.as_deref(), Some("N"));
    let reason = inv.tdx.verdict.reason.clone().unwrap_or_default();
    assert!(reason.to_lowercase().contains("fail"), "{reason}");
}

#[test]
fn no_iommu() {
    let inv = inventory("no-iommu");
    assert_ne!(inv.iommu.present.state, State::Yes);
    assert_ne!(inv.iommu.enabled.state, State::Yes);
    assert_eq!(inv.iommu.mode, IommuMode::Off);
    assert_eq!(inv.iommu.groups, 0);
    assert_eq!(inv.gpus.gpus().count(), 2);
    assert!(inv.gpus.gpus().all(|g| g.iommu_group.is_none()));
    assert_eq!(inv.tdx.verdict.state, State::No);
}

#[test]
fn workstation_flags_the_boot_vga_gpu() {
    let inv = inventory("workstation-bootvga");
    let vga = inv
        .gpus
        .devices
        .iter()
        .find(|g| g.address.to_string() == "0000:01:00.0")
        .unwrap();
    assert!(vga.boot_vga);
    assert!(
        vga.slot_functions
            .iter()
            .any(|f| f.address.to_string() == "0000:01:00.1")
    );
    let h100 = inv
        .gpus
        .devices
        .iter()
        .find(|g| g.device == 0x2331)
        .unwrap();
    assert!(!h100.boot_vga);
    assert_eq!(inv.gpus.gpus().count(), 2);
}

#[test]
fn gpus_already_on_vfio() {
    let inv = inventory("gpus-on-vfio");
    assert_eq!(inv.gpus.gpus().count(), 4);
    assert!(
        inv.gpus.gpus().all(|g| g.is_on_vfio()),
        "{:?}",
        inv.gpus.devices
    );
    assert!(inv.gpus.gpus().all(|g| g.vfio_dev.is_some()));
    assert!(
        inv.gpus
            .gpus()
            .all(|g| g.driver_override.as_deref() == Some("vfio-pci"))
    );
    assert!(inv.iommu.iommufd);
    assert_eq!(inv.iommu.mode, IommuMode::Translated);
    assert_eq!(inv.tdx.verdict.state, State::Yes);
}

// --- bad input through the builder: no panic, a problem naming the file, no escape ---

const GPU: &str = "/sys/devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0";

fn bad(f: impl FnOnce(FixtureHost) -> FixtureHost) -> (tempfile::TempDir, Inventory) {
    let tmp = tempfile::tempdir().unwrap();
    let h = f(scenarios::scenario("tdx-8xh100-4nvswitch", tmp.path()).unwrap());
    let host = h.build().unwrap();
    let inv = Inventory::collect(&host, &Config::default());
    (tmp, inv)
}

fn names(inv: &Inventory, file: &str) -> bool {
    let all = format!("{:?} {:?}", inv.problems, inv.gpus.problems);
    all.contains(file)
}

#[test]
fn truncated_non_utf8_and_oversized_files_become_problems() {
    let (_t, inv) = bad(|h| h.file(&format!("{GPU}/class"), "0x03"));
    // A truncated class (`0x03`) no longer says "3D controller": that function is
    // not taken for a GPU, the other seven still are.
    assert_eq!(inv.gpus.gpus().count(), 7);
    let (_t, inv) = bad(|h| h.file("/proc/cpuinfo", vec![0xff, 0xfe, b'\n']));
    assert!(names(&inv, "/proc/cpuinfo"), "{:?}", inv.problems);
    let (_t, inv) = bad(|h| h.file("/proc/cmdline", vec![b'a'; 9 * 1024 * 1024]));
    assert!(names(&inv, "/proc/cmdline"), "{:?}", inv.problems);
    let (_t, inv) = bad(|h| h.file(&format!("{GPU}/vendor"), vec![0xc3, 0x28]));
    assert!(
        names(&inv, "0000:18:00.0"),
        "{:?} {:?}",
        inv.problems,
        inv.gpus.problems
    );
    let (_t, inv) = bad(|h| h.file("/sys/fs/cgroup/misc.capacity", "tdx lots\n"));
    assert!(names(&inv, "misc.capacity"), "{:?}", inv.problems);
}

#[test]
fn symlink_loops_and_missing_files_do_not_panic_or_escape() {
    let (t, inv) = bad(|h| {
        h.symlink("/sys/module/kvm_intel/parameters/tdx", "tdx")
            .symlink(
                "/sys/bus/pci/devices/0000:19:00.0",
                "../../../bus/pci/devices/0000:19:00.0",
            )
            .symlink("/proc/modules", "/../../../../../etc/passwd")
    });
    assert!(
        names(&inv, "/sys/module/kvm_intel/parameters/tdx"),
        "{:?}",
        inv.problems
    );
    assert_ne!(inv.tdx.verdict.state, State::Yes);
    assert_eq!(inv.gpus.gpus().count(), 7);
    // The re-rooted /etc/passwd does not exist inside the fixture: kernel modules
    // are simply unknown, and nothing outside the root was read.
    assert!(!t.path().join("etc/passwd").exists());
    let (_t, inv) = bad(|h| {
        h.file("/proc/cpuinfo", "")
            .file(&format!("{GPU}/numa_node"), "")
    });
    assert!(
        inv.cpu.is_none() || names(&inv, "/proc/cpuinfo"),
        "{:?}",
        inv.problems
    );
}
