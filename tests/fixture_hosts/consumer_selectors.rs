//! The node selectors of the stack that consumes cchost's node, each as read from the
//! consumer's own source (repository and file named with it; docs/labels.md lists them),
//! run against the labels cchost computes on the fixture hosts. A selector matches when
//! every `key=value` of it is on the node, as Kubernetes' `nodeSelector` does.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use cchost::config::{Config, PluginMode};
use cchost::gpu::cc::sim::register_file;
use cchost::host::HostRoot;
use cchost::inventory::Inventory;
use cchost::inventory::facts::CcMode;
use cchost::inventory::facts::NodeFacts;
use cchost::labels::cc_mode::{CcModeCache, live_query};
use cchost::labels::{NodeLabels, compute, duties::duties};

/// One consumer's selector.
struct Selector {
    who: &'static str,
    /// Repository and file the selector was read from.
    source: &'static str,
    labels: &'static [(&'static str, &'static str)],
}

/// The sandboxed-containers operator's `kata-nvidia-gpu` RuntimeClass (with
/// `checkNodeEligibility`): `nvidiaGPUNodeLabels`.
const OSC_KATA_NVIDIA_GPU: Selector = Selector {
    who: "OSC RuntimeClass kata-nvidia-gpu",
    source: "openshift/sandboxed-containers-operator controllers/openshift_controller.go (nvidiaGPUNodeLabels)",
    labels: &[
        ("nvidia.com/gpu.present", "true"),
        ("nvidia.com/gpu.deploy.vfio-manager", "true"),
        ("nvidia.com/gpu.deploy.kata-sandbox-device-plugin", "true"),
        ("nvidia.com/cc.mode.state", "off"),
        ("nvidia.com/cc.ready.state", "false"),
    ],
};

/// `kata-cc-nvidia-gpu` on TDX: the GPU labels, overridden by `nvidiaGPUCCNodeLabels`,
/// plus `intelTDXNodeLabels`.
const OSC_KATA_CC_NVIDIA_GPU_TDX: Selector = Selector {
    who: "OSC RuntimeClass kata-cc-nvidia-gpu (TDX)",
    source: "openshift/sandboxed-containers-operator controllers/confidential_handler.go (handleConfidentialBaremetal)",
    labels: &[
        ("nvidia.com/gpu.present", "true"),
        ("nvidia.com/gpu.deploy.vfio-manager", "true"),
        ("nvidia.com/gpu.deploy.kata-sandbox-device-plugin", "true"),
        ("nvidia.com/cc.mode.state", "on"),
        ("nvidia.com/cc.ready.state", "true"),
        ("intel.feature.node.kubernetes.io/tdx", "true"),
    ],
};

const OSC_KATA_CC_NVIDIA_GPU_SNP: Selector = Selector {
    who: "OSC RuntimeClass kata-cc-nvidia-gpu (SNP)",
    source: "openshift/sandboxed-containers-operator controllers/confidential_handler.go (handleConfidentialBaremetal)",
    labels: &[
        ("nvidia.com/gpu.present", "true"),
        ("nvidia.com/gpu.deploy.vfio-manager", "true"),
        ("nvidia.com/gpu.deploy.kata-sandbox-device-plugin", "true"),
        ("nvidia.com/cc.mode.state", "on"),
        ("nvidia.com/cc.ready.state", "true"),
        ("amd.feature.node.kubernetes.io/snp", "true"),
    ],
};

/// `kata-cc` (CPU only) on TDX / SNP: the TEE label; `computeTEE` also refuses a
/// cluster whose nodes carry two TEE labels.
const OSC_KATA_CC_TDX: Selector = Selector {
    who: "OSC RuntimeClass kata-cc (TDX)",
    source: "openshift/sandboxed-containers-operator controllers/confidential_handler.go (intelTDXNodeLabels)",
    labels: &[("intel.feature.node.kubernetes.io/tdx", "true")],
};

const OSC_KATA_CC_SNP: Selector = Selector {
    who: "OSC RuntimeClass kata-cc (SNP)",
    source: "openshift/sandboxed-containers-operator controllers/confidential_handler.go (amdSNPNodeLabels)",
    labels: &[("amd.feature.node.kubernetes.io/snp", "true")],
};

/// The node eligibility check before the operator installs Kata.
const OSC_NODE_ELIGIBILITY: Selector = Selector {
    who: "OSC checkNodeEligibility",
    source: "openshift/sandboxed-containers-operator controllers/openshift_controller.go (checkNodeEligibility)",
    labels: &[("feature.node.kubernetes.io/runtime.kata", "true")],
};

/// coco-pattern's Intel DCAP operator CR (QGS + registration DaemonSets).
const COCO_DCAP: Selector = Selector {
    who: "coco-pattern TdxQuoteGenerationService",
    source: "validatedpatterns/coco-pattern charts/all/intel-dcap/templates/dcap-operator-cr.yaml",
    labels: &[("intel.feature.node.kubernetes.io/sgx", "true")],
};

/// coco-pattern's SGX device plugin (the enclave/provision resources QGS requests).
const COCO_SGX_DEVICE_PLUGIN: Selector = Selector {
    who: "coco-pattern SgxDevicePlugin",
    source: "validatedpatterns/coco-pattern charts/coco-supported/baremetal/templates/intel-dpo-sgx.yaml",
    labels: &[("intel.feature.node.kubernetes.io/sgx", "true")],
};

/// coco-pattern's older QGS DaemonSet.
const COCO_QGS: Selector = Selector {
    who: "coco-pattern tdx-qgs DaemonSet",
    source: "validatedpatterns/coco-pattern charts/coco-supported/baremetal/templates/qgs-ds.yaml",
    labels: &[("intel.feature.node.kubernetes.io/tdx", "true")],
};

fn matches(l: &NodeLabels, s: &Selector) -> bool {
    s.labels
        .iter()
        .all(|(k, v)| l.labels.get(*k).map(String::as_str) == Some(*v))
}

fn assert_matches(l: &NodeLabels, s: &Selector, want: bool, host: &str) {
    assert_eq!(
        matches(l, s),
        want,
        "{} ({}) on {host}: wants {:?}, node has {:?}",
        s.who,
        s.source,
        s.labels,
        l.labels
    );
}

fn fixture_labels(name: &str, cfg: &Config) -> NodeLabels {
    let host = HostRoot::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/host")
            .join(name),
    )
    .unwrap();
    let mut facts = NodeFacts::from_inventory(&Inventory::collect(&host, cfg));
    facts.duties = duties(cfg, &host);
    compute(&facts, &cfg.labels)
}

/// cchost doing the replaced stack's jobs: binding at start and serving the plugin.
fn replacing_config() -> Config {
    let mut cfg = Config::default();
    cfg.vfio.bind_on_start = true;
    cfg.device_plugin.mode = PluginMode::On;
    cfg
}

const HOSTS: &[&str] = &[
    "tdx-8xh100-4nvswitch",
    "gpus-on-vfio",
    "snp-8xb200",
    "snp-iommu-pt",
    "tdx-module-failed",
    "no-iommu",
    "workstation-bootvga",
];

#[test]
fn cpu_only_selectors_on_every_fixture_host() {
    let cfg = replacing_config();
    for &h in HOSTS {
        let l = fixture_labels(h, &cfg);
        // Every fixture is a KVM host with VT-x/AMD-V, kvm and /dev/kvm.
        assert_matches(&l, &OSC_NODE_ELIGIBILITY, true, h);
        let tdx = matches!(h, "tdx-8xh100-4nvswitch" | "gpus-on-vfio");
        let snp = h == "snp-8xb200";
        assert_matches(&l, &OSC_KATA_CC_TDX, tdx, h);
        assert_matches(&l, &COCO_QGS, tdx, h);
        assert_matches(&l, &OSC_KATA_CC_SNP, snp, h);
        // SGX only where the BIOS turned it on (the two TDX hosts).
        assert_matches(&l, &COCO_DCAP, tdx, h);
        assert_matches(&l, &COCO_SGX_DEVICE_PLUGIN, tdx, h);
    }
}

#[test]
fn runtime_kata_needs_kvm_and_the_vendor_module() {
    let cfg = Config::default();
    let host =
        HostRoot::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/snp-8xb200")).unwrap();
    let base = NodeFacts::from_inventory(&Inventory::collect(&host, &cfg));
    let mut no_vendor_module = base.clone();
    no_vendor_module.modules_loaded.remove("kvm_amd");
    let mut no_dev = base.clone();
    no_dev.kvm_device = false;
    let mut no_svm = base.clone();
    no_svm.virt.svm = false;
    for (what, f) in [
        ("kvm_amd missing", no_vendor_module),
        ("/dev/kvm missing", no_dev),
        ("no svm flag", no_svm),
    ] {
        let l = compute(&f, &cfg.labels);
        assert_matches(&l, &OSC_NODE_ELIGIBILITY, false, what);
    }
}

#[test]
fn sgx_needs_the_flags_and_both_device_nodes() {
    let cfg = Config::default();
    let host = HostRoot::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/tdx-8xh100-4nvswitch"),
    )
    .unwrap();
    let base = NodeFacts::from_inventory(&Inventory::collect(&host, &cfg));
    assert!(matches(&compute(&base, &cfg.labels), &COCO_DCAP));
    let mut no_provision = base.clone();
    no_provision.sgx.provision_device = false;
    let mut no_lc = base.clone();
    no_lc.sgx.cpu = false;
    for (what, f) in [
        ("no /dev/sgx_provision", no_provision),
        ("no sgx_lc", no_lc),
    ] {
        assert_matches(&compute(&f, &cfg.labels), &COCO_DCAP, false, what);
    }
}

/// The four-H100 vfio host in a temp dir, its GPUs' BAR0 holding this CC register.
fn vfio_host_labels(cc_register: u32, cfg: &Config) -> NodeLabels {
    let dir = tempfile::tempdir().unwrap();
    let host = cchost::fixture::scenarios::gpus_on_vfio(dir.path())
        .build()
        .unwrap();
    let mut facts = NodeFacts::from_inventory(&Inventory::collect(&host, cfg));
    for g in &facts.gpus {
        register_file::write_booted(&host, &g.address, cc_register).unwrap();
    }
    facts.duties = duties(cfg, &host);
    CcModeCache::default().fill(&host, &cfg.matching, &mut facts, &live_query(&host));
    compute(&facts, &cfg.labels)
}

#[test]
fn gpu_runtime_classes_follow_the_firmware_and_the_jobs_cchost_does() {
    let cfg = replacing_config();
    // CC on: only the confidential GPU class.
    let l = vfio_host_labels(1, &cfg);
    assert_matches(&l, &OSC_KATA_CC_NVIDIA_GPU_TDX, true, "vfio host, CC on");
    assert_matches(&l, &OSC_KATA_NVIDIA_GPU, false, "vfio host, CC on");
    // CC off: only the plain GPU class.
    let l = vfio_host_labels(0, &cfg);
    assert_matches(&l, &OSC_KATA_NVIDIA_GPU, true, "vfio host, CC off");
    assert_matches(&l, &OSC_KATA_CC_NVIDIA_GPU_TDX, false, "vfio host, CC off");

    // cchost not binding the GPUs (vfio-manager's job) or not serving them (the
    // sandbox device plugin's job): it does not claim to, and neither class matches.
    let mut no_bind = replacing_config();
    no_bind.vfio.bind_on_start = false;
    let mut no_plugin = replacing_config();
    no_plugin.device_plugin.mode = PluginMode::Off;
    for (what, cfg) in [("no bind_on_start", no_bind), ("plugin off", no_plugin)] {
        let l = vfio_host_labels(1, &cfg);
        assert_matches(&l, &OSC_KATA_CC_NVIDIA_GPU_TDX, false, what);
        assert!(l.labels.contains_key("nvidia.com/gpu.present"), "{what}");
    }
    // `labels.nvidia = false` (the GPU Operator runs here): none of NVIDIA's labels.
    let mut operator = replacing_config();
    operator.labels.nvidia = false;
    let l = vfio_host_labels(1, &operator);
    assert!(
        !l.labels.keys().any(|k| k.starts_with("nvidia.com/")),
        "{l:?}"
    );
}

#[test]
fn snp_gpu_class_on_the_b200_host() {
    let cfg = replacing_config();
    let host =
        HostRoot::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/snp-8xb200")).unwrap();
    let mut facts = NodeFacts::from_inventory(&Inventory::collect(&host, &cfg));
    facts.duties = duties(&cfg, &host);
    // Modes not read: no class may match (nothing is guessed).
    assert_matches(
        &compute(&facts, &cfg.labels),
        &OSC_KATA_CC_NVIDIA_GPU_SNP,
        false,
        "unread",
    );
    for g in &mut facts.gpus {
        g.cc_mode = Some(CcMode::On);
    }
    assert_matches(
        &compute(&facts, &cfg.labels),
        &OSC_KATA_CC_NVIDIA_GPU_SNP,
        true,
        "CC on",
    );
    assert_matches(
        &compute(&facts, &cfg.labels),
        &OSC_KATA_CC_NVIDIA_GPU_TDX,
        false,
        "CC on",
    );
}

#[test]
fn no_gpu_no_gpu_labels() {
    let cfg = replacing_config();
    let host =
        HostRoot::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/snp-8xb200")).unwrap();
    let mut facts = NodeFacts::from_inventory(&Inventory::collect(&host, &cfg));
    facts.duties = duties(&cfg, &host);
    facts.gpus.clear();
    let l = compute(&facts, &cfg.labels);
    assert!(
        !l.labels.keys().any(|k| k.starts_with("nvidia.com/")),
        "{l:?}"
    );
}
