//! Labels and plans on every fixture host (tests/host/<scenario>), from the real
//! inventory: a table of what each host must and must not be labelled, and the profile
//! and changes its plan proposes.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cchost::config::Config;
use cchost::host::HostRoot;
use cchost::hostcfg::profile::Platform;
use cchost::inventory::Inventory;
use cchost::inventory::NodeFacts;
use cchost::labels::compute::{
    SNP_ESIDS_RESOURCE, SNP_LABEL, TDX_KEYS_RESOURCE, TDX_LABEL, valid_label_key, valid_label_value,
};
use cchost::labels::{NodeLabels, compute};
use cchost::plan::{build, gather};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/host")
        .join(name)
}

fn facts(name: &str) -> (HostRoot, NodeFacts) {
    let host = HostRoot::new(fixture(name)).unwrap();
    let inv = Inventory::collect(&host, &Config::default());
    (host.clone(), NodeFacts::from_inventory(&inv))
}

fn labels(name: &str) -> NodeLabels {
    compute(&facts(name).1, &Config::default().labels)
}

/// (scenario, labels that must be there with these values, labels that must be absent,
/// extended resources).
type Row = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

const TABLE: &[Row] = &[
    (
        "tdx-8xh100-4nvswitch",
        &[
            (TDX_LABEL, "true"),
            ("cchost.io/tee", "tdx"),
            ("cchost.io/tdx.keys", "31"),
            ("cchost.io/iommu", "on"),
            ("cchost.io/iommu.mode", "translated"),
            ("cchost.io/gpu.count", "8"),
            ("cchost.io/gpu.model", "H100-SXM5-80GB"),
            ("cchost.io/gpu.chip", "GH100"),
            ("cchost.io/vsock", "true"),
            ("nvidia.com/cc.capable", "true"),
        ],
        &[
            SNP_LABEL,
            "nvidia.com/cc.mode.state",
            "nvidia.com/cc.ready.state",
        ],
        &[(TDX_KEYS_RESOURCE, "31")],
    ),
    (
        "snp-8xb200",
        &[
            (SNP_LABEL, "true"),
            ("cchost.io/tee", "snp"),
            ("cchost.io/snp.esids", "99"),
            ("cchost.io/iommu.mode", "translated"),
            ("cchost.io/gpu.count", "8"),
            ("cchost.io/gpu.chip", "GB100"),
            ("nvidia.com/cc.capable", "true"),
        ],
        &[TDX_LABEL],
        &[(SNP_ESIDS_RESOURCE, "99")],
    ),
    (
        "snp-iommu-pt",
        &[
            ("cchost.io/tee", "none"),
            ("cchost.io/iommu", "on"),
            ("cchost.io/iommu.mode", "passthrough"),
            ("cchost.io/gpu.count", "2"),
        ],
        &[SNP_LABEL, TDX_LABEL, "cchost.io/snp.esids"],
        &[],
    ),
    (
        "tdx-module-failed",
        &[("cchost.io/tee", "none"), ("cchost.io/gpu.count", "1")],
        &[TDX_LABEL, SNP_LABEL, "cchost.io/tdx.keys"],
        &[],
    ),
    (
        "no-iommu",
        &[("cchost.io/iommu", "off"), ("cchost.io/tee", "none")],
        &[TDX_LABEL, SNP_LABEL, "cchost.io/iommu.mode"],
        &[],
    ),
    (
        "workstation-bootvga",
        &[("cchost.io/gpu.count", "2"), ("cchost.io/tee", "none")],
        // A boot-VGA consumer card beside the H100: not every GPU is CC-capable, and
        // the models differ.
        &[
            TDX_LABEL,
            SNP_LABEL,
            "nvidia.com/cc.capable",
            "cchost.io/gpu.model",
        ],
        &[],
    ),
    (
        "gpus-on-vfio",
        &[(TDX_LABEL, "true"), ("cchost.io/tee", "tdx")],
        &[SNP_LABEL],
        &[(TDX_KEYS_RESOURCE, "31")],
    ),
];

#[test]
fn labels_on_every_fixture_host() {
    let present: Vec<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_type()
                .unwrap()
                .is_dir()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    for p in &present {
        assert!(
            TABLE.iter().any(|r| r.0 == p),
            "fixture host {p} has no row in the label table"
        );
    }
    for (name, want, absent, resources) in TABLE {
        let l = labels(name);
        for (k, v) in *want {
            assert_eq!(
                l.labels.get(*k).map(String::as_str),
                Some(*v),
                "{name}: {k} in {:#?}",
                l.labels
            );
        }
        for k in *absent {
            assert!(
                !l.labels.contains_key(*k),
                "{name}: {k} must be absent: {:#?}",
                l.labels
            );
        }
        let res: BTreeMap<String, String> = resources
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(l.extended_resources, res, "{name}");
        // Invariants: never both TEEs; every key and value acceptable to the API server.
        assert!(!(l.labels.contains_key(TDX_LABEL) && l.labels.contains_key(SNP_LABEL)));
        assert!(l.problems.is_empty(), "{name}: {:?}", l.problems);
        for (k, v) in &l.labels {
            assert!(
                valid_label_key(k) && valid_label_value(v),
                "{name}: {k}={v}"
            );
        }
    }
}

#[test]
fn plans_on_fixture_hosts() {
    let cfg = Config::default();
    // (scenario, platform, gpu, running-kernel findings)
    let rows: &[(&str, Platform, bool, &[&str])] = &[
        ("tdx-8xh100-4nvswitch", Platform::Tdx, true, &[]),
        ("snp-8xb200", Platform::Snp, true, &[]),
        (
            "snp-iommu-pt",
            Platform::Snp,
            true,
            &["missing kvm_amd.sev_snp=1", "remove iommu=pt"],
        ),
        ("tdx-module-failed", Platform::Tdx, true, &[]),
        ("workstation-bootvga", Platform::None, true, &[]),
    ];
    for (name, platform, gpu, findings) in rows {
        let (host, f) = facts(name);
        let tools = NoTools;
        let plan = build(&cfg, &gather(&host, &tools, &cfg, f));
        assert_eq!(plan.profile.platform, *platform, "{name}");
        assert_eq!(plan.profile.gpu, *gpu, "{name}");
        let got: Vec<String> = plan
            .running_findings
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(got.len(), findings.len(), "{name}: {got:?}");
        for (g, w) in got.iter().zip(findings.iter()) {
            assert!(g.starts_with(w), "{name}: {g} vs {w}");
        }
        // vhost_vsock is loaded on every fixture: no module load is planned.
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| a.summary().starts_with("load module")),
            "{name}: {:?}",
            plan.actions
        );
        if *name == "tdx-module-failed" {
            assert!(
                plan.notes.iter().any(|n| n.contains("TDX is not enabled")),
                "{name}: {:?}",
                plan.notes
            );
        }
        if *name == "snp-iommu-pt" {
            assert!(
                plan.notes
                    .iter()
                    .any(|n| n.contains("no boot-configuration mechanism"))
            );
        }
    }
}

struct NoTools;

impl cchost::hostcfg::boot::HostTools for NoTools {
    fn has(&self, _: &str) -> bool {
        false
    }
    fn run(
        &self,
        p: &str,
        _: &[String],
    ) -> Result<cchost::host::exec::ToolOutput, cchost::host::HostError> {
        panic!("planning ran {p}")
    }
}
