//! The host CDI spec: names, device nodes per vfio mode, versions, atomic files, and
//! validation of every spec against the upstream CDI JSON schema.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use crate::support::device_plugin::{add_behind, gpu, hgx_like, hgx_like_mixed_split, whole_host};
use cchost::cdi;
use cchost::config::{Config, DevicePluginConfig};
use cchost::fixture::{PciSpec, Tree};
use cchost::inventory::passthrough::{self, Health, VfioMode};
use serde_json::Value;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cdi-schema")
}

/// Resolves schema.json's relative `$ref`s to defs.json.
struct Defs(Value);

impl jsonschema::Retrieve for Defs {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str().ends_with("defs.json") {
            Ok(self.0.clone())
        } else {
            Err(format!("unexpected reference {}", uri.as_str()).into())
        }
    }
}

fn validator() -> jsonschema::Validator {
    let read = |n: &str| -> Value {
        serde_json::from_slice(&std::fs::read(schema_dir().join(n)).unwrap()).unwrap()
    };
    jsonschema::options()
        .with_retriever(Defs(read("defs.json")))
        .build(&read("schema.json"))
        .expect("the CDI schema compiles")
}

fn assert_valid(v: &jsonschema::Validator, doc: &Value) {
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
}

#[test]
fn upstream_good_and_bad_examples() {
    let v = validator();
    for name in ["minimal.json", "spec-example.json"] {
        let text = std::fs::read(schema_dir().join("testdata/good").join(name)).unwrap();
        let doc: Value = serde_json::from_slice(&text).unwrap();
        assert_valid(&v, &doc);
    }
    for name in ["empty.json", "explicit-empty.json"] {
        let text = std::fs::read(schema_dir().join("testdata/bad").join(name)).unwrap();
        // An empty file is not even JSON; `{}` lacks the required fields.
        let ok = match serde_json::from_slice::<Value>(&text) {
            Ok(doc) => v.is_valid(&doc),
            Err(_) => false,
        };
        assert!(!ok, "{name} must be refused");
    }
    // And the validator is not a rubber stamp: a device without containerEdits fails.
    let bad = serde_json::json!({"cdiVersion": "0.5.0", "kind": "nvidia.com/pgpu", "devices": [{"name": "3"}]});
    assert!(!v.is_valid(&bad));
}

fn read_spec(h: &Tree, name: &str) -> Value {
    serde_json::from_str(&h.host.read_string(format!("/var/run/cdi/{name}")).unwrap()).unwrap()
}

#[test]
fn legacy_host_gets_group_nodes_named_by_group_number() {
    let (h, _) = hgx_like();
    let cfg = DevicePluginConfig::default();
    let scan = passthrough::discover(&h.host, &Config::default().matching, &cfg).unwrap();
    assert_eq!(scan.mode, VfioMode::Legacy);
    let report = cdi::sync(&h.host, &cfg.cdi_dir, &scan).unwrap();
    assert_eq!(report.written.len(), 2, "{report:?}");
    let v = validator();
    let gpu = read_spec(&h, "cchost-nvidia.com-pgpu.json");
    assert_valid(&v, &gpu);
    assert_eq!(gpu["kind"], "nvidia.com/pgpu");
    // Names start with a digit: 0.5.0 is the lowest version that allows that.
    assert_eq!(gpu["cdiVersion"], "0.5.0");
    let names: Vec<&str> = gpu["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["12", "13", "14", "40"]);
    assert_eq!(
        gpu["devices"][0]["containerEdits"]["deviceNodes"],
        serde_json::json!([{"path": "/dev/vfio/vfio"}, {"path": "/dev/vfio/12"}])
    );
    let sw = read_spec(&h, "cchost-nvidia.com-nvswitch.json");
    assert_valid(&v, &sw);
    assert_eq!(sw["devices"][0]["name"], "60");
    // The same names the plugin advertises.
    let ids: Vec<&str> = scan
        .devices
        .iter()
        .filter(|d| d.resource == "nvidia.com/pgpu")
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids, names);
    // Never the toolkit's file name.
    assert!(!h.host.exists("/var/run/cdi/nvidia.yaml"));
}

#[test]
fn iommufd_host_gets_cdev_nodes_named_by_vfio_number() {
    let h = whole_host();
    h.enable_iommufd();
    add_behind(&h, &["0000:3a:00.0"], gpu("0000:3b:00.0", 7, 0).vfio_dev(2));
    let cfg = DevicePluginConfig::default();
    let scan = passthrough::discover(&h.host, &Config::default().matching, &cfg).unwrap();
    assert_eq!(scan.mode, VfioMode::Iommufd);
    cdi::sync(&h.host, &cfg.cdi_dir, &scan).unwrap();
    let spec = read_spec(&h, "cchost-nvidia.com-pgpu.json");
    assert_valid(&validator(), &spec);
    assert_eq!(spec["devices"][0]["name"], "2");
    assert_eq!(
        spec["devices"][0]["containerEdits"]["deviceNodes"],
        serde_json::json!([{"path": "/dev/vfio/devices/vfio2"}])
    );
    assert!(scan.devices[0].health.is_healthy());
}

#[test]
fn devices_that_leave_are_removed_and_empty_kinds_lose_their_file() {
    let (h, funcs) = hgx_like();
    let cfg = DevicePluginConfig::default();
    let m = Config::default().matching;
    cdi::sync(
        &h.host,
        &cfg.cdi_dir,
        &passthrough::discover(&h.host, &m, &cfg).unwrap(),
    )
    .unwrap();
    // A stranger's spec in the same directory is never touched.
    h.file("/var/run/cdi/nvidia.yaml", "cdiVersion: 0.5.0\n");
    h.set_driver(&funcs[1].address, Some("nvidia"));
    h.set_driver(&funcs[4].address, None);
    let scan = passthrough::discover(&h.host, &m, &cfg).unwrap();
    let report = cdi::sync(&h.host, &cfg.cdi_dir, &scan).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(
        !h.host
            .exists("/var/run/cdi/cchost-nvidia.com-nvswitch.json")
    );
    let gpu = read_spec(&h, "cchost-nvidia.com-pgpu.json");
    let names: Vec<&str> = gpu["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["12", "14", "40"]);
    assert!(h.host.exists("/var/run/cdi/nvidia.yaml"));
    // Idempotent: a second pass changes nothing.
    let again = cdi::sync(&h.host, &cfg.cdi_dir, &scan).unwrap();
    assert!(
        again.written.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
    // No temp files left behind.
    let left: Vec<String> = h.host.list_dir("/var/run/cdi").unwrap();
    assert_eq!(left, ["cchost-nvidia.com-pgpu.json", "nvidia.yaml"]);
}

#[test]
fn per_model_resource_names() {
    let (h, _) = hgx_like();
    let cfg = DevicePluginConfig {
        gpu_resource: String::new(),
        ..Default::default()
    };
    let scan = passthrough::discover(&h.host, &Config::default().matching, &cfg).unwrap();
    cdi::sync(&h.host, &cfg.cdi_dir, &scan).unwrap();
    let spec = read_spec(&h, "cchost-nvidia.com-GH100_H100_SXM5_80GB.json");
    assert_valid(&validator(), &spec);
    assert_eq!(spec["kind"], "nvidia.com/GH100_H100_SXM5_80GB");
    assert_eq!(
        scan.resources(),
        ["nvidia.com/GH100_H100_SXM5_80GB", "nvidia.com/nvswitch"]
    );
    // `nvswitch_resource = ""` too: per-model NVSwitch names (NVSWITCH_ALIAS="").
    let cfg = DevicePluginConfig {
        gpu_resource: String::new(),
        nvswitch_resource: String::new(),
        ..Default::default()
    };
    let scan = passthrough::discover(&h.host, &Config::default().matching, &cfg).unwrap();
    let mut resources = scan.resources();
    resources.sort();
    assert_eq!(
        resources,
        [
            "nvidia.com/GH100_H100_NVSWITCH",
            "nvidia.com/GH100_H100_SXM5_80GB"
        ]
    );
}

#[test]
fn a_malformed_device_is_skipped_and_reported_without_blocking_the_others() {
    let (h, _) = hgx_like();
    // Garbage in one GPU's class attribute.
    h.file(
        "/sys/devices/pci0000:00/0000:00:02.0/0000:05:00.0/0000:06:00.0/0000:07:00.0/class",
        "banana\n",
    );
    let cfg = DevicePluginConfig::default();
    let scan = passthrough::discover(&h.host, &Config::default().matching, &cfg).unwrap();
    let ids: Vec<&str> = scan.devices.iter().map(|d| d.id.as_str()).collect();
    // Sorted by resource (nvswitch before pgpu), then by number.
    assert_eq!(ids, ["60", "12", "13", "40"]);
    let why = scan
        .skipped
        .iter()
        .find(|s| s.address.map(|a| a.to_string()) == Some("0000:07:00.0".into()))
        .unwrap();
    assert!(why.reason.contains("class"), "{why:?}");
}

#[test]
fn health_reflects_the_vfio_node_and_group_viability() {
    let (h, funcs) = hgx_like();
    let cfg = DevicePluginConfig::default();
    let m = Config::default().matching;
    h.remove("/dev/vfio/13");
    // A foreign endpoint in group 14, bound to a host driver: the group is not viable.
    add_behind(
        &h,
        &["0000:00:02.0", "0000:05:00.0", "0000:06:00.0"],
        PciSpec::ad102_hda("0000:07:00.1")
            .group(14)
            .numa(0)
            .driver("snd_hda_intel"),
    );
    let scan = passthrough::discover(&h.host, &m, &cfg).unwrap();
    let health = |id: &str| {
        scan.devices
            .iter()
            .find(|d| d.id == id)
            .unwrap()
            .health
            .clone()
    };
    assert!(matches!(health("13"), Health::Unhealthy(r) if r.contains("/dev/vfio/13")));
    assert!(matches!(health("14"), Health::Unhealthy(r) if r.contains("snd_hda_intel")));
    assert!(health("12").is_healthy());
    let _ = funcs;
}

#[test]
fn cli_generate_writes_and_prints() {
    let (h, _) = hgx_like();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cchost"))
        .args(["--host-root"])
        .arg(h.root())
        .args(["cdi", "generate", "--stdout"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"kind\": \"nvidia.com/pgpu\""), "{text}");
    assert!(!h.host.exists("/var/run/cdi"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cchost"))
        .args(["--host-root"])
        .arg(h.root())
        .args(["cdi", "generate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(h.host.exists("/var/run/cdi/cchost-nvidia.com-pgpu.json"));
}

/// Issue 13 item 5: a PCI bus that cannot be listed is not "every device gone":
/// `cdi generate` fails (exit 2, saying why) and the specs written before stay.
#[test]
fn cli_generate_fails_and_keeps_the_specs_when_the_bus_cannot_be_read() {
    let (h, _) = hgx_like();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cchost"))
            .args(["--host-root"])
            .arg(h.root())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["cdi", "generate"]).status.success());
    let spec = "/var/run/cdi/cchost-nvidia.com-pgpu.json";
    let before = std::fs::read(h.path(spec)).unwrap();
    // The bus directory turns unreadable (a symlink loop stands in for an I/O error).
    let bus = h.path("/sys/bus/pci/devices");
    std::fs::rename(&bus, bus.with_file_name("devices.away")).unwrap();
    std::os::unix::fs::symlink("devices", &bus).unwrap();
    for args in [&["cdi", "generate"][..], &["cdi", "generate", "--stdout"]] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("cannot list the PCI bus"), "{err}");
    }
    assert_eq!(std::fs::read(h.path(spec)).unwrap(), before);
}

/// `cdi generate --stdout` prints one JSON document (an array of specs) even when
/// there are several kinds.
#[test]
fn cli_generate_stdout_is_one_json_document() {
    let (h, _) = hgx_like();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cchost"))
        .args(["--host-root"])
        .arg(h.root())
        .args(["cdi", "generate", "--stdout"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let specs = v.as_array().expect("an array of specs");
    assert!(specs.len() >= 2, "{v}");
    let v = validator();
    for s in specs {
        assert!(v.is_valid(s), "{s}");
    }
}

/// The shared fixture host with four H100s on vfio-pci (tests/host/gpus-on-vfio): it
/// has both group nodes and iommufd cdevs, so `auto` picks iommufd, and `legacy` the
/// groups; both specs validate.
#[test]
fn shared_fixture_gpus_on_vfio_in_both_modes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/host/gpus-on-vfio");
    let host = cchost::host::HostRoot::new(&root).unwrap();
    let m = Config::default().matching;
    let v = validator();
    for (mode, want_ids, want_first) in [
        (
            cchost::config::VfioModeConfig::Auto,
            vec!["0", "1", "2", "3"],
            serde_json::json!([{"path": "/dev/vfio/devices/vfio0"}]),
        ),
        (
            cchost::config::VfioModeConfig::Legacy,
            vec!["5", "7", "11", "13"],
            serde_json::json!([{"path": "/dev/vfio/vfio"}, {"path": "/dev/vfio/5"}]),
        ),
    ] {
        let cfg = DevicePluginConfig {
            vfio_mode: mode,
            ..Default::default()
        };
        let scan = passthrough::discover(&host, &m, &cfg).unwrap();
        let ids: Vec<&str> = scan.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, want_ids, "{mode:?}: {scan:#?}");
        assert!(
            scan.devices.iter().all(|d| d.health.is_healthy()),
            "{scan:#?}"
        );
        let specs = cdi::specs_for(&scan).unwrap();
        assert_eq!(specs.len(), 1);
        let doc: Value = serde_json::from_slice(&cdi::render(&specs[0]).unwrap()).unwrap();
        assert_valid(&v, &doc);
        assert_eq!(
            doc["devices"][0]["containerEdits"]["deviceNodes"],
            want_first
        );
    }
}

/// A leftover spec of NVIDIA's sandbox device plugin (`nvidia.com-pgpu.yaml`, kind
/// `nvidia.com/pgpu`) makes every `nvidia.com/pgpu` device unresolvable: `check` fails
/// and names the file; the toolkit's `nvidia.yaml` (kind `nvidia.com/gpu`) is fine.
#[test]
fn a_foreign_spec_with_cchost_s_kind_fails_check_and_names_the_file() {
    use cchost::check::{Profile, Report, Status};
    use cchost::inventory::Inventory;
    let (h, _) = hgx_like();
    let cfg = Config::default();
    let report = |h: &Tree| {
        let inv = Inventory::collect(&h.host, &cfg);
        Report::new_on(&inv, &cfg, Profile::Auto, Some(&h.host))
    };
    let r = report(&h);
    let c = r.find("cdi.conflicts").expect("the check");
    assert_eq!(c.outcome.status, Status::Pass, "{:?}", c.outcome);

    h.file(
        "/etc/cdi/nvidia.com-pgpu.yaml",
        "cdiVersion: 0.5.0\nkind: nvidia.com/pgpu\ndevices:\n- name: \"12\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/vfio/12\n",
    );
    let r = report(&h);
    let c = r.find("cdi.conflicts").expect("the check");
    assert_eq!(c.outcome.status, Status::Fail, "{:?}", c.outcome);
    assert!(
        c.outcome.message.contains("/etc/cdi/nvidia.com-pgpu.yaml")
            && c.outcome.message.contains("nvidia.com/pgpu"),
        "{:?}",
        c.outcome
    );
    assert!(
        c.outcome
            .remedy
            .as_deref()
            .unwrap()
            .contains("remove /etc/cdi/nvidia.com-pgpu.yaml"),
        "{:?}",
        c.outcome
    );
    assert!(!r.ready);

    // The device names that clash are named too (the daemon's message).
    let scan = passthrough::discover(&h.host, &cfg.matching, &cfg.device_plugin).unwrap();
    let kinds = scan.resources().into_iter().collect();
    let ids = scan.devices.iter().map(|d| d.id.clone()).collect();
    let found = cdi::foreign::conflicts(&h.host, "/var/run/cdi", &kinds, &ids);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].devices, ["12"]);
}

/// A mixed node (`cc.modes`): CC GPUs under `nvidia.com/pgpu`, the others under
/// `nvidia.com/pgpu-nocc`, each kind in its own spec whose device names are exactly the
/// IDs advertised under that resource; a GPU whose firmware disagrees (or is unread) is
/// advertised unhealthy, never under the other name.
#[test]
fn mixed_node_has_two_gpu_kinds_named_like_the_two_resources() {
    use cchost::inventory::cc_split;
    let (h, _) = hgx_like();
    let cfg = DevicePluginConfig::default();
    let mut scan = passthrough::discover(&h.host, &Config::default().matching, &cfg).unwrap();
    cc_split::apply(&mut scan, &hgx_like_mixed_split(&h));
    let by: Vec<(&str, &str, bool)> = scan
        .devices
        .iter()
        .map(|d| (d.resource.as_str(), d.id.as_str(), d.health.is_healthy()))
        .collect();
    assert_eq!(
        by,
        [
            ("nvidia.com/nvswitch", "60", true),
            ("nvidia.com/pgpu", "12", true),
            ("nvidia.com/pgpu", "13", false),
            ("nvidia.com/pgpu-nocc", "14", true),
            ("nvidia.com/pgpu-nocc", "40", false),
        ]
    );
    let why = |id: &str| match &scan.devices.iter().find(|d| d.id == id).unwrap().health {
        Health::Unhealthy(r) => r.clone(),
        Health::Healthy => String::new(),
    };
    assert!(
        why("13").contains("firmware CC mode is off"),
        "{}",
        why("13")
    );
    assert!(why("40").contains("not read yet"), "{}", why("40"));

    let report = cdi::sync(&h.host, &cfg.cdi_dir, &scan).unwrap();
    assert_eq!(report.written.len(), 3, "{report:?}");
    let v = validator();
    for (file, kind, names) in [
        (
            "cchost-nvidia.com-pgpu.json",
            "nvidia.com/pgpu",
            vec!["12", "13"],
        ),
        (
            "cchost-nvidia.com-pgpu-nocc.json",
            "nvidia.com/pgpu-nocc",
            vec!["14", "40"],
        ),
    ] {
        let spec = read_spec(&h, file);
        assert_valid(&v, &spec);
        assert_eq!(spec["kind"], kind, "{file}");
        let got: Vec<&str> = spec["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(got, names, "{file}");
    }
}

/// `cc.modes` that does not fit the host: no GPU is advertised (which one is
/// confidential would be a guess); NVSwitches still are.
#[test]
fn mixed_modes_that_do_not_fit_serve_no_gpu() {
    use cchost::inventory::cc_split;
    let (h, _) = hgx_like();
    let cfg = DevicePluginConfig::default();
    let mut scan = passthrough::discover(&h.host, &Config::default().matching, &cfg).unwrap();
    let mut split = hgx_like_mixed_split(&h);
    split.wanted = Err("cc.modes: cc.modes[1] asks for 5 GPUs".to_string());
    cc_split::apply(&mut scan, &split);
    let left: Vec<&str> = scan.devices.iter().map(|d| d.resource.as_str()).collect();
    assert_eq!(left, ["nvidia.com/nvswitch"]);
    assert_eq!(
        scan.skipped
            .iter()
            .filter(|s| s.reason.contains("asks for 5 GPUs"))
            .count(),
        4
    );
}
