//! `cchost inventory` on a real kernel: the IOMMU in the mode the guest's command line
//! asked for and the two test devices with the IOMMU groups the guest's own sysfs
//! shows; then `cchost capture` in the guest, read back outside, gives the same
//! inventory as live — proof that the capture (fixture) format is the kernel's.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use crate::harness::Vm;
use serde_json::Value;

/// The two emulated test devices selected as GPUs through the GPU-matching config.
const TEST_DEVICES_CONFIG: &str = "\
[[match.gpu]]
vendor = 0x1234
devices = [0x11e8]

[[match.gpu]]
vendor = 0x1b36
devices = [0x0005]
";

/// One line per PCI function as the guest's sysfs shows it:
/// `bdf vendor device class group group-type`.
const SYSFS_PCI: &str = r#"for d in /sys/bus/pci/devices/*; do
  g=$(readlink $d/iommu_group); g=${g##*/}
  echo "${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class) ${g:-none} $(cat $d/iommu_group/type 2>/dev/null || echo none)"
done"#;

#[derive(Debug, Clone, PartialEq)]
struct SysfsPci {
    bdf: String,
    vendor: u16,
    device: u16,
    class: u32,
    group: Option<u64>,
    group_type: String,
}

fn hex(s: &str) -> u32 {
    u32::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("not hex: {s:?}: {e}"))
}

fn parse_sysfs_pci(lines: &[String]) -> Vec<SysfsPci> {
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 6, "bad sysfs line {l:?}");
            SysfsPci {
                bdf: f[0].into(),
                vendor: hex(f[1]) as u16,
                device: hex(f[2]) as u16,
                class: hex(f[3]),
                group: f[4].parse().ok(),
                group_type: f[5].into(),
            }
        })
        .collect()
}

fn find(devs: &[SysfsPci], vendor: u16, device: u16) -> &SysfsPci {
    devs.iter()
        .find(|d| d.vendor == vendor && d.device == device)
        .unwrap_or_else(|| panic!("{vendor:04x}:{device:04x} not in guest sysfs: {devs:#?}"))
}

/// Paths where two JSON values differ (for a readable failure).
fn json_diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => json_diff(u, v, &p, out),
                    (u, v) => out.push(format!("{p}: {u:?} vs {v:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                json_diff(u, v, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

#[track_caller]
fn assert_same_inventory(live: &Value, other: &Value, what: &str) {
    let mut diff = Vec::new();
    json_diff(live, other, "", &mut diff);
    assert!(
        diff.is_empty(),
        "inventory of the {what} differs from the live one:\n{}",
        diff.join("\n")
    );
}

fn inventory_on_real_kernel(kernel_args: &str, mode: &str, group_types: &[&str]) {
    let run = Vm::new()
        .kernel_args(kernel_args)
        .config(TEST_DEVICES_CONFIG)
        .cmd(SYSFS_PCI)
        .cmd("cchost inventory --json")
        .cmd("cchost capture /tmp/capture")
        .cmd("cchost --host-root /tmp/capture inventory --json")
        .fetch("/tmp/capture")
        .run();
    eprintln!(
        "{kernel_args}: kernel boot {:.1}s, boot + steps {:.1}s",
        run.boot_secs,
        run.elapsed.as_secs_f64()
    );

    // What the guest kernel itself says.
    let devs = parse_sysfs_pci(&run.step(0).assert_success().lines());
    let edu = find(&devs, 0x1234, 0x11e8);
    let testdev = find(&devs, 0x1b36, 0x0005);
    for d in [edu, testdev] {
        assert!(d.group.is_some(), "{d:?} has no IOMMU group");
        assert!(group_types.contains(&d.group_type.as_str()), "{d:?}");
    }

    // What cchost says, live.
    let inv = run.step(1).assert_success().json();
    let iommu = &inv["iommu"];
    assert_eq!(iommu["present"]["state"], "yes", "{iommu:#}");
    assert_eq!(iommu["enabled"]["state"], "yes", "{iommu:#}");
    assert_eq!(iommu["mode"], mode, "{iommu:#}");
    assert_eq!(
        iommu["cmdline_passthrough"],
        kernel_args.split_whitespace().any(|a| a == "iommu=pt"),
        "{iommu:#}"
    );
    let groups: std::collections::BTreeSet<u64> = devs.iter().filter_map(|d| d.group).collect();
    assert_eq!(iommu["groups"], groups.len(), "{iommu:#}");
    let mut types = std::collections::BTreeMap::<String, u64>::new();
    for g in &groups {
        let t = &devs
            .iter()
            .find(|d| d.group == Some(*g))
            .unwrap()
            .group_type;
        *types.entry(t.clone()).or_default() += 1;
    }
    assert_eq!(iommu["group_types"], serde_json::json!(types), "{iommu:#}");

    let gpus = inv["gpus"]["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no gpus.devices: {inv:#}"));
    assert_eq!(gpus.len(), 2, "both test devices matched: {gpus:#?}");
    for d in [edu, testdev] {
        let g = gpus
            .iter()
            .find(|g| g["address"] == d.bdf.as_str())
            .unwrap_or_else(|| panic!("{} not in inventory: {gpus:#?}", d.bdf));
        assert_eq!(g["vendor"], d.vendor, "{g:#}");
        assert_eq!(g["device"], d.device, "{g:#}");
        assert_eq!(g["class"], d.class, "{g:#}");
        assert_eq!(g["iommu_group"]["number"], d.group.unwrap(), "{g:#}");
        // Alone in its group, as the guest's sysfs says.
        let members = devs.iter().filter(|o| o.group == d.group).count();
        assert_eq!(
            g["iommu_group"]["others"].as_array().map(Vec::len),
            Some(members - 1),
            "{g:#}"
        );
    }

    // The capture reads back the same, inside the guest and outside.
    run.step(2).assert_success();
    let in_guest = run.step(3).assert_success().json();
    assert_same_inventory(&inv, &in_guest, "capture (read in the guest)");

    let capture = run.fetched("/tmp/capture");
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), TEST_DEVICES_CONFIG).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(capture)
        .arg("--config")
        .arg(cfg.path())
        .args(["inventory", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cchost inventory on the capture failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outside: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_same_inventory(&inv, &outside, "capture (read on the host)");
}

#[test]
fn inventory_sees_translated_iommu_and_real_groups() {
    inventory_on_real_kernel("intel_iommu=on", "translated", &["DMA", "DMA-FQ"]);
}

#[test]
fn inventory_sees_passthrough_iommu_with_iommu_pt() {
    inventory_on_real_kernel("intel_iommu=on iommu=pt", "passthrough", &["identity"]);
}
