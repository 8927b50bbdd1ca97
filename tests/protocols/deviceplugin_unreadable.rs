//! One GPU with a malformed sysfs attribute next to three good ones (the
//! `gpus-on-vfio` fixture host, built fresh): the plugin skips exactly that GPU, and the
//! fault is visible where a user looks — `cchost check` (a WARN node naming the device,
//! the file and a remedy, text and JSON) and `cchost run`'s status file
//! (`skipped_unreadable`), while the other three are advertised.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cchost::config::Config;
use cchost::host::HostRoot;
use cchost::inventory::passthrough;
use serde_json::Value;

use crate::support::check_json::find_check;

const BAD_GPU: &str = "0000:19:00.0";

/// The fixture host; with `malformed`, one GPU's `numa_node` holds garbage instead of
/// the kernel's decimal number.
fn host(dir: &Path, malformed: bool) -> HostRoot {
    let h = cchost::fixture::scenarios::gpus_on_vfio(dir)
        .build()
        .unwrap();
    if malformed {
        let attr = dir.join(format!("sys/bus/pci/devices/{BAD_GPU}/numa_node"));
        assert!(attr.exists(), "the fixture names {BAD_GPU}");
        std::fs::write(attr, "banana\n").unwrap();
    }
    h
}

fn cchost(root: &Path, args: &[&str]) -> Output {
    let cfg = root.join("config.toml");
    if !cfg.exists() {
        std::fs::write(&cfg, "").unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(root)
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .env_remove("CCHOST_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn the_scan_skips_exactly_the_malformed_gpu_and_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), true);
    let cfg = Config::default();
    let scan = passthrough::discover(&h, &cfg.matching, &cfg.device_plugin).unwrap();
    assert_eq!(scan.devices.len(), 3, "{:?}", scan.devices);
    for d in &scan.devices {
        assert!(d.functions.iter().all(|f| f.to_string() != BAD_GPU));
    }
    let bad: Vec<_> = scan.unreadable().collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].address.unwrap().to_string(), BAD_GPU);
    let u = bad[0].unreadable.as_ref().unwrap();
    assert!(u.file.ends_with("numa_node"), "{u:?}");
    assert!(u.error.contains("banana"), "{u:?}");
}

#[test]
fn check_warns_naming_the_device_the_file_and_a_remedy() {
    let dir = tempfile::tempdir().unwrap();
    host(dir.path(), true);
    let out = cchost(dir.path(), &["check", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    let n = find_check(&report["checks"], "deviceplugin.readable").expect("the node is there");
    assert_eq!(n["status"], "warn", "{n}");
    let msg = n["message"].as_str().unwrap();
    assert!(msg.contains(BAD_GPU), "{msg}");
    assert!(msg.contains("numa_node"), "{msg}");
    assert!(msg.starts_with("1 PCI function"), "{msg}");
    assert!(
        n["remedy"]
            .as_str()
            .is_some_and(|r| r.contains("numa_node")),
        "{n}"
    );
    // The findings list (what scripts read first) carries it too.
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["id"] == "deviceplugin.readable"),
        "{findings:?}"
    );

    let text = cchost(dir.path(), &["check"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains(BAD_GPU), "{text}");
}

#[test]
fn check_passes_on_the_good_host() {
    let dir = tempfile::tempdir().unwrap();
    host(dir.path(), false);
    let out = cchost(dir.path(), &["check", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = find_check(&report["checks"], "deviceplugin.readable").unwrap();
    assert_eq!(n["status"], "pass", "{n}");
    assert!(n["message"].as_str().unwrap().contains("4 matched"), "{n}");
}

#[test]
fn run_reports_the_skip_in_its_status_file_and_removes_it_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    host(dir.path(), true);
    // No kubelet directory: the plugin stays off, the scan, the CDI spec and the status
    // file do not need it.
    std::fs::write(
        dir.path().join("config.toml"),
        "[device_plugin]\nrescan_interval_s = 0\n[labels]\nbackend = \"off\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("config.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = dir.path().join("run/cchost/passthrough.json");
    let t = Instant::now();
    while !status.exists() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    assert_eq!(doc["schema"], "cchost.passthrough/v1");
    assert_eq!(doc["skipped_unreadable"], 1, "{doc}");
    let pgpu = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "nvidia.com/pgpu")
        .unwrap();
    assert_eq!(pgpu["devices"], 3, "{doc}");
    assert_eq!(pgpu["healthy"], 3, "{doc}");
    let skipped = doc["skipped"].as_array().unwrap();
    let bad = skipped
        .iter()
        .find(|s| s["address"] == BAD_GPU)
        .unwrap_or_else(|| panic!("{doc}"));
    assert!(
        bad["unreadable"]["file"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{BAD_GPU}/numa_node")),
        "{bad}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        !status.exists(),
        "the status file describes a running daemon"
    );
}
