//! Labels and extended resources as a pure function of the node facts and `[labels]`.
//!
//! Names (docs/facts/cpu-tee.md#nfd-labels, docs/facts/gpu.md#cc-labels):
//! - `intel.feature.node.kubernetes.io/tdx` / `amd.feature.node.kubernetes.io/snp`: the
//!   coco-pattern and kata-deploy names; sub-domains of `feature.node.kubernetes.io`, so
//!   NFD accepts them too. Only written when true (absence means false, as in NFD).
//! - `nvidia.com/cc.capable`, `nvidia.com/cc.mode.state`, `nvidia.com/cc.ready.state`
//!   with the values NVIDIA's cc-manager writes.
//! - `<prefix>/...` for cchost's details; `<prefix>/cc.mode.state` says `mixed` where
//!   NVIDIA's one-mode-per-node labels cannot (docs/facts/mixed-node.md).
//! - `feature.node.kubernetes.io/cpu-security.*` only when configured (NFD may own them).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::LabelsConfig;
use crate::inventory::facts::{CcMode, CpuVendor, IommuMode, NodeFacts};

pub const TDX_LABEL: &str = "intel.feature.node.kubernetes.io/tdx";
pub const SNP_LABEL: &str = "amd.feature.node.kubernetes.io/snp";
pub const NV_CC_CAPABLE: &str = "nvidia.com/cc.capable";
pub const NV_CC_MODE_STATE: &str = "nvidia.com/cc.mode.state";
pub const NV_CC_READY_STATE: &str = "nvidia.com/cc.ready.state";
/// The GPU Operator's "this node has NVIDIA GPUs" label (gpu-operator
/// controllers/state_manager.go `commonGPULabelKey`).
pub(crate) const NV_GPU_PRESENT: &str = "nvidia.com/gpu.present";
/// The GPU Operator's scheduling label of its vfio-manager DaemonSet
/// (assets/state-vfio-manager/0500_daemonset.yaml nodeSelector).
pub(crate) const NV_DEPLOY_VFIO_MANAGER: &str = "nvidia.com/gpu.deploy.vfio-manager";
/// The GPU Operator's scheduling label of the Kata sandbox device plugin
/// (controllers/state_manager.go `kataDevicePluginDeployLabelKey`).
pub(crate) const NV_DEPLOY_KATA_DEVICE_PLUGIN: &str =
    "nvidia.com/gpu.deploy.kata-sandbox-device-plugin";
/// NFD's Kata label, set by the `osc-rules` NodeFeatureRule (coco-pattern
/// charts/coco-supported/baremetal/templates/kata-nfd.yaml) and required by the
/// sandboxed-containers operator's node eligibility check.
pub(crate) const RUNTIME_KATA_LABEL: &str = "feature.node.kubernetes.io/runtime.kata";
/// The SGX label coco-pattern's DCAP and SGX device plugin select on
/// (charts/all/intel-dcap/templates/dcap-operator-cr.yaml).
pub(crate) const SGX_LABEL: &str = "intel.feature.node.kubernetes.io/sgx";
pub const TDX_KEYS_RESOURCE: &str = "tdx.intel.com/keys";
pub const SNP_ESIDS_RESOURCE: &str = "sev-snp.amd.com/esids";
const NFD_PREFIX: &str = "feature.node.kubernetes.io/cpu-security.";

/// What cchost wants on its Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeLabels {
    pub labels: BTreeMap<String, String>,
    /// Node status capacity (kubelet derives allocatable).
    pub extended_resources: BTreeMap<String, String>,
    /// Facts that contradict each other; the labels they would have set are left out.
    pub problems: Vec<String>,
}

pub fn compute(facts: &NodeFacts, cfg: &LabelsConfig) -> NodeLabels {
    let mut out = NodeLabels::default();
    let p = |name: &str| format!("{}/{}", cfg.prefix, name);
    let put = |out: &mut NodeLabels, k: String, v: &str| {
        out.labels.insert(k, label_value(v));
    };

    // One TEE per node, never both: a wrong rule once put both on every node and the
    // operator refused the cluster (docs/facts/cpu-tee.md#one-tee-per-node). Contradicting facts label neither.
    let tdx = facts.tdx.enabled;
    let snp = facts.snp.enabled;
    let tee = match (tdx, snp) {
        (true, true) => {
            out.problems.push(
                "the facts say both TDX and SEV-SNP are enabled; neither TEE label is written"
                    .to_string(),
            );
            None
        }
        (true, false) => Some("tdx"),
        (false, true) => Some("snp"),
        (false, false) => Some("none"),
    };
    if let Some(tee) = tee {
        put(&mut out, p("tee"), tee);
    }
    if tee == Some("tdx") {
        put(&mut out, TDX_LABEL.to_string(), "true");
        if let Some(k) = facts.tdx.keys {
            put(&mut out, p("tdx.keys"), &k.to_string());
            if cfg.extended_resources {
                out.extended_resources
                    .insert(TDX_KEYS_RESOURCE.to_string(), k.to_string());
            }
        }
    }
    if tee == Some("snp") {
        put(&mut out, SNP_LABEL.to_string(), "true");
        if let Some(n) = facts.snp.esids {
            put(&mut out, p("snp.esids"), &n.to_string());
            if cfg.extended_resources {
                out.extended_resources
                    .insert(SNP_ESIDS_RESOURCE.to_string(), n.to_string());
            }
        }
    }
    if cfg.nfd_cpu_security && tee.is_some() {
        let mut nfd = |name: &str, on: bool| {
            if on {
                put(&mut out, format!("{NFD_PREFIX}{name}"), "true");
            }
        };
        nfd("tdx.enabled", tdx);
        nfd("sev.enabled", facts.snp.sev_enabled);
        nfd("sev.es.enabled", facts.snp.sev_es_enabled);
        nfd("sev.snp.enabled", snp);
    }

    put(
        &mut out,
        p("iommu"),
        if facts.iommu.enabled { "on" } else { "off" },
    );
    if facts.iommu.enabled && facts.iommu.mode != IommuMode::Unknown {
        let mode = match facts.iommu.mode {
            IommuMode::Translated => "translated",
            IommuMode::Passthrough => "passthrough",
            IommuMode::Mixed => "mixed",
            // Groups exist (enabled), so the mode is never Off here.
            IommuMode::Off | IommuMode::Unknown => "unknown",
        };
        put(&mut out, p("iommu.mode"), mode);
    }
    if facts.module_active("vhost_vsock") && facts.vhost_vsock_device {
        put(&mut out, p("vsock"), "true");
    }
    if runs_kata(facts) {
        put(&mut out, RUNTIME_KATA_LABEL.to_string(), "true");
    }
    // SGX is an Intel feature; a contradicting vendor labels nothing.
    if facts.sgx.enabled() && facts.cpu_vendor == Some(CpuVendor::Intel) {
        put(&mut out, SGX_LABEL.to_string(), "true");
    }

    if !facts.gpus.is_empty() {
        put(&mut out, p("gpu.count"), &facts.gpus.len().to_string());
        if let Some(model) = common(facts.gpus.iter().map(|g| g.model.as_deref())) {
            put(&mut out, p("gpu.model"), &short_model(model));
        }
        if let Some(chip) = common(facts.gpus.iter().map(|g| g.chip.as_deref())) {
            put(&mut out, p("gpu.chip"), chip);
        }
        let state = cc_state(facts);
        if let Some(state) = state {
            put(&mut out, p("cc.mode.state"), state);
        }
        if cfg.nvidia {
            nvidia_labels(facts, state, &mut out);
            sandbox_labels(facts, &mut out);
        }
        if let Some(m) = &facts.cc_pending {
            put(&mut out, p("cc.mode.pending"), m);
        }
    }
    out
}

/// The node's CC state from every GPU's firmware: the one mode they share (NVIDIA's
/// cc-manager values on|off|devtools|ppcie), `failed` when they disagree where one
/// mode was meant (or a GPU reads failed), and [`MIXED`] on a node with per-GPU modes
/// (`[[cc.modes]]`) whose GPUs read exactly `on` and `off`. `None` while a GPU's mode
/// is unread: an unqueried GPU says nothing.
pub(crate) fn cc_state(facts: &NodeFacts) -> Option<&'static str> {
    let modes: Vec<CcMode> = facts
        .gpus
        .iter()
        .map(|g| g.cc_mode)
        .collect::<Option<_>>()?;
    let (first, rest) = modes.split_first()?;
    if rest.iter().all(|m| m == first) {
        return Some(first.as_str());
    }
    let only_on_off = modes.iter().all(|m| matches!(m, CcMode::On | CcMode::Off));
    if facts.duties.per_gpu_cc_modes && only_on_off {
        return Some(MIXED);
    }
    // GPUs disagree: the node cannot honour one mode, which NVIDIA calls failed.
    Some("failed")
}

/// `<prefix>/cc.mode.state` of a node whose GPUs hold `on` and `off` as configured.
pub(crate) const MIXED: &str = "mixed";

/// NVIDIA's cc-manager values: mode.state is on|off|devtools|ppcie|failed; ready.state is
/// "true" for on/ppcie, "false" for off, "" otherwise (docs/facts/gpu.md#cc-labels).
/// A mixed node gets neither: NVIDIA's vocabulary has one mode per node, and any one
/// value would be false for some of its GPUs (docs/labels.md, "Mixed nodes").
fn nvidia_labels(facts: &NodeFacts, state: Option<&str>, out: &mut NodeLabels) {
    if facts.gpus.iter().all(|g| g.cc_capable) {
        out.labels
            .insert(NV_CC_CAPABLE.to_string(), "true".to_string());
    }
    let Some(state) = state.filter(|s| *s != MIXED) else {
        return;
    };
    let ready = match state {
        "on" | "ppcie" => "true",
        "off" => "false",
        _ => "",
    };
    out.labels
        .insert(NV_CC_MODE_STATE.to_string(), state.to_string());
    out.labels
        .insert(NV_CC_READY_STATE.to_string(), ready.to_string());
}

/// The labels the sandboxed-containers operator and the GPU Operator select on for GPU
/// passthrough (gpu.present, and the two "deploy" labels of the jobs cchost does here).
/// Each one only when true: a GPU is matched, and cchost binds them to vfio (the
/// vfio-manager's job) or serves them to the kubelet (the sandbox device plugin's job).
fn sandbox_labels(facts: &NodeFacts, out: &mut NodeLabels) {
    let t = |out: &mut NodeLabels, k: &str| {
        out.labels.insert(k.to_string(), "true".to_string());
    };
    t(out, NV_GPU_PRESENT);
    if facts.duties.binds_gpus {
        t(out, NV_DEPLOY_VFIO_MANAGER);
    }
    if facts.duties.serves_gpus {
        t(out, NV_DEPLOY_KATA_DEVICE_PLUGIN);
    }
}

/// NFD's `runtime.kata` rule, as the sandboxed-containers operator's NodeFeatureRule
/// states it: SSE4.2 and VT-x with kvm + kvm_intel, or SSE4.2 and AMD-V with kvm +
/// kvm_amd. cchost also asks for `/dev/kvm` (the module can be loaded with
/// virtualization off in the BIOS, and then there is no device) and accepts a built-in
/// module (NFD's `loadedmodule` only sees loadable ones).
pub(crate) fn runs_kata(facts: &NodeFacts) -> bool {
    let v = &facts.virt;
    let kvm = facts.kvm_device && facts.module_active("kvm");
    v.sse4_2
        && kvm
        && ((v.vmx && facts.module_active("kvm_intel"))
            || (v.svm && facts.module_active("kvm_amd")))
}

fn common<'a>(mut it: impl Iterator<Item = Option<&'a str>>) -> Option<&'a str> {
    let first = it.next()??;
    it.all(|x| x == Some(first)).then_some(first)
}

/// "GH100 [H100 SXM5 80GB]" -> "H100 SXM5 80GB" (the bracket holds the product name).
fn short_model(model: &str) -> String {
    match (model.find('['), model.rfind(']')) {
        (Some(a), Some(b)) if b > a + 1 => model[a + 1..b].to_string(),
        _ => model.to_string(),
    }
}

/// Makes any text a valid label value: at most 63 characters of `[A-Za-z0-9._-]`,
/// starting and ending alphanumeric (other characters become `-`). Empty stays empty.
pub(crate) fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut v = String::new();
    for c in mapped.chars() {
        if c == '-' && v.ends_with('-') {
            continue;
        }
        v.push(c);
    }
    let mut v: String = v.chars().take(63).collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    v.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Checks a label key the way the API server does (qualified name with optional prefix).
pub fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(crate::config::is_dns_subdomain)
}

/// Checks a label value the way the API server does.
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty() || label_value(v) == v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::facts::*;

    fn gpu(model: &str, cc: bool, mode: Option<CcMode>) -> GpuFacts {
        GpuFacts {
            address: "0000:3b:00.0".into(),
            model: Some(model.into()),
            chip: Some("GH100".into()),
            cc_capable: cc,
            cc_mode: mode,
        }
    }

    fn tdx_host() -> NodeFacts {
        NodeFacts {
            cpu_vendor: Some(CpuVendor::Intel),
            tdx: TdxFacts {
                capable: true,
                enabled: true,
                keys: Some(63),
            },
            iommu: IommuFacts {
                present: true,
                enabled: true,
                mode: IommuMode::Translated,
            },
            ..Default::default()
        }
    }

    fn snp_host() -> NodeFacts {
        NodeFacts {
            cpu_vendor: Some(CpuVendor::Amd),
            snp: SnpFacts {
                capable: true,
                enabled: true,
                sev_enabled: true,
                sev_es_enabled: true,
                esids: Some(99),
            },
            iommu: IommuFacts {
                present: true,
                enabled: true,
                mode: IommuMode::Translated,
            },
            ..Default::default()
        }
    }

    fn get<'a>(l: &'a NodeLabels, k: &str) -> Option<&'a str> {
        l.labels.get(k).map(String::as_str)
    }

    #[test]
    fn tdx_host_gets_the_coco_label_and_key_resource() {
        let l = compute(&tdx_host(), &LabelsConfig::default());
        assert_eq!(get(&l, TDX_LABEL), Some("true"));
        assert_eq!(get(&l, SNP_LABEL), None);
        assert_eq!(get(&l, "cchost.io/tee"), Some("tdx"));
        assert_eq!(get(&l, "cchost.io/tdx.keys"), Some("63"));
        assert_eq!(get(&l, "cchost.io/iommu.mode"), Some("translated"));
        assert_eq!(
            l.extended_resources
                .get(TDX_KEYS_RESOURCE)
                .map(String::as_str),
            Some("63")
        );
        assert!(!l.labels.keys().any(|k| k.starts_with("feature.node")));
        assert!(l.problems.is_empty());
    }

    #[test]
    fn snp_host_gets_esids_and_nfd_names_only_when_configured() {
        let f = snp_host();
        let l = compute(&f, &LabelsConfig::default());
        assert_eq!(get(&l, SNP_LABEL), Some("true"));
        assert_eq!(get(&l, TDX_LABEL), None);
        assert_eq!(
            l.extended_resources
                .get(SNP_ESIDS_RESOURCE)
                .map(String::as_str),
            Some("99")
        );
        let cfg = LabelsConfig {
            nfd_cpu_security: true,
            extended_resources: false,
            ..Default::default()
        };
        let l = compute(&f, &cfg);
        assert_eq!(
            get(
                &l,
                "feature.node.kubernetes.io/cpu-security.sev.snp.enabled"
            ),
            Some("true")
        );
        assert_eq!(
            get(&l, "feature.node.kubernetes.io/cpu-security.sev.es.enabled"),
            Some("true")
        );
        assert_eq!(
            get(&l, "feature.node.kubernetes.io/cpu-security.tdx.enabled"),
            None
        );
        assert!(l.extended_resources.is_empty());
    }

    #[test]
    fn never_both_tees() {
        let mut f = tdx_host();
        f.snp = snp_host().snp;
        let l = compute(&f, &LabelsConfig::default());
        assert_eq!(get(&l, TDX_LABEL), None);
        assert_eq!(get(&l, SNP_LABEL), None);
        assert_eq!(get(&l, "cchost.io/tee"), None);
        assert!(l.extended_resources.is_empty());
        assert_eq!(l.problems.len(), 1);
    }

    #[test]
    fn tee_off_writes_none_and_no_resources() {
        let mut f = tdx_host();
        f.tdx.enabled = false;
        let l = compute(&f, &LabelsConfig::default());
        assert_eq!(get(&l, "cchost.io/tee"), Some("none"));
        assert_eq!(get(&l, TDX_LABEL), None);
        assert!(l.extended_resources.is_empty());
    }

    #[test]
    fn nvidia_values_follow_cc_manager() {
        let mut f = tdx_host();
        let m = "GH100 [H100 SXM5 80GB]";
        f.gpus = vec![gpu(m, true, Some(CcMode::On)); 8];
        let l = compute(&f, &LabelsConfig::default());
        assert_eq!(get(&l, NV_CC_CAPABLE), Some("true"));
        assert_eq!(get(&l, NV_CC_MODE_STATE), Some("on"));
        assert_eq!(get(&l, NV_CC_READY_STATE), Some("true"));
        assert_eq!(get(&l, "cchost.io/gpu.count"), Some("8"));
        assert_eq!(get(&l, "cchost.io/gpu.model"), Some("H100-SXM5-80GB"));

        for (mode, state, ready) in [
            (CcMode::Off, "off", "false"),
            (CcMode::Ppcie, "ppcie", "true"),
            (CcMode::Devtools, "devtools", ""),
        ] {
            f.gpus = vec![gpu(m, true, Some(mode)); 2];
            let l = compute(&f, &LabelsConfig::default());
            assert_eq!(get(&l, NV_CC_MODE_STATE), Some(state));
            assert_eq!(get(&l, NV_CC_READY_STATE), Some(ready));
        }
        // Disagreeing GPUs: failed, not ready.
        f.gpus = vec![
            gpu(m, true, Some(CcMode::On)),
            gpu(m, true, Some(CcMode::Off)),
        ];
        let l = compute(&f, &LabelsConfig::default());
        assert_eq!(get(&l, NV_CC_MODE_STATE), Some("failed"));
        assert_eq!(get(&l, NV_CC_READY_STATE), Some(""));
        // One GPU not queried: no state labels at all; one non-CC GPU: not capable.
        f.gpus = vec![gpu(m, true, Some(CcMode::On)), gpu("A100", false, None)];
        let l = compute(&f, &LabelsConfig::default());
        assert_eq!(get(&l, NV_CC_MODE_STATE), None);
        assert_eq!(get(&l, NV_CC_CAPABLE), None);
        assert_eq!(get(&l, "cchost.io/gpu.model"), None);
        // Switched off in config.
        let cfg = LabelsConfig {
            nvidia: false,
            ..Default::default()
        };
        assert!(
            !compute(&f, &cfg)
                .labels
                .keys()
                .any(|k| k.starts_with("nvidia.com/"))
        );
    }

    #[test]
    fn every_key_and_value_is_valid_for_the_api_server() {
        let mut f = tdx_host();
        f.gpus = vec![gpu(
            "GH100 [H100 SXM5 80GB] / weird (name)!",
            true,
            Some(CcMode::On),
        )];
        let cfg = LabelsConfig {
            nfd_cpu_security: true,
            prefix: "example.com".into(),
            ..Default::default()
        };
        for f in [f, snp_host()] {
            let l = compute(&f, &cfg);
            for (k, v) in &l.labels {
                assert!(valid_label_key(k), "{k}");
                assert!(valid_label_value(v), "{k}={v}");
            }
        }
    }

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(label_value("H100 SXM5 80GB"), "H100-SXM5-80GB");
        assert_eq!(label_value("  (x)  "), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
        assert_eq!(label_value(""), "");
        assert!(!valid_label_value("-a"));
        assert!(valid_label_key("cchost.io/gpu.count"));
        assert!(!valid_label_key("Bad_Prefix/x"));
        assert!(!valid_label_key("cchost.io/"));
    }
}
