//! The `nvidia.com/cc.mode.state` / `cc.ready.state` labels from the GPUs' firmware,
//! read through the live path: the fixture host with four H100s on vfio-pci, each
//! `resource0` a regular file laid out like BAR0 (BOOT_0, the FSP boot-complete scratch
//! register, the Hopper CC register), mapped read-only exactly as on a real host. This
//! proves the read path and the label rules, not any firmware.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use cchost::config::Config;
use cchost::gpu::cc::regs;
use cchost::gpu::cc::sim::register_file;
use cchost::host::HostRoot;
use cchost::inventory::Inventory;
use cchost::inventory::NodeFacts;
use cchost::labels::cc_mode::{CcModeCache, live_query};
use cchost::labels::compute::{NV_CC_CAPABLE, NV_CC_MODE_STATE, NV_CC_READY_STATE};
use cchost::labels::{NodeLabels, compute};

struct Host {
    _dir: tempfile::TempDir,
    host: HostRoot,
    gpus: Vec<String>,
}

fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let host = cchost::fixture::scenarios::gpus_on_vfio(dir.path())
        .build()
        .unwrap();
    let inv = Inventory::collect(&host, &Config::default());
    let gpus: Vec<String> = NodeFacts::from_inventory(&inv)
        .gpus
        .iter()
        .map(|g| g.address.clone())
        .collect();
    assert_eq!(gpus.len(), 4, "the scenario has four H100s");
    let h = Host {
        _dir: dir,
        host,
        gpus,
    };
    for g in &h.gpus {
        set_bar0(
            &h,
            g,
            register_file::GH100_BOOT_0,
            regs::BOOT_COMPLETE_DONE,
            1,
        );
    }
    h
}

/// Writes the three registers the query reads into the GPU's `resource0`.
fn set_bar0(h: &Host, gpu: &str, boot0: u32, boot_complete: u32, cc: u32) {
    register_file::write_registers(&h.host, gpu, boot0, boot_complete, cc).unwrap();
}

fn labels(h: &Host, cache: &mut CcModeCache) -> NodeLabels {
    let cfg = Config::default();
    let inv = Inventory::collect(&h.host, &cfg);
    let mut facts = NodeFacts::from_inventory(&inv);
    cache.fill(&h.host, &cfg.matching, &mut facts, &live_query(&h.host));
    compute(&facts, &cfg.labels)
}

fn state(l: &NodeLabels) -> (Option<&str>, Option<&str>) {
    (
        l.labels.get(NV_CC_MODE_STATE).map(String::as_str),
        l.labels.get(NV_CC_READY_STATE).map(String::as_str),
    )
}

#[test]
fn every_gpu_on_is_ready() {
    let h = host();
    let l = labels(&h, &mut CcModeCache::default());
    assert_eq!(
        l.labels.get(NV_CC_CAPABLE).map(String::as_str),
        Some("true")
    );
    assert_eq!(state(&l), (Some("on"), Some("true")));
}

#[test]
fn modes_map_to_nvidia_values() {
    // (register value, mode.state, ready.state); bit 5 is Hopper's PPCIe.
    for (raw, mode, ready) in [
        (0u32, "off", "false"),
        (3, "devtools", ""),
        (1 | regs::HOPPER_PPCIE_BIT, "ppcie", "true"),
        (2, "failed", ""),
    ] {
        let h = host();
        for g in &h.gpus {
            set_bar0(
                &h,
                g,
                register_file::GH100_BOOT_0,
                regs::BOOT_COMPLETE_DONE,
                raw,
            );
        }
        let l = labels(&h, &mut CcModeCache::default());
        assert_eq!(state(&l), (Some(mode), Some(ready)), "register {raw:#x}");
    }
}

#[test]
fn one_gpu_off_or_broken_fails_the_node() {
    let h = host();
    set_bar0(
        &h,
        &h.gpus[2],
        register_file::GH100_BOOT_0,
        regs::BOOT_COMPLETE_DONE,
        0,
    );
    let l = labels(&h, &mut CcModeCache::default());
    assert_eq!(state(&l), (Some("failed"), Some("")));

    // BAR0 all-ones: the query reaches the device and fails.
    let h = host();
    set_bar0(&h, &h.gpus[0], u32::MAX, u32::MAX, u32::MAX);
    let l = labels(&h, &mut CcModeCache::default());
    assert_eq!(state(&l), (Some("failed"), Some("")));
}

/// A `resource0` too small for the registers (the one-page fixture file) is a mapping
/// problem, not a GPU verdict: no CC state label.
#[test]
fn a_mapping_without_the_registers_is_not_a_failure() {
    let h = host();
    let path = h
        .host
        .resolve(
            Path::new("/sys/bus/pci/devices")
                .join(&h.gpus[1])
                .join("resource0"),
        )
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let l = labels(&h, &mut CcModeCache::default());
    assert_eq!(state(&l), (None, None));
}

/// A GPU a VM holds is not queried: the last mode read stands (no flapping while a pod
/// runs), and a process that never read it writes no CC state label at all.
#[test]
fn a_gpu_in_use_keeps_its_last_read_mode() {
    let h = host();
    let mut cache = CcModeCache::default();
    assert_eq!(state(&labels(&h, &mut cache)), (Some("on"), Some("true")));

    // A QEMU holds the first GPU's group node open, and its register now says off (it
    // cannot really change under a VM; the point is that it is not read).
    let gpu = &h.gpus[0];
    let group = h
        .host
        .link_name(
            Path::new("/sys/bus/pci/devices")
                .join(gpu)
                .join("iommu_group"),
        )
        .unwrap()
        .unwrap();
    let proc_dir = h.host.resolve(Path::new("/proc")).unwrap().join("4242");
    std::fs::create_dir_all(proc_dir.join("fd")).unwrap();
    std::fs::write(proc_dir.join("comm"), "qemu-system-x86\n").unwrap();
    std::fs::write(proc_dir.join("maps"), "").unwrap();
    std::os::unix::fs::symlink(format!("/dev/vfio/{group}"), proc_dir.join("fd/31")).unwrap();
    set_bar0(
        &h,
        gpu,
        register_file::GH100_BOOT_0,
        regs::BOOT_COMPLETE_DONE,
        0,
    );

    assert_eq!(state(&labels(&h, &mut cache)), (Some("on"), Some("true")));
    let fresh = labels(&h, &mut CcModeCache::default());
    assert_eq!(state(&fresh), (None, None));
    assert_eq!(
        fresh.labels.get(NV_CC_CAPABLE).map(String::as_str),
        Some("true")
    );
}

/// An idle vfio GPU is usually runtime-suspended: the labeler wakes it for its first read
/// (and puts `power/control` back), but not every round after that.
#[test]
fn a_suspended_gpu_is_woken_once_not_every_round() {
    let h = host();
    let dir = |g: &str| {
        h.host
            .resolve(Path::new("/sys/bus/pci/devices").join(g))
            .unwrap()
    };
    for g in &h.gpus {
        std::fs::create_dir_all(dir(g).join("power")).unwrap();
        std::fs::write(dir(g).join("power/runtime_status"), "suspended\n").unwrap();
        std::fs::write(dir(g).join("power/control"), "auto\n").unwrap();
    }
    let mut cache = CcModeCache::default();
    assert_eq!(state(&labels(&h, &mut cache)), (Some("on"), Some("true")));
    let control = std::fs::read_to_string(dir(&h.gpus[0]).join("power/control")).unwrap();
    assert_eq!(
        control.trim(),
        "auto",
        "power/control restored after the read"
    );

    // The registers now say off; a known, suspended GPU is not woken to find out.
    for g in &h.gpus {
        set_bar0(
            &h,
            g,
            register_file::GH100_BOOT_0,
            regs::BOOT_COMPLETE_DONE,
            0,
        );
    }
    assert_eq!(state(&labels(&h, &mut cache)), (Some("on"), Some("true")));
    // A GPU not known yet is woken and read.
    let fresh = labels(&h, &mut CcModeCache::default());
    assert_eq!(state(&fresh), (Some("off"), Some("false")));
}
