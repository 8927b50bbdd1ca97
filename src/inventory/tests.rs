//! Whole-inventory tests on host trees, including bad input (issue item 8).

use super::*;
use crate::fixture::{PciSpec, Tree};

/// A TDX host: kvm_intel tdx=Y, module initialised, one H100 on vfio-pci.
fn tdx_host() -> Tree {
    let t = Tree::new();
    t.file(
        "/proc/cpuinfo",
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8580\nflags\t\t: fpu vmx tdx_host_platform\n",
    )
    .file("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on nohibernate kvm_intel.tdx=1\n")
    .file("/proc/sys/kernel/osrelease", "6.16.0\n")
    .file("/proc/modules", "kvm_intel 1 0 - Live 0x0\nkvm 1 1 kvm_intel, Live 0x0\nvfio_pci 1 0 - Live 0x0\n")
    .file("/lib/modules/6.16.0/modules.builtin", "kernel/drivers/vhost/vhost_vsock.ko\n")
    .file("/lib/modules/6.16.0/modules.alias", "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n")
    .file("/sys/module/kvm_intel/parameters/tdx", "Y\n")
    .file("/sys/fs/cgroup/misc.capacity", "tdx 63\n")
    .file("/sys/firmware/acpi/tables/DMAR", "")
    .file("/sys/class/iommu/dmar0/intel-iommu/version", "1:0\n")
    .file("/dev/kvm", "")
    .file("/dev/vhost-vsock", "")
    .file("/dev/vfio/vfio", "")
    .file("/dev/vfio/12", "")
    .file(
        "/dev/kmsg",
        "6,1,100,-;virt/tdx: BIOS enabled: private KeyID range [64, 128)\n6,2,200,-;virt/tdx: module initialized\n6,3,300,-;pci 0000:3b:00.0: Adding to iommu group 12\n",
    );
    t.pci(
        &PciSpec::new("0000:3b:00.0", 0x10de, 0x2335, 0x030200)
            .driver("vfio-pci")
            .group(12)
            .numa(0),
    );
    t
}

#[test]
fn tdx_host_inventory() {
    let t = tdx_host();
    let inv = Inventory::collect(&t.host, &Config::default());
    assert!(inv.problems.is_empty(), "{:?}", inv.problems);
    assert!(inv.tdx.verdict.is_yes(), "{:?}", inv.tdx);
    assert_eq!(inv.tdx.keys, Some(63));
    assert_eq!(inv.tdx.module, tdx::TdxModuleState::Initialized);
    assert_eq!(inv.sev.snp.state, State::NotApplicable);
    assert_eq!(inv.cca.verdict.state, State::NotApplicable);
    assert_eq!(inv.iommu.mode, IommuMode::Translated);
    assert_eq!(inv.kernel.module("vhost_vsock"), ModuleState::BuiltIn);
    assert_eq!(inv.kernel.module("kvm_intel"), ModuleState::Loaded);
    assert_eq!(inv.kernel.module("kvm_amd"), ModuleState::Absent);
    assert!(inv.kernel.node("/dev/vhost-vsock"));
    assert_eq!(inv.kernel.vfio_groups, ["12"]);
    assert_eq!(
        inv.kernel_log.relevant.len(),
        2,
        "the group line is not kept"
    );
    assert_eq!(inv.gpus.devices.len(), 1);
    assert_eq!(
        inv.gpus.devices[0].model.as_deref(),
        Some("GH100 [H200 SXM 141GB]")
    );
    // The text form names the facts; the JSON form round-trips to an equal value.
    let text = render::text(&inv);
    assert!(text.contains("TDX          yes"), "{text}");
    let json = serde_json::to_string(&inv).unwrap();
    let back: Inventory = serde_json::from_str(&json).unwrap();
    assert_eq!(back, inv);
}

#[test]
fn tdx_module_failure_is_explained() {
    let t = tdx_host();
    t.file("/sys/module/kvm_intel/parameters/tdx", "N\n").file(
        "/dev/kmsg",
        "6,1,100,-;virt/tdx: BIOS enabled: private KeyID range [64, 128)\n3,2,200,-;virt/tdx: module initialization failed (-5)\n",
    );
    let inv = Inventory::collect(&t.host, &Config::default());
    assert_eq!(inv.tdx.verdict.state, State::No);
    assert!(
        inv.tdx
            .verdict
            .reason
            .as_deref()
            .unwrap()
            .contains("failed (-5)")
    );
    assert_eq!(
        inv.tdx.verdict.blocker,
        Some(Blocker::InitFailed { tee: Tee::Tdx })
    );
}

/// Applies `damage` to a good tree and checks that the inventory is still built, with
/// a problem naming `path`.
fn damaged(path: &str, damage: impl FnOnce(&Tree)) -> Inventory {
    let t = tdx_host();
    damage(&t);
    let inv = Inventory::collect(&t.host, &Config::default());
    let all: Vec<&Problem> = inv.problems.iter().chain(&inv.gpus.problems).collect();
    assert!(
        all.iter()
            .any(|p| p.path.to_string_lossy().contains(path) || p.message.contains(path)),
        "no problem naming {path}: {all:?}"
    );
    inv
}

fn replace(t: &Tree, path: &str, contents: &[u8]) {
    let p = t.path(path);
    let _ = std::fs::remove_file(&p);
    std::fs::write(p, contents).unwrap();
}

fn loop_at(t: &Tree, path: &str) {
    let p = t.path(path);
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(p.file_name().unwrap(), &p).unwrap();
}

#[test]
fn truncated_files() {
    let inv = damaged("/proc/cpuinfo", |t| {
        replace(t, "/proc/cpuinfo", b"processor\t: 0\nvendor_id\t: Genu")
    });
    assert!(inv.cpu.is_none());
    assert!(inv.gpus.devices.len() == 1, "the rest is still there");
    damaged("/proc/modules", |t| {
        replace(t, "/proc/modules", b"kvm_intel 1"[..9].as_ref())
    });
    damaged("misc.capacity", |t| {
        replace(t, "/sys/fs/cgroup/misc.capacity", b"tdx")
    });
    let inv = damaged("kvm_intel/parameters/tdx", |t| {
        replace(t, "/sys/module/kvm_intel/parameters/tdx", b"")
    });
    assert_eq!(inv.tdx.verdict.state, State::No);
    let inv = damaged("0000:3b:00.0/class", |t| {
        replace(t, "/sys/bus/pci/devices/0000:3b:00.0/class", b"0x")
    });
    assert!(inv.gpus.devices.is_empty());
}

#[test]
fn non_utf8_files() {
    for path in [
        "/proc/cpuinfo",
        "/proc/cmdline",
        "/proc/modules",
        "/sys/fs/cgroup/misc.capacity",
        "/dev/kmsg",
    ] {
        let inv = damaged(path, |t| replace(t, path, &[0x66, 0xff, 0xfe, b'\n']));
        assert!(
            inv.iommu.present.is_yes(),
            "{path}: unrelated facts survive"
        );
    }
    damaged("0000:3b:00.0/vendor", |t| {
        replace(t, "/sys/bus/pci/devices/0000:3b:00.0/vendor", &[0xff])
    });
    damaged("iommu_groups/12/type", |t| {
        replace(t, "/sys/kernel/iommu_groups/12/type", &[0xff])
    });
}

#[test]
fn oversized_files() {
    let big = vec![b'a'; (crate::host::MAX_READ_BYTES + 1) as usize];
    damaged("/proc/cpuinfo", |t| replace(t, "/proc/cpuinfo", &big));
    let long_line = vec![b'x'; 70 * 1024];
    damaged("/proc/cmdline", |t| replace(t, "/proc/cmdline", &long_line));
    damaged("0000:3b:00.0/device", |t| {
        replace(
            t,
            "/sys/bus/pci/devices/0000:3b:00.0/device",
            &vec![b'0'; 5000],
        )
    });
}

#[test]
fn symlink_loops() {
    for path in [
        "/proc/cpuinfo",
        "/proc/cmdline",
        "/proc/modules",
        "/sys/module/kvm_intel/parameters/tdx",
        "/dev/kmsg",
    ] {
        damaged(path, |t| loop_at(t, path));
    }
}

#[test]
fn missing_files_are_facts_not_crashes() {
    let t = Tree::new();
    let inv = Inventory::collect(&t.host, &Config::default());
    assert!(inv.cpu.is_none());
    assert!(
        inv.problems
            .iter()
            .any(|p| p.path == Path::new("/proc/cpuinfo"))
    );
    assert!(
        inv.problems
            .iter()
            .any(|p| p.path == Path::new("/proc/cmdline"))
    );
    assert!(!inv.kernel.modules_supported);
    assert_eq!(inv.iommu.mode, IommuMode::Off);
    assert_eq!(inv.tdx.verdict.state, State::No);
    assert!(!inv.kernel_log.readable);
    assert!(inv.gpus.devices.is_empty());
    // Nothing was written into the root.
    assert!(t.host.list_dir("/").unwrap().is_empty());
}

/// Live: holds on any Linux machine (it only checks that the read path works end to
/// end and that whatever cannot be read is reported, not fatal).
#[test]
fn live_host_collects() {
    let inv = Inventory::collect(&crate::host::HostRoot::live(), &Config::default());
    assert!(inv.cpu.is_some(), "{:?}", inv.problems);
    assert!(!inv.kernel.cmdline.raw.is_empty());
}
