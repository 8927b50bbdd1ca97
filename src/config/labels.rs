//! `[labels]`: node labels and extended resources (docs/config.md, docs/labels.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where computed labels go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelBackend {
    /// `node` inside a cluster (the service-account token is mounted), `file` otherwise.
    Auto,
    /// Server-Side Apply on this node's Node object (field manager `cchost`).
    Node,
    /// A `NodeFeature` object (nfd.k8s-sigs.io/v1alpha1) that nfd-master turns into labels.
    NodeFeature,
    /// An NFD local feature file under the host root (no cluster access needed).
    File,
    /// Compute and show labels, write them nowhere.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelsConfig {
    /// Where labels are written.
    pub backend: LabelBackend,
    /// Label prefix (a DNS subdomain) for cchost's own detail labels.
    pub prefix: String,
    /// Also write NFD's `feature.node.kubernetes.io/cpu-security.*` names (off: NFD may own them).
    pub nfd_cpu_security: bool,
    /// Write `nvidia.com/cc.capable`, `nvidia.com/cc.mode.state`, `nvidia.com/cc.ready.state`.
    pub nvidia: bool,
    /// Publish `tdx.intel.com/keys` / `sev-snp.amd.com/esids` on the Node status.
    pub extended_resources: bool,
    /// Node name; empty = `NODE_NAME` (downward API), then the host name.
    pub node_name: String,
    /// Namespace of the NodeFeature object; empty = `POD_NAMESPACE`, then `cchost`.
    pub namespace: String,
    /// kubeconfig for the systemd mode; empty = in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The NFD local feature file (a host path) for the `file` backend.
    pub feature_file: PathBuf,
    /// Seconds between re-computations of the labels in `cchost run`.
    pub interval_seconds: u64,
}

pub(crate) const DEFAULT_LABEL_PREFIX: &str = "cchost.io";
/// The directory nfd-worker's `local` source reads.
pub(crate) const FEATURES_DIR: &str = "/etc/kubernetes/node-feature-discovery/features.d";
pub(crate) const DEFAULT_FEATURE_FILE: &str =
    "/etc/kubernetes/node-feature-discovery/features.d/cchost";

impl Default for LabelsConfig {
    fn default() -> Self {
        LabelsConfig {
            backend: LabelBackend::Auto,
            prefix: DEFAULT_LABEL_PREFIX.to_string(),
            nfd_cpu_security: false,
            nvidia: true,
            extended_resources: true,
            node_name: String::new(),
            namespace: String::new(),
            kubeconfig: None,
            feature_file: PathBuf::from(DEFAULT_FEATURE_FILE),
            interval_seconds: 60,
        }
    }
}

impl LabelsConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !is_dns_subdomain(&self.prefix) {
            return Err(format!(
                "labels.prefix {:?} is not a DNS subdomain (lower-case letters, digits, '-', '.'; at most 253 characters)",
                self.prefix
            ));
        }
        if self.prefix == "kubernetes.io" || self.prefix.ends_with(".kubernetes.io") {
            return Err(format!(
                "labels.prefix {:?}: the kubernetes.io namespaces are reserved",
                self.prefix
            ));
        }
        // nfd-worker's local source reads the files directly in features.d
        // (node-feature-discovery docs, "Local feature source").
        super::paths::file_in(
            "labels.feature_file",
            &self.feature_file,
            FEATURES_DIR,
            None,
        )?;
        if self.interval_seconds == 0 {
            return Err("labels.interval_seconds must be at least 1".to_string());
        }
        Ok(())
    }
}

/// RFC 1123 DNS subdomain, as Kubernetes requires for label prefixes.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_must_be_a_dns_subdomain() {
        let mut c = LabelsConfig::default();
        assert!(c.validate().is_ok());
        c.prefix = "Bad_Prefix".into();
        assert!(c.validate().unwrap_err().contains("Bad_Prefix"));
        c.prefix = "node.kubernetes.io".into();
        assert!(c.validate().unwrap_err().contains("reserved"));
        c.prefix = "example.com".into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn feature_file_stays_in_features_d() {
        for bad in [
            "/etc/shadow",
            "/etc/kubernetes/node-feature-discovery/features.d/../../../shadow",
            "features.d/cchost",
        ] {
            let c = LabelsConfig {
                feature_file: bad.into(),
                ..Default::default()
            };
            let e = c.validate().unwrap_err();
            assert!(e.contains("labels.feature_file"), "{bad}: {e}");
        }
        let c = LabelsConfig {
            feature_file: format!("{FEATURES_DIR}/other").into(),
            ..Default::default()
        };
        c.validate().unwrap();
    }
}
