//! Other CDI specs on the host that claim cchost's kinds. The CDI registry (container-
//! device-interface pkg/cdi/cache.go) drops every device whose qualified name
//! (`kind=name`) two spec files define: a leftover `nvidia.com-pgpu.yaml` of NVIDIA's
//! sandbox device plugin beside cchost's spec makes every `nvidia.com/pgpu` device
//! unresolvable. `cchost check` fails on such a file and names it; `cchost run` says so
//! loudly at every CDI write.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use super::FILE_PREFIX;
use crate::config::DevicePluginConfig;
use crate::host::HostRoot;
use crate::inventory::gpu::{GpuInventory, GpuKind};
use crate::inventory::passthrough::model_resource_class;

/// The directories container runtimes load CDI specs from (the CDI default
/// `/etc/cdi` and `/var/run/cdi`).
pub(crate) const SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// A spec file that is not cchost's and defines one of cchost's kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Host path of the file.
    pub path: PathBuf,
    pub kind: String,
    /// Its device names that cchost's spec also has (empty: none known to clash yet,
    /// the kind alone is claimed twice).
    pub devices: Vec<String>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} also defines CDI kind {}",
            self.path.display(),
            self.kind
        )?;
        if !self.devices.is_empty() {
            write!(f, " (devices {})", self.devices.join(", "))?;
        }
        Ok(())
    }
}

/// The kinds cchost's spec has or will have on this host with this configuration: the
/// configured names, or the per-model names of the matched devices.
pub(crate) fn planned_kinds(cfg: &DevicePluginConfig, gpus: &GpuInventory) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for (configured, kind) in [
        (&cfg.gpu_resource, GpuKind::Gpu),
        (&cfg.nvswitch_resource, GpuKind::NvSwitch),
    ] {
        if configured.is_empty() {
            kinds.extend(gpus.devices.iter().filter(|d| d.kind == kind).map(|d| {
                format!(
                    "{}/{}",
                    cfg.model_prefix,
                    model_resource_class(d.model.as_deref().unwrap_or_default())
                )
            }));
        } else {
            kinds.insert(configured.clone());
        }
    }
    kinds
}

/// The kind and device names of a spec file (JSON or YAML), `None` if it is not one.
fn kind_and_devices(text: &str, yaml: bool) -> Option<(String, Vec<String>)> {
    let v: serde_json::Value = if yaml {
        serde_norway::from_str(text).ok()?
    } else {
        serde_json::from_str(text).ok()?
    };
    let kind = v.get("kind")?.as_str()?.to_string();
    let devices = v
        .get("devices")
        .and_then(|d| d.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.get("name").and_then(|n| n.as_str()).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Some((kind, devices))
}

/// Every spec file in [`SPEC_DIRS`] and `own_dir` that is not cchost's and defines a
/// kind in `kinds`. `own_devices` are cchost's device names (for the message). A file
/// that cannot be read or parsed is skipped (the runtime skips it too).
pub fn conflicts(
    host: &HostRoot,
    own_dir: &str,
    kinds: &BTreeSet<String>,
    own_devices: &BTreeSet<String>,
) -> Vec<Conflict> {
    let mut dirs: Vec<&str> = SPEC_DIRS.to_vec();
    if !dirs.contains(&own_dir) {
        dirs.push(own_dir);
    }
    let mut out = Vec::new();
    for dir in dirs {
        let names = match host.list_dir_opt(dir) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(dir, error = %e, "CDI directory not readable");
                continue;
            }
        };
        for name in names {
            let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if name.starts_with(FILE_PREFIX)
                || name.starts_with('.')
                || !(yaml || name.ends_with(".json"))
            {
                continue;
            }
            let path = PathBuf::from(dir).join(&name);
            let Ok(text) = host.read_string(&path) else {
                continue;
            };
            let Some((kind, devices)) = kind_and_devices(&text, yaml) else {
                continue;
            };
            if kinds.contains(&kind) {
                let devices = devices
                    .into_iter()
                    .filter(|d| own_devices.contains(d))
                    .collect();
                out.push(Conflict {
                    path,
                    kind,
                    devices,
                });
            }
        }
    }
    out
}
