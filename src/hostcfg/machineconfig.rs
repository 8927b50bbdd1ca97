//! OpenShift MachineConfig for a profile: `kernelArguments` plus the modules-load.d file
//! (machineconfiguration.openshift.io/v1, Ignition 3.2.0; docs/facts/cpu-tee.md#kernel-args).
//! The MCO applies kernel arguments with rpm-ostree and reboots the pool; cchost never does.

use serde::Serialize;

use super::modules;
use super::profile::{ArgProfile, Platform};
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Worker,
    Master,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Master => "master",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MachineConfig {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    labels: std::collections::BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    config: Ignition,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kernel_arguments: Vec<String>,
}

#[derive(Serialize)]
struct Ignition {
    ignition: IgnitionVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<Storage>,
}

#[derive(Serialize)]
struct IgnitionVersion {
    version: &'static str,
}

#[derive(Serialize)]
struct Storage {
    files: Vec<File>,
}

#[derive(Serialize)]
struct File {
    path: String,
    /// Ignition wants the mode as a decimal integer (420 = 0644).
    mode: u32,
    overwrite: bool,
    contents: Contents,
}

#[derive(Serialize)]
struct Contents {
    source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Yaml(#[from] serde_norway::Error),
    #[error("Kata QGS drop-in: {0}")]
    Kata(String),
}

/// The MachineConfig's name: `99-cchost-<platform>[-gpu]-<role>`.
pub fn name(platform: Platform, gpu: bool, role: Role) -> String {
    format!(
        "99-cchost-{}{}-{}",
        platform.as_str(),
        if gpu { "-gpu" } else { "" },
        role.as_str()
    )
}

/// Renders the MachineConfig YAML (with a header naming the command that made it). On
/// TDX, with `kata.qgs_dropin` and DCAP not off, it also carries the Kata QGS drop-ins
/// ([`super::kata`]); a QGS setting Kata cannot reach is an error.
pub fn render(
    platform: Platform,
    gpu: bool,
    role: Role,
    full: &Config,
) -> Result<String, RenderError> {
    let cfg = &full.kernel;
    // No running host here: every argument of the profile is stated.
    let profile = ArgProfile::new(platform, gpu, None, cfg);
    let kernel_arguments = profile
        .edit(None)
        .add
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mods = modules::wanted(cfg);
    let mut files = Vec::new();
    if !mods.is_empty() {
        files.push(File {
            path: cfg.modules_load_file.display().to_string(),
            mode: 0o644,
            overwrite: true,
            contents: Contents {
                source: data_url(&modules::load_file_content(&mods)),
            },
        });
    }
    if platform == Platform::Tdx
        && full.kata.qgs_dropin
        && full.dcap.enable != crate::config::DcapEnable::Off
    {
        let content = super::kata::dropin_content(&full.dcap).map_err(RenderError::Kata)?;
        for path in super::kata::dropin_paths(&full.kata) {
            files.push(File {
                path: path.display().to_string(),
                mode: 0o644,
                overwrite: true,
                contents: Contents {
                    source: data_url(&content),
                },
            });
        }
    }
    let storage = (!files.is_empty()).then_some(Storage { files });
    let mc = MachineConfig {
        api_version: "machineconfiguration.openshift.io/v1",
        kind: "MachineConfig",
        metadata: Metadata {
            name: name(platform, gpu, role),
            labels: [("machineconfiguration.openshift.io/role", role.as_str())]
                .into_iter()
                .collect(),
        },
        spec: Spec {
            config: Ignition {
                ignition: IgnitionVersion { version: "3.2.0" },
                storage,
            },
            kernel_arguments,
        },
    };
    let yaml = serde_norway::to_string(&mc)?;
    Ok(format!(
        "# Rendered by `cchost render machineconfig --platform {}{} --role {}`; do not edit.\n{yaml}",
        platform.as_str(),
        if gpu { " --gpu" } else { "" },
        role.as_str()
    ))
}

/// RFC 2397 data URL with percent-encoding (Ignition accepts both this and base64).
fn data_url(text: &str) -> String {
    let mut s = String::from("data:,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tdx_gpu_worker_has_the_arguments_and_the_modules_file() {
        let y = render(Platform::Tdx, true, Role::Worker, &Config::default()).unwrap();
        let v: serde_json::Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(v["apiVersion"], "machineconfiguration.openshift.io/v1");
        assert_eq!(v["kind"], "MachineConfig");
        assert_eq!(v["metadata"]["name"], "99-cchost-tdx-gpu-worker");
        assert_eq!(
            v["metadata"]["labels"]["machineconfiguration.openshift.io/role"],
            "worker"
        );
        assert_eq!(v["spec"]["config"]["ignition"]["version"], "3.2.0");
        assert_eq!(
            v["spec"]["kernelArguments"],
            serde_json::json!(["kvm_intel.tdx=1", "nohibernate", "intel_iommu=on"])
        );
        let f = &v["spec"]["config"]["storage"]["files"][0];
        assert_eq!(f["path"], "/etc/modules-load.d/cchost.conf");
        assert_eq!(f["mode"], 420);
        assert_eq!(f["contents"]["source"], "data:,vhost_vsock%0A");
        // The Kata QGS drop-ins (unix socket: port 0), one per TDX runtime handler.
        let files = v["spec"]["config"]["storage"]["files"].as_array().unwrap();
        let kata: Vec<&serde_json::Value> = files
            .iter()
            .filter(|f| {
                f["path"]
                    .as_str()
                    .unwrap()
                    .ends_with("/config.d/96-cchost-qgs")
            })
            .collect();
        assert_eq!(kata.len(), 2, "{y}");
        assert!(
            kata[0]["contents"]["source"]
                .as_str()
                .unwrap()
                .contains("tdx_quote_generation_service_socket_port%20%3D%200%0A"),
            "{y}"
        );
    }

    #[test]
    fn vsock_transport_gives_kata_the_port_and_a_bad_socket_is_refused() {
        let mut c = Config::default();
        c.dcap.transport = crate::config::QgsTransport::Vsock;
        let y = render(Platform::Tdx, false, Role::Worker, &c).unwrap();
        assert!(y.contains("socket_port%20%3D%204050%0A"), "{y}");
        c.dcap.transport = crate::config::QgsTransport::Unix;
        c.dcap.socket = "/run/elsewhere.sock".into();
        assert!(render(Platform::Tdx, false, Role::Worker, &c).is_err());
        // SNP: no Kata TDX drop-in.
        let y = render(Platform::Snp, false, Role::Worker, &Config::default()).unwrap();
        assert!(!y.contains("96-cchost-qgs"), "{y}");
    }

    #[test]
    fn snp_never_renders_iommu_arguments() {
        for gpu in [false, true] {
            let y = render(Platform::Snp, gpu, Role::Master, &Config::default()).unwrap();
            assert!(!y.contains("iommu"), "{y}");
            assert!(y.contains("kvm_amd.sev_snp=1"));
        }
    }

    #[test]
    fn data_url_escapes() {
        assert_eq!(data_url("a b\n"), "data:,a%20b%0A");
    }
}
