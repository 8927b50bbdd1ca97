//! The CDI spec document: a small serde model of the fields cchost writes, the name
//! rules, and the lowest `cdiVersion` those fields need (docs/facts/k8s.md#cdi-spec).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::config::cdi_names::{
    NameError, validate_class, validate_device_name, validate_kind, validate_vendor,
};

/// A CDI spec file: one `kind`, its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerEdits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceNode {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
}

/// A semantic version `major.minor.patch` (the only form cdiVersion takes).
type Version = (u32, u32, u32);

fn fmt_version(v: Version) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

impl Spec {
    /// The lowest cdiVersion that can express this spec. Runtimes reject a spec whose
    /// version is lower than its fields need, and old runtimes reject versions they do
    /// not know, so the lowest one is the most compatible (docs/facts/k8s.md#cdi-spec).
    pub(crate) fn minimum_version(&self) -> String {
        let mut v: Version = (0, 3, 0);
        let mut need = |w: Version| v = v.max(w);
        if !self.annotations.is_empty() || self.devices.iter().any(|d| !d.annotations.is_empty()) {
            need((0, 6, 0));
        }
        if self
            .kind
            .split_once('/')
            .is_some_and(|(_, c)| c.contains('.'))
        {
            need((0, 6, 0));
        }
        for d in &self.devices {
            // A device name that starts with a digit (an IOMMU group number) is 0.5.0+.
            if d.name.starts_with(|c: char| c.is_ascii_digit()) {
                need((0, 5, 0));
            }
            if d.container_edits
                .device_nodes
                .iter()
                .any(|n| n.host_path.is_some())
            {
                need((0, 5, 0));
            }
        }
        fmt_version(v)
    }

    /// Checks every name in the spec.
    pub(crate) fn validate(&self) -> Result<(), NameError> {
        validate_kind(&self.kind)?;
        if self.devices.is_empty() {
            return Err(NameError(format!("spec for {} has no devices", self.kind)));
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &self.devices {
            validate_device_name(&d.name)?;
            if !seen.insert(d.name.as_str()) {
                return Err(NameError(format!(
                    "device {:?} appears twice in {}",
                    d.name, self.kind
                )));
            }
        }
        Ok(())
    }

    /// Fully-qualified name of one device of this spec: `vendor/class=name`.
    pub(crate) fn qualified(kind: &str, name: &str) -> String {
        format!("{kind}={name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, names: &[&str]) -> Spec {
        Spec {
            cdi_version: String::new(),
            kind: kind.into(),
            annotations: BTreeMap::new(),
            devices: names
                .iter()
                .map(|n| Device {
                    name: n.to_string(),
                    annotations: BTreeMap::new(),
                    container_edits: ContainerEdits {
                        env: vec![],
                        device_nodes: vec![DeviceNode {
                            path: "/dev/vfio/vfio".into(),
                            host_path: None,
                            permissions: None,
                        }],
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn minimum_version_follows_the_fields() {
        assert_eq!(
            spec("nvidia.com/pgpu", &["gpu0"]).minimum_version(),
            "0.3.0"
        );
        assert_eq!(spec("nvidia.com/pgpu", &["3"]).minimum_version(), "0.5.0");
        let mut s = spec("nvidia.com/pgpu", &["gpu0"]);
        s.devices[0].container_edits.device_nodes[0].host_path = Some("/dev/x".into());
        assert_eq!(s.minimum_version(), "0.5.0");
        s.devices[0].annotations.insert("a".into(), "b".into());
        assert_eq!(s.minimum_version(), "0.6.0");
    }

    #[test]
    fn names_follow_the_cdi_rules() {
        assert!(validate_kind("nvidia.com/pgpu").is_ok());
        assert!(validate_kind("nvidia.com/GH100_H100_SXM5_80GB").is_ok());
        for bad in [
            "nvidia.com",
            "/pgpu",
            "nvidia.com/",
            "1nvidia.com/pgpu",
            "nvidia.com/pgpu-",
            "nv idia.com/pgpu",
            "nvidia.com/a.b",
        ] {
            assert!(validate_kind(bad).is_err(), "{bad}");
        }
        for good in ["3", "12", "0000:65:00.0", "vfio3"] {
            assert!(validate_device_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-3", "3:", "a/b", "a=b"] {
            assert!(validate_device_name(bad).is_err(), "{bad}");
        }
        assert!(spec("nvidia.com/pgpu", &["3", "3"]).validate().is_err());
        assert!(spec("nvidia.com/pgpu", &[]).validate().is_err());
    }
}
