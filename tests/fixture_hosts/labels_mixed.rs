//! A mixed node (`[[cc.modes]]`: some GPUs in CC mode, some not) as its labels show it:
//! the fixture host with four H100s on vfio-pci, each `resource0` holding the CC
//! register, read through the live read-only path (as `cchost run` and `cchost plan`
//! do), and the node selectors of OpenShift sandboxed containers' GPU RuntimeClasses
//! (docs/facts/mixed-node.md#osc-gpu-runtimeclass-selectors) and of the RuntimeClasses
//! shipped in deploy/kubernetes/runtimeclasses-mixed-gpu.yaml run against them.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cchost::config::{Config, PluginMode};
use cchost::gpu::cc::regs;
use cchost::gpu::cc::sim::register_file;
use cchost::host::HostRoot;
use cchost::inventory::Inventory;
use cchost::inventory::facts::NodeFacts;
use cchost::labels::cc_mode::{CcModeCache, live_query};
use cchost::labels::compute::{NV_CC_MODE_STATE, NV_CC_READY_STATE};
use cchost::labels::{NodeLabels, compute, duties::duties};
use serde::Deserialize;
use serde_json::Value;

use crate::check_json::find_check;

const MIXED_STATE: &str = "cchost.io/cc.mode.state";
const TWO_AND_TWO: &str =
    "[[cc.modes]]\nmode = \"on\"\ncount = 2\n[[cc.modes]]\nmode = \"off\"\ncount = 2\n";

struct Node {
    dir: tempfile::TempDir,
    host: HostRoot,
}

/// The four-H100 vfio host, GPU `i` (address order) holding CC register `regs_[i]`;
/// `None`: a `resource0` too small for the registers (its mode cannot be read).
fn node(cc: [Option<u32>; 4]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let host = cchost::fixture::scenarios::gpus_on_vfio(dir.path())
        .build()
        .unwrap();
    let mut gpus: Vec<String> =
        NodeFacts::from_inventory(&Inventory::collect(&host, &Config::default()))
            .gpus
            .iter()
            .map(|g| g.address.clone())
            .collect();
    gpus.sort();
    assert_eq!(gpus.len(), 4);
    for (g, reg) in gpus.iter().zip(cc) {
        let Some(reg) = reg else { continue };
        register_file::write_booted(&host, g, reg).unwrap();
    }
    Node { dir, host }
}

/// cchost doing the replaced stack's jobs, plus `extra` TOML.
fn config(extra: &str) -> Config {
    let mut cfg = Config::from_toml(extra, Path::new("c.toml")).unwrap();
    cfg.vfio.bind_on_start = true;
    cfg.device_plugin.mode = PluginMode::On;
    cfg
}

fn labels(n: &Node, cfg: &Config) -> NodeLabels {
    let mut facts = NodeFacts::from_inventory(&Inventory::collect(&n.host, cfg));
    facts.duties = duties(cfg, &n.host);
    CcModeCache::default().fill(&n.host, &cfg.matching, &mut facts, &live_query(&n.host));
    compute(&facts, &cfg.labels)
}

fn get<'a>(l: &'a NodeLabels, k: &str) -> Option<&'a str> {
    l.labels.get(k).map(String::as_str)
}

type Sel = BTreeMap<String, String>;

/// OSC's two GPU RuntimeClasses with `checkNodeEligibility` (TDX host):
/// `nvidiaGPUNodeLabels`, and those overridden by `nvidiaGPUCCNodeLabels` plus the TDX
/// label (openshift/sandboxed-containers-operator controllers/openshift_controller.go,
/// controllers/confidential_handler.go).
fn osc() -> (Sel, Sel) {
    let plain: Sel = [
        ("nvidia.com/gpu.present", "true"),
        ("nvidia.com/gpu.deploy.vfio-manager", "true"),
        ("nvidia.com/gpu.deploy.kata-sandbox-device-plugin", "true"),
        ("nvidia.com/cc.mode.state", "off"),
        ("nvidia.com/cc.ready.state", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut cc = plain.clone();
    cc.insert("nvidia.com/cc.mode.state".into(), "on".into());
    cc.insert("nvidia.com/cc.ready.state".into(), "true".into());
    cc.insert("intel.feature.node.kubernetes.io/tdx".into(), "true".into());
    (plain, cc)
}

/// The shipped RuntimeClasses: name -> (handler, nodeSelector).
fn shipped() -> BTreeMap<String, (String, Sel)> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/runtimeclasses-mixed-gpu.yaml");
    let text = std::fs::read_to_string(p).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .map(|rc| {
            assert_eq!(rc["apiVersion"], "node.k8s.io/v1");
            assert_eq!(rc["kind"], "RuntimeClass");
            let sel: Sel =
                serde_json::from_value(rc["scheduling"]["nodeSelector"].clone()).unwrap();
            (
                rc["metadata"]["name"].as_str().unwrap().to_string(),
                (rc["handler"].as_str().unwrap().to_string(), sel),
            )
        })
        .collect()
}

fn matches(l: &NodeLabels, s: &Sel) -> bool {
    s.iter().all(|(k, v)| get(l, k) == Some(v.as_str()))
}

#[test]
fn a_mixed_node_says_mixed_and_only_the_shipped_classes_select_it() {
    let n = node([Some(1), Some(1), Some(0), Some(0)]);
    let l = labels(&n, &config(TWO_AND_TWO));
    assert_eq!(get(&l, MIXED_STATE), Some("mixed"), "{l:?}");
    // NVIDIA's vocabulary has one mode per node: on a mixed node neither label is
    // written (any one value would be false for half the GPUs), and not `failed`
    // either, because nothing failed.
    assert_eq!(get(&l, NV_CC_MODE_STATE), None, "{l:?}");
    assert_eq!(get(&l, NV_CC_READY_STATE), None, "{l:?}");
    assert_eq!(get(&l, "nvidia.com/gpu.present"), Some("true"));
    assert_eq!(get(&l, "nvidia.com/cc.capable"), Some("true"));
    // OSC's stock pair (checkNodeEligibility): neither can select this node.
    let (plain, cc) = osc();
    assert!(!matches(&l, &plain) && !matches(&l, &cc), "{l:?}");
    // The shipped pair can, both at once; the SNP class not on a TDX host.
    let rcs = shipped();
    assert!(matches(&l, &rcs["kata-nvidia-gpu-mixed"].1), "{l:?}");
    assert!(matches(&l, &rcs["kata-cc-nvidia-gpu-mixed-tdx"].1), "{l:?}");
    assert!(
        !matches(&l, &rcs["kata-cc-nvidia-gpu-mixed-snp"].1),
        "{l:?}"
    );
}

#[test]
fn the_shipped_classes_use_osc_handlers_and_select_only_mixed_nodes() {
    let rcs = shipped();
    let handlers: Vec<(&str, &str)> = rcs
        .iter()
        .map(|(k, (h, _))| (k.as_str(), h.as_str()))
        .collect();
    // The handlers the operator's classes use (kataNvidiaGPURuntimeClassName,
    // kataNvidiaGPUCCIntelHandler, kataNvidiaGPUCCAmdHandler).
    assert_eq!(
        handlers,
        [
            ("kata-cc-nvidia-gpu-mixed-snp", "kata-snp-nvidia-gpu"),
            ("kata-cc-nvidia-gpu-mixed-tdx", "kata-tdx-nvidia-gpu"),
            ("kata-nvidia-gpu-mixed", "kata-nvidia-gpu"),
        ]
    );
    // A whole-node CC or non-CC node: the operator's class for its mode matches, the
    // shipped ones do not (their pods ask for the split resources, which exist only on
    // a mixed node).
    let (plain, cc) = osc();
    for (reg, osc_class) in [(1, &cc), (0, &plain)] {
        let n = node([Some(reg); 4]);
        let l = labels(&n, &config(""));
        assert!(matches(&l, osc_class), "register {reg}: {l:?}");
        for (name, (_, sel)) in &rcs {
            assert!(!matches(&l, sel), "{name} on a whole-node host: {l:?}");
        }
    }
}

#[test]
fn disagreeing_gpus_are_failed_unless_the_split_is_configured_and_clean() {
    // (config, registers, cchost state, NVIDIA state, ready)
    let on_off = [Some(1), Some(1), Some(0), Some(0)];
    for (extra, cc, want, nv, ready) in [
        // No per-GPU modes: one mode was meant, the node is not honouring it.
        ("", on_off, Some("failed"), Some("failed"), Some("")),
        // Per-GPU modes and every GPU in one of them: that mode, as NVIDIA says it.
        (
            TWO_AND_TWO,
            [Some(1); 4],
            Some("on"),
            Some("on"),
            Some("true"),
        ),
        (
            TWO_AND_TWO,
            [Some(0); 4],
            Some("off"),
            Some("off"),
            Some("false"),
        ),
        // A GPU in devtools or the invalid mode 2: failed even with per-GPU modes.
        (
            TWO_AND_TWO,
            [Some(1), Some(3), Some(0), Some(0)],
            Some("failed"),
            Some("failed"),
            Some(""),
        ),
        (
            TWO_AND_TWO,
            [Some(1), Some(2), Some(0), Some(0)],
            Some("failed"),
            Some("failed"),
            Some(""),
        ),
        // PPCIe (bit 5) next to off: PPCIe is whole-board, so this is no split.
        (
            TWO_AND_TWO,
            [
                Some(1 | regs::HOPPER_PPCIE_BIT),
                Some(1 | regs::HOPPER_PPCIE_BIT),
                Some(0),
                Some(0),
            ],
            Some("failed"),
            Some("failed"),
            Some(""),
        ),
        // A GPU whose mode cannot be read: nothing is said.
        (
            TWO_AND_TWO,
            [Some(1), None, Some(0), Some(0)],
            None,
            None,
            None,
        ),
    ] {
        let n = node(cc);
        let l = labels(&n, &config(extra));
        let what = format!("config {extra:?}, registers {cc:?}");
        assert_eq!(get(&l, MIXED_STATE), want, "{what}: {l:?}");
        assert_eq!(get(&l, NV_CC_MODE_STATE), nv, "{what}: {l:?}");
        assert_eq!(get(&l, NV_CC_READY_STATE), ready, "{what}: {l:?}");
    }
}

/// `cchost plan --json` on the mixed host shows the labels `cchost run` would keep.
#[test]
fn plan_shows_the_mixed_labels() {
    let n = node([Some(1), Some(1), Some(0), Some(0)]);
    let cfg_path = n.dir.path().join("cchost.toml");
    std::fs::write(
        &cfg_path,
        format!("[vfio]\nbind_on_start = true\n[device_plugin]\nmode = \"on\"\n{TWO_AND_TWO}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(n.dir.path())
        .arg("--config")
        .arg(&cfg_path)
        .args(["plan", "--json"])
        .env_remove("CCHOST_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let plan: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let labels = &plan["labels"];
    assert_eq!(labels[MIXED_STATE], "mixed", "{plan:#}");
    assert!(labels.get(NV_CC_MODE_STATE).is_none(), "{labels:#}");
    assert_eq!(
        labels["nvidia.com/gpu.deploy.kata-sandbox-device-plugin"],
        "true"
    );
}

/// `cchost check` on the eight-H100 host judges `[[cc.modes]]` against its GPUs: a
/// fitting split passes and says it; a count too large fails with the entry named.
#[test]
fn check_judges_the_per_gpu_modes_against_the_host() {
    fn gpu_cc(config: &str) -> Value {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cchost.toml");
        std::fs::write(&cfg, config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_cchost"))
            .arg("--host-root")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/host/tdx-8xh100-4nvswitch"))
            .arg("--config")
            .arg(&cfg)
            .args(["check", "--json"])
            .env_remove("CCHOST_CONFIG")
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        find_check(&v["checks"], "gpu.cc")
            .expect("gpu.cc in the report")
            .clone()
    }
    let ok =
        gpu_cc("[[cc.modes]]\nmode = \"on\"\ncount = 4\n[[cc.modes]]\nmode = \"off\"\ncount = 4\n");
    assert_eq!(ok["status"], "pass", "{ok:#}");
    let msg = ok["message"].as_str().unwrap();
    assert!(msg.contains("cc.modes: 4 CC (on), 4 non-CC (off)"), "{msg}");
    let bad =
        gpu_cc("[[cc.modes]]\nmode = \"on\"\ncount = 4\n[[cc.modes]]\nmode = \"off\"\ncount = 5\n");
    assert_eq!(bad["status"], "fail", "{bad:#}");
    let msg = bad["message"].as_str().unwrap();
    assert!(
        msg.contains("cc.modes[1] (mode = \"off\", count = 5) asks for 5 GPUs, but only 4"),
        "{msg}"
    );
}
