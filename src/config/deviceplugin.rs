//! `[device_plugin]`: the kubelet device plugin and the host CDI spec.

use serde::{Deserialize, Serialize};

/// Whether `cchost run` serves the kubelet device plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginMode {
    /// Serve when the kubelet device-plugin directory exists (a Kubernetes node).
    Auto,
    /// Always serve (the directory is created when missing).
    On,
    /// Never serve; the CDI spec is still written.
    Off,
}

/// Which `/dev` nodes name a passthrough device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VfioModeConfig {
    /// iommufd when the host has `/dev/iommu` and `/dev/vfio/devices/`, else legacy groups.
    Auto,
    /// `/dev/vfio/vfio` + `/dev/vfio/<group>`; device ID = IOMMU group number.
    Legacy,
    /// `/dev/vfio/devices/vfioN` + `/dev/iommu`; device ID = N.
    Iommufd,
}

/// Where `cchost run` hears about device changes (`host::device_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    /// Kernel uevents from a netlink socket (no library; the default).
    Netlink,
    /// systemd-udevd's processed events through libudev (needs the `udev` cargo
    /// feature and udevd on the host).
    Udev,
}

/// The default resource name of non-CC GPUs on a mixed node (docs/config.md).
pub(crate) const NON_CC_GPU_RESOURCE: &str = "nvidia.com/pgpu-nocc";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicePluginConfig {
    /// Serve the device plugin: "auto", "on" or "off".
    pub mode: PluginMode,
    /// Resource name (and CDI kind) of passthrough GPUs. Empty: one resource per GPU
    /// model, `<model_prefix>/<MODEL>` (like NVIDIA's `P_GPU_ALIAS=""`).
    pub gpu_resource: String,
    /// Resource name (and CDI kind) of the GPUs `[[cc.modes]]` puts in mode `off` on a
    /// mixed node (the GPUs in mode `on` keep `gpu_resource`). Unused without
    /// `cc.modes`.
    pub non_cc_gpu_resource: String,
    /// Vendor prefix of per-model resource names.
    pub model_prefix: String,
    /// Resource name (and CDI kind) of NVSwitches. Empty: one resource per model.
    pub nvswitch_resource: String,
    /// Also return `PCI_RESOURCE_<NAME>=<bdf,...>` in Allocate (KubeVirt style).
    pub pci_resource_env: bool,
    /// Kubelet's device-plugin directory (host path).
    pub socket_dir: String,
    /// Directory for the CDI spec files (host path).
    pub cdi_dir: String,
    /// Drivers that make a function usable for passthrough.
    pub vfio_drivers: Vec<String>,
    /// Which vfio device nodes to hand out: "auto", "legacy" or "iommufd".
    pub vfio_mode: VfioModeConfig,
    /// Safety-net rescan interval of `cchost run` in seconds (uevents drive normal
    /// updates); 0 disables it.
    pub rescan_interval_s: u64,
    /// Device-event source of `cchost run`: "netlink" or "udev".
    pub event_source: EventSource,
}

impl Default for DevicePluginConfig {
    fn default() -> Self {
        DevicePluginConfig {
            mode: PluginMode::Auto,
            gpu_resource: "nvidia.com/pgpu".to_string(),
            non_cc_gpu_resource: NON_CC_GPU_RESOURCE.to_string(),
            model_prefix: "nvidia.com".to_string(),
            nvswitch_resource: "nvidia.com/nvswitch".to_string(),
            pci_resource_env: false,
            socket_dir: "/var/lib/kubelet/device-plugins".to_string(),
            cdi_dir: "/var/run/cdi".to_string(),
            vfio_drivers: vec!["vfio-pci".to_string(), "nvgrace_gpu_vfio_pci".to_string()],
            vfio_mode: VfioModeConfig::Auto,
            rescan_interval_s: 300,
            event_source: EventSource::Netlink,
        }
    }
}

impl DevicePluginConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("gpu_resource", &self.gpu_resource),
            ("nvswitch_resource", &self.nvswitch_resource),
        ] {
            if !value.is_empty() {
                super::cdi_names::validate_kind(value)
                    .map_err(|e| format!("device_plugin.{key} {value:?}: {e}"))?;
            }
        }
        super::cdi_names::validate_kind(&self.non_cc_gpu_resource).map_err(|e| {
            format!(
                "device_plugin.non_cc_gpu_resource {:?}: {e}",
                self.non_cc_gpu_resource
            )
        })?;
        if self.non_cc_gpu_resource == self.gpu_resource
            || self.non_cc_gpu_resource == self.nvswitch_resource
        {
            return Err(
                "device_plugin.non_cc_gpu_resource must differ from gpu_resource and \
                 nvswitch_resource (a confidential pod must never be handed a non-CC GPU)"
                    .into(),
            );
        }
        if self.gpu_resource.is_empty() {
            super::cdi_names::validate_vendor(&self.model_prefix)
                .map_err(|e| format!("device_plugin.model_prefix {:?}: {e}", self.model_prefix))?;
        }
        if !self.gpu_resource.is_empty() && self.gpu_resource == self.nvswitch_resource {
            return Err("device_plugin.gpu_resource and nvswitch_resource must differ".into());
        }
        if self.event_source == EventSource::Udev && !cfg!(feature = "udev") {
            return Err(
                "device_plugin.event_source = \"udev\": this cchost was built without \
                 the `udev` cargo feature (cargo build --features udev); use \"netlink\""
                    .into(),
            );
        }
        for (key, value) in [("socket_dir", &self.socket_dir), ("cdi_dir", &self.cdi_dir)] {
            if !value.starts_with('/') {
                return Err(format!(
                    "device_plugin.{key} {value:?}: must be an absolute path"
                ));
            }
        }
        // kubelet's device-plugin directory is <kubelet root>/device-plugins (the root
        // moves on k0s, microk8s); CDI reads specs from /etc/cdi and /var/run/cdi
        // (cncf-tags/container-device-interface, SPEC.md). cchost removes stale specs it
        // wrote in cdi_dir, so that directory must be a CDI one.
        let sock = std::path::Path::new(&self.socket_dir);
        super::paths::normal_absolute("device_plugin.socket_dir", sock)?;
        if sock.file_name() != Some(std::ffi::OsStr::new("device-plugins")) {
            return Err(format!(
                "device_plugin.socket_dir = {:?}: must be kubelet's <root>/device-plugins directory",
                self.socket_dir
            ));
        }
        super::paths::under_one_of(
            "device_plugin.cdi_dir",
            std::path::Path::new(&self.cdi_dir),
            &["/etc/cdi", "/var/run/cdi", "/run/cdi"],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn defaults_and_overrides() {
        let cfg = Config::from_toml("", Path::new("c.toml")).unwrap();
        assert_eq!(cfg.device_plugin.gpu_resource, "nvidia.com/pgpu");
        let text = "[device_plugin]\ngpu_resource = \"\"\nvfio_mode = \"legacy\"\npci_resource_env = true\n";
        let cfg = Config::from_toml(text, Path::new("c.toml")).unwrap();
        assert!(cfg.device_plugin.gpu_resource.is_empty());
        assert!(cfg.device_plugin.pci_resource_env);
    }

    #[test]
    fn bad_resource_names_are_refused_with_the_key() {
        for bad in [
            "pgpu",
            "nvidia.com/",
            "/pgpu",
            "nvidia.com/p gpu",
            "-x.com/pgpu",
        ] {
            let text = format!("[device_plugin]\ngpu_resource = \"{bad}\"\n");
            let err = Config::from_toml(&text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("gpu_resource"), "{bad}: {err}");
        }
        let err = Config::from_toml(
            "[device_plugin]\nsocket_dir = \"var/lib\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("socket_dir"), "{err}");
    }
}
