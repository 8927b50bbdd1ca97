//! `cchost check` and `cchost inventory` as a user runs them: exit codes, text that
//! fits 80 columns, JSON that parses, on host trees built here.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use crate::check_json::find_check;

fn cchost(root: &Path, args: &[&str]) -> Output {
    // An empty config (all defaults), outside the host tree.
    let cfg = tempfile::NamedTempFile::new().unwrap();
    Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(root)
        .arg("--config")
        .arg(cfg.path())
        .args(args)
        .env_remove("CCHOST_CONFIG")
        .output()
        .expect("run cchost")
}

fn write(root: &Path, p: &str, s: &str) {
    let p = root.join(p.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// An AMD host with SEV-SNP up, IOMMU translated, vhost-vsock, no GPUs.
fn snp_host(root: &Path, cmdline: &str, snp: &str) {
    write(
        root,
        "/proc/cpuinfo",
        "processor : 0\nvendor_id : AuthenticAMD\nmodel name : AMD EPYC 9654\nflags : svm sev sev_es sev_snp\n",
    );
    write(root, "/proc/cmdline", cmdline);
    write(root, "/proc/sys/kernel/osrelease", "6.11.0\n");
    write(
        root,
        "/proc/modules",
        "kvm_amd 1 0 - Live 0x0\nkvm 1 1 kvm_amd, Live 0x0\nvhost_vsock 1 0 - Live 0x0\nccp 1 0 - Live 0x0\n",
    );
    write(root, "/sys/module/kvm_amd/parameters/sev", "Y\n");
    write(root, "/sys/module/kvm_amd/parameters/sev_es", "Y\n");
    write(root, "/sys/module/kvm_amd/parameters/sev_snp", snp);
    write(root, "/sys/fs/cgroup/misc.capacity", "sev 99\nsev_es 410\n");
    write(root, "/sys/firmware/acpi/tables/IVRS", "");
    let ty = if cmdline.contains("iommu=pt") {
        "identity\n"
    } else {
        "DMA\n"
    };
    write(root, "/sys/kernel/iommu_groups/0/type", ty);
    fs::create_dir_all(root.join("sys/kernel/iommu_groups/0/devices")).unwrap();
    for d in ["/dev/kvm", "/dev/sev", "/dev/vhost-vsock"] {
        write(root, d, "");
    }
    write(
        root,
        "/dev/kmsg",
        "6,1,1,-;ccp 0000:22:00.1: SEV-SNP API:1.55 build:21\n",
    );
}

#[test]
fn ready_host_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    snp_host(dir.path(), "quiet\n", "Y\n");
    let out = cchost(dir.path(), &["check"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("READY"), "{text}");
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
}

#[test]
fn iommu_pt_host_exits_1_with_the_remedy() {
    let dir = tempfile::tempdir().unwrap();
    snp_host(dir.path(), "iommu=pt\n", "N\n");
    let out = cchost(dir.path(), &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "cchost.check/v1");
    assert_eq!(v["ready"], false);
    assert_eq!(v["resolved_profile"], "snp");
    let f = v["findings"].as_array().unwrap();
    assert!(
        f.iter().any(|f| f["id"] == "snp.iommu"
            && f["remedy"] == "remove iommu=pt from the kernel command line and reboot"),
        "{f:?}"
    );
    // The same host checked for TDX says to use the other profile.
    let out = cchost(dir.path(), &["check", "--profile", "tdx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--profile snp"));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = cchost(dir.path(), &["check", "--profile", "sgx"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cchost(&dir.path().join("missing"), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("host root"));
}

#[test]
fn empty_or_hostile_root_is_not_ready_and_does_not_crash() {
    let dir = tempfile::tempdir().unwrap();
    // An empty root is not a host (issue 13 item 3): exit 2, no remedies.
    let out = cchost(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a whole host"));
    for d in ["sys/kernel", "dev/null"] {
        fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    // Loops and garbage where the host files should be.
    symlink("cpuinfo", dir.path().join("cpuinfo")).unwrap();
    fs::create_dir_all(dir.path().join("proc")).unwrap();
    symlink("cpuinfo", dir.path().join("proc/cpuinfo")).unwrap();
    fs::write(dir.path().join("proc/cmdline"), [0xff, 0xfe]).unwrap();
    let out = cchost(dir.path(), &["inventory", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["path"] == "/proc/cpuinfo"),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p["path"] == "/proc/cmdline"),
        "{problems:?}"
    );
    let out = cchost(dir.path(), &["inventory"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Problems"));
}

/// Live: on any Linux machine `cchost check` on `/` gives a verdict (0 or 1), never a
/// usage/I-O error, and its JSON parses.
#[test]
fn live_check_gives_a_verdict() {
    let out = cchost(Path::new("/"), &["check", "--json"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "cchost.check/v1");
    assert!(v["checks"].as_array().is_some_and(|c| !c.is_empty()));
}

/// Kernel lockdown (seen on a real H100 guest: the resource0 mmap failed with EPERM):
/// `check` warns that native CC mode is out of reach and says what to do; without
/// lockdown the same host passes.
#[test]
fn kernel_lockdown_warns_that_cc_mode_cannot_be_reached() {
    fn bar_access(root: &Path) -> serde_json::Value {
        let out = cchost(root, &["check", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        find_check(&v["checks"], "gpu.bar_access")
            .expect("gpu.bar_access in the report")
            .clone()
    }
    let dir = tempfile::tempdir().unwrap();
    cchost::fixture::scenarios::gpus_on_vfio(dir.path())
        .build()
        .unwrap();
    let root = dir.path();
    let mut found = Vec::new();
    for mode in ["[none] integrity", "none [integrity]"] {
        let text = format!("{mode} confidentiality\n");
        write(root, "/sys/kernel/security/lockdown", &text);
        found.push(bar_access(root));
    }
    assert_eq!(found[0]["status"], "pass", "{:#}", found[0]);
    let n = &found[1];
    assert_eq!(n["status"], "warn", "{n:#}");
    assert!(
        n["message"].as_str().unwrap().contains("[integrity]")
            && n["remedy"].as_str().unwrap().contains("Secure Boot"),
        "{n:#}"
    );
}

#[test]
fn list_prints_every_check_without_running_any() {
    // An empty host: running the checks would fail; listing them does not look.
    let dir = tempfile::tempdir().unwrap();
    let out = cchost(dir.path(), &["check", "--list"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('['))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for id in [
        "cpu",
        "kvm",
        "tdx.bios",
        "snp.firmware",
        "gpu.vfio_bound",
        "dcap.expiry",
        "inventory",
    ] {
        assert!(ids.contains(&id), "{id} missing from:\n{text}");
    }
    let out = cchost(dir.path(), &["check", "--list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), ids.len());
    let dcap = list.iter().find(|c| c["id"] == "dcap.pccs").unwrap();
    assert_eq!(dcap["needs"], "dcap");
    assert_eq!(dcap["category"], "dcap");
    assert_eq!(dcap["inputs"][0], "dcap-probe");
}
