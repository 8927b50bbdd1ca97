//! The host CDI spec for passthrough GPUs and NVSwitches (docs/facts/k8s.md#cdi-spec,
//! docs/facts/gpu.md#sandbox-device-plugin, #kata-cdi-contract).
//!
//! One spec file per kind (`nvidia.com/pgpu`, `nvidia.com/nvswitch`, or one per model),
//! named `cchost-<vendor>-<class>.json` so it never clashes with the NVIDIA container
//! toolkit's `nvidia.yaml` or the sandbox plugin's `nvidia.com-pgpu.yaml`. Device names
//! are the device-plugin IDs. Files are replaced atomically (dot-temp + rename; CDI
//! loads only `*.json`/`*.yaml`), and a kind with no devices left has its file removed.

pub mod foreign;
mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use spec::{
    ContainerEdits, Device, DeviceNode, NameError, Spec, validate_class, validate_device_name,
    validate_kind, validate_vendor,
};

use crate::host::{HostError, HostRoot};
use crate::inventory::passthrough::Discovery;

/// Prefix of every spec file cchost owns in the CDI directory.
pub(crate) const FILE_PREFIX: &str = "cchost-";

#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("CDI spec {kind}: {source}")]
    Name {
        kind: String,
        #[source]
        source: NameError,
    },
    #[error("CDI spec {}: {message}", path.display())]
    Encode { path: PathBuf, message: String },
}

/// The spec file name for a kind: `nvidia.com/pgpu` -> `cchost-nvidia.com-pgpu.json`.
pub fn file_name(kind: &str) -> String {
    format!("{FILE_PREFIX}{}.json", kind.replace('/', "-"))
}

/// Builds one spec per resource from a scan. Device names are the plugin IDs; the
/// device nodes are the ones the host has in its vfio mode.
pub fn specs_for(discovery: &Discovery) -> Result<Vec<Spec>, CdiError> {
    let mut by_kind: BTreeMap<&str, Vec<Device>> = BTreeMap::new();
    for d in &discovery.devices {
        by_kind.entry(&d.resource).or_default().push(Device {
            name: d.id.clone(),
            annotations: BTreeMap::new(),
            container_edits: ContainerEdits {
                env: Vec::new(),
                device_nodes: d
                    .device_nodes
                    .iter()
                    .map(|p| DeviceNode {
                        path: p.clone(),
                        host_path: None,
                        permissions: None,
                    })
                    .collect(),
            },
        });
    }
    let mut out = Vec::new();
    for (kind, devices) in by_kind {
        let mut spec = Spec {
            cdi_version: String::new(),
            kind: kind.to_string(),
            annotations: BTreeMap::new(),
            devices,
        };
        spec.cdi_version = spec.minimum_version();
        spec.validate().map_err(|source| CdiError::Name {
            kind: kind.to_string(),
            source,
        })?;
        out.push(spec);
    }
    Ok(out)
}

/// What a write changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Host paths written (content changed).
    pub written: Vec<PathBuf>,
    /// Host paths left alone (content already right).
    pub unchanged: Vec<PathBuf>,
    /// Host paths of stale cchost specs removed.
    pub removed: Vec<PathBuf>,
}

/// The JSON text of a spec (stable: same spec, same bytes).
pub fn render(spec: &Spec) -> Result<Vec<u8>, CdiError> {
    let mut bytes = serde_json::to_vec_pretty(spec).map_err(|e| CdiError::Encode {
        path: PathBuf::from(file_name(&spec.kind)),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes the specs into `dir` (a host path) and removes cchost specs of kinds no longer
/// present. Every file is replaced atomically, so a runtime reading the directory sees
/// the old spec or the new one, never a mix.
pub fn write_specs(host: &HostRoot, dir: &str, specs: &[Spec]) -> Result<WriteReport, CdiError> {
    let dir = Path::new(dir);
    let mut report = WriteReport::default();
    let mut keep = BTreeSet::new();
    for spec in specs {
        let name = file_name(&spec.kind);
        let path = dir.join(&name);
        let bytes = render(spec)?;
        keep.insert(name);
        match host.read_bytes(&path) {
            Ok(old) if old == bytes => {
                report.unchanged.push(path);
                continue;
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        host.write_atomic(&path, &bytes, 0o644)?;
        tracing::info!(path = %path.display(), kind = %spec.kind, devices = spec.devices.len(), "wrote CDI spec");
        report.written.push(path);
    }
    for name in host.list_dir_opt(dir)? {
        if name.starts_with(FILE_PREFIX) && name.ends_with(".json") && !keep.contains(&name) {
            let path = dir.join(&name);
            host.remove_file(&path)?;
            tracing::info!(path = %path.display(), "removed stale CDI spec");
            report.removed.push(path);
        }
    }
    Ok(report)
}

/// Builds and writes the specs for a scan.
pub fn sync(host: &HostRoot, dir: &str, discovery: &Discovery) -> Result<WriteReport, CdiError> {
    let specs = specs_for(discovery)?;
    write_specs(host, dir, &specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_do_not_clash_with_the_toolkit() {
        assert_eq!(file_name("nvidia.com/pgpu"), "cchost-nvidia.com-pgpu.json");
        assert_ne!(file_name("nvidia.com/gpu"), "nvidia.yaml");
    }
}
