//! Hosts captured from real machines with `cchost capture` (tests/host-captured/).
//! Unlike tests/host/ (built to the kernel's layout by `cchost::fixture`), these trees
//! were written by the kernel itself and copied by cchost: they keep the read paths
//! honest against real sysfs/procfs formatting.
//!
//! `h100-firecracker`: a lent NVIDIA H100 SXM5 machine (2026-11-22), a Firecracker
//! guest (Ubuntu 24.04, kernel 6.18) with the GPU passed through on the nvidia driver,
//! no IOMMU inside. `nvidia-smi conf-compute` there said "CC State: OFF, GPU CC
//! Capable".
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn cchost(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cchost"))
        .args(args)
        .output()
        .expect("cchost runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const H100: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/host-captured/h100-firecracker"
);

#[test]
fn real_h100_host_inventory() {
    let (code, out) = cchost(&["inventory", "--json", "--host-root", H100]);
    assert_eq!(code, 0, "{out}");
    let inv: serde_json::Value = serde_json::from_str(&out).unwrap();
    let gpus = inv["gpus"]["devices"].as_array().unwrap();
    assert_eq!(gpus.len(), 1, "{out}");
    let g = &gpus[0];
    assert_eq!(g["address"], "0000:00:06.0");
    assert_eq!(g["kind"], "gpu");
    assert_eq!(
        (g["vendor"].as_u64(), g["device"].as_u64()),
        (Some(0x10de), Some(0x2330))
    );
    assert_eq!(g["subsystem_device"].as_u64(), Some(0x16c1));
    assert_eq!(g["revision"].as_u64(), Some(0xa1));
    assert_eq!(g["model"], "GH100 [H100 SXM5 80GB]");
    assert_eq!(g["chip"], "GH100");
    assert_eq!(g["cc_capable"], true);
    assert_eq!(g["driver"], "nvidia");
    assert!(g["iommu_group"].is_null());
    assert!(g["numa_node"].is_null(), "the guest reports numa_node -1");
    assert!(inv["problems"].as_array().unwrap().is_empty(), "{out}");
    // No IOMMU in the guest, and the kernel's "Default domain type: Translated" line
    // must not be mistaken for one.
    assert_eq!(inv["iommu"]["mode"], "off");
    assert_eq!(inv["iommu"]["groups"], 0);
    // A guest is never a TDX host, whatever its CPU.
    assert_eq!(inv["tdx"]["verdict"]["state"], "no");
    let reason = inv["tdx"]["verdict"]["reason"].as_str().unwrap();
    assert!(reason.contains("virtual machine"), "{reason}");
}

#[test]
fn real_h100_host_is_not_ready_and_says_why() {
    let (code, out) = cchost(&["check", "--host-root", H100]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("GH100 [H100 SXM5 80GB]"), "{out}");
    assert!(out.contains("fix: enable VT-d in the BIOS"), "{out}");
    // The bind would be refused (no IOMMU group), so check does not offer it as the fix
    // (issue 13 item 8); it names what stands in the way.
    assert!(!out.contains("fix: cchost gpu bind --all"), "{out}");
    assert!(
        out.contains("`cchost gpu bind --all` refuses this host now"),
        "{out}"
    );
    // An Intel CPU with TDX off has no guests to quote for: the DCAP chain is not
    // probed (it once showed an empty chain as PASS here).
    assert!(
        out.contains("[SKIP] Intel DCAP quote generation (QGS → PCCS): TDX is not"),
        "{out}"
    );
}

/// The guest's kernel is locked down (its log says so; there is no securityfs file), and
/// on the machine the read-only mmap of resource0 failed with EPERM: `check` says native
/// CC mode is out of reach there, with the evidence.
#[test]
fn real_h100_host_is_locked_down() {
    let (code, out) = cchost(&["inventory", "--json", "--host-root", H100]);
    assert_eq!(code, 0, "{out}");
    let inv: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inv["lockdown"]["mode"], "locked", "{out}");
    let (_, out) = cchost(&["check", "--host-root", H100]);
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("[WARN] GPU registers reachable for CC mode (no kernel lockdown): kernel lockdown is on (kernel log: Kernel is locked down from Kernel configuration"),
        "{out}"
    );
}
