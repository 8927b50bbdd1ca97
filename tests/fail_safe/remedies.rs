//! Item 8: remedies are right, and no PASS says the opposite of its title. Every check
//! is rendered on every fixture host; a PASS whose message holds a word that
//! contradicts its title fails the test.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

/// Words that, in a PASS message, contradict a title containing the key phrase.
const CONTRADICTIONS: &[(&str, &[&str])] = &[
    ("translates DMA", &["passthrough", "identity"]),
    ("of its own", &["shares", "holds", "together"]),
    ("viable", &["not viable"]),
    ("bound to their vfio driver", &["not on vfio"]),
    (
        "readable",
        &["unreadable", "could not be read", "malformed"],
    ),
    ("available", &["missing", "absent and"]),
    ("identified", &["could not be read"]),
];

/// Words no PASS message may hold, whatever the check.
const NEVER_IN_A_PASS: &[&str] = &["could not be read", "not viable", "refuses", "FAILED"];

fn nodes(v: &Value, out: &mut Vec<Value>) {
    if let Some(a) = v.as_array() {
        for n in a {
            out.push(n.clone());
            nodes(&n["children"], out);
        }
    }
}

fn check_json(root: &Path, profile: &str) -> Vec<Value> {
    let run = cchost(root, &["check", "--json", "--profile", profile]);
    assert!(matches!(run.code, Some(0 | 1)), "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let mut out = Vec::new();
    nodes(&v["checks"], &mut out);
    out
}

fn contradictions(host: &str, all: &[Value]) -> Vec<String> {
    let mut bad = Vec::new();
    for n in all.iter().filter(|n| n["status"] == "pass") {
        let title = n["title"].as_str().unwrap_or_default();
        let msg = n["message"].as_str().unwrap_or_default();
        for (phrase, words) in CONTRADICTIONS {
            if title.contains(phrase) {
                for w in *words {
                    if msg.contains(w) {
                        bad.push(format!("{host}: [PASS] {title}: {msg} (says {w:?})"));
                    }
                }
            }
        }
        for w in NEVER_IN_A_PASS {
            if msg.contains(w) {
                bad.push(format!("{host}: [PASS] {title}: {msg} (says {w:?})"));
            }
        }
    }
    bad
}

#[test]
fn no_pass_contradicts_its_title_on_any_fixture_host() {
    let mut bad = Vec::new();
    for src in fixture_hosts() {
        for profile in ["auto", "tdx", "snp"] {
            let all = check_json(&src, profile);
            bad.extend(contradictions(
                &format!("{} ({profile})", src.display()),
                &all,
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn relink(path: &Path, target: &str) {
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// The four NVSwitches of the HGX fixture in one IOMMU group, one of them on vfio-pci:
/// a group no guest can open must not pass, and a shared group must say it is shared.
#[test]
fn a_non_viable_nvswitch_group_does_not_pass() {
    let root = copy_host(&fixture("host/tdx-8xh100-4nvswitch"));
    let r = root.path();
    let switches = [
        "0000:29:00.0",
        "0000:2a:00.0",
        "0000:2b:00.0",
        "0000:2c:00.0",
    ];
    let group = r.join("sys/kernel/iommu_groups/13/devices");
    for s in &switches[1..] {
        let dev = std::fs::canonicalize(r.join("sys/bus/pci/devices").join(s)).unwrap();
        relink(
            &dev.join("iommu_group"),
            "../../../../../../kernel/iommu_groups/13",
        );
        let rel = dev
            .strip_prefix(std::fs::canonicalize(r.join("sys")).unwrap())
            .unwrap();
        relink(&group.join(s), &format!("../../../../{}", rel.display()));
    }
    let shared = check_json(r, "tdx");
    let node = shared
        .iter()
        .find(|n| n["id"] == "gpu.iommu_group")
        .unwrap();
    assert_eq!(node["status"], "pass", "{node}");
    assert!(
        node["message"]
            .as_str()
            .unwrap()
            .contains("group 13 holds 4"),
        "{node}"
    );
    assert!(
        contradictions("shared", &shared).is_empty(),
        "{:?}",
        contradictions("shared", &shared)
    );

    let dev = std::fs::canonicalize(r.join("sys/bus/pci/devices/0000:29:00.0")).unwrap();
    relink(
        &dev.join("driver"),
        "../../../../../../bus/pci/drivers/vfio-pci",
    );
    let mixed = check_json(r, "tdx");
    let node = mixed.iter().find(|n| n["id"] == "gpu.iommu_group").unwrap();
    assert_eq!(node["status"], "fail", "{node}");
    assert!(
        node["message"].as_str().unwrap().contains("not viable"),
        "{node}"
    );
    assert!(
        node["remedy"].as_str().unwrap().contains("0000:2a:00.0"),
        "{node}"
    );
}

/// The IOMMU-off remedy of a refused bind never suggests amd_iommu=on (not a valid
/// value; cchost's own plan removes it).
#[test]
fn no_remedy_suggests_amd_iommu_on() {
    for src in fixture_hosts() {
        let run = cchost(&src, &["check"]);
        assert!(
            !run.stdout.contains("add amd_iommu=on") && !run.stdout.contains("or amd_iommu=on"),
            "{}: {}",
            src.display(),
            run.stdout
        );
    }
    let root = copy_host(&fixture("host/no-iommu"));
    let run = cchost(root.path(), &["gpu", "bind", "--all", "--dry-run"]);
    assert!(
        !run.stderr.contains("or amd_iommu=on") && !run.stdout.contains("or amd_iommu=on"),
        "{run:?}"
    );
}

/// `check` offers `gpu bind --all` only when that command would do it.
#[test]
fn check_does_not_offer_a_bind_the_host_refuses() {
    for src in fixture_hosts() {
        let root = copy_host(&src);
        let run = cchost(root.path(), &["check", "--json"]);
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        let mut all = Vec::new();
        nodes(&v["checks"], &mut all);
        let Some(n) = all.iter().find(|n| n["id"] == "gpu.vfio_bound") else {
            continue;
        };
        let remedy = n["remedy"].as_str().unwrap_or_default();
        if remedy.starts_with("cchost gpu bind --all") {
            let bind = cchost(root.path(), &["gpu", "bind", "--all", "--dry-run"]);
            assert_eq!(
                bind.code,
                Some(0),
                "{}: check offers `{remedy}` but: {bind:?}",
                src.display()
            );
        }
    }
}

/// A permission error on /proc/cpuinfo is not "mount /proc".
#[test]
fn an_unreadable_cpuinfo_is_not_told_to_mount_proc() {
    let root = copy_host(&fixture("host/tdx-8xh100-4nvswitch"));
    plant_fifo(root.path(), "/proc/cpuinfo");
    let run = cchost(root.path(), &["check", "--json"]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let mut all = Vec::new();
    nodes(&v["checks"], &mut all);
    let n = all.iter().find(|n| n["id"] == "cpu").unwrap();
    assert_eq!(n["status"], "fail", "{n}");
    assert!(!n["remedy"].as_str().unwrap().contains("mounted"), "{n}");
}

/// TDX module failure with an unreadable kernel log, kvm_intel.tdx=1 on the command
/// line: no "add kvm_intel.tdx=1".
#[test]
fn tdx_on_the_command_line_is_not_told_to_add_it() {
    let root = copy_host(&fixture("host/tdx-module-failed"));
    let r = root.path();
    plant_fifo(r, "/dev/kmsg");
    std::fs::write(r.join("sys/module/kvm_intel/parameters/tdx"), "N\n").unwrap();
    let cmdline = std::fs::read_to_string(r.join("proc/cmdline")).unwrap();
    assert!(cmdline.contains("kvm_intel.tdx=1"), "{cmdline}");
    let run = cchost(r, &["check"]);
    assert!(
        !run.stdout.contains("add kvm_intel.tdx=1"),
        "{}",
        run.stdout
    );
}
