//! cchost's configuration (TOML). Every key is documented in docs/config.md with its
//! default; an unknown key is an error that names it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod cc;
pub mod cc_modes;
pub mod cdi_names;
mod dcap;
mod deviceplugin;
mod kata;
mod kernel;
mod labels;
mod matching;
mod observe;
pub mod paths;
mod vfio;

pub use cc::{CcConfig, RequestedMode};
pub use cc_modes::{CcModes, GpuModeEntry, GpuSlot, ModesError};
pub use dcap::{
    DcapConfig, DcapEnable, PccsConfig, QgsTransport, Secret, SuperviseConfig, SuperviseMode,
};
pub use deviceplugin::{DevicePluginConfig, EventSource, PluginMode, VfioModeConfig};
pub use kata::KataConfig;
pub use kernel::{GpuChoice, KernelConfig, MechanismChoice, ProfileChoice};
pub use labels::{LabelBackend, LabelsConfig, is_dns_subdomain};
pub use matching::{Architecture, ChipRange, DeviceMatch, MatchConfig};
pub use observe::{KubeEvents, ObserveConfig};
pub use vfio::VfioConfig;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cchost/config.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which PCI functions are GPUs and NVSwitches (a new SKU is a config line).
    #[serde(rename = "match")]
    pub matching: MatchConfig,
    /// vfio binding policy.
    pub vfio: VfioConfig,
    /// The kubelet device plugin and the CDI spec.
    pub device_plugin: DevicePluginConfig,
    /// Node labels and extended resources.
    pub labels: LabelsConfig,
    /// Kernel arguments and modules.
    pub kernel: KernelConfig,
    /// Intel DCAP helpers (QGS, QCNL/PCCS).
    pub dcap: DcapConfig,
    /// The GPUs' CC mode as `cchost run` keeps it.
    pub cc: CcConfig,
    /// Health endpoint, metrics and Kubernetes Events of `cchost run`.
    pub observe: ObserveConfig,
    /// Kata drop-ins (the QGS port of TDX guests).
    pub kata: KataConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("config {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: origin.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Loads the config file. `explicit` is true when the user named it: then a missing
    /// file is an error; the default path may be absent (defaults apply).
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        match read_config_text(path) {
            Ok(text) => Self::from_toml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Cross-field checks that serde cannot express.
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.matching.validate()?;
        self.device_plugin.validate()?;
        self.labels.validate()?;
        self.kernel.validate()?;
        self.vfio.validate()?;
        self.dcap.validate()?;
        self.observe.validate()?;
        self.cc.validate()?;
        if !self.cc.modes.is_empty() && self.device_plugin.gpu_resource.is_empty() {
            return Err("cc.modes serves CC and non-CC GPUs as two resources \
                        (device_plugin.gpu_resource and non_cc_gpu_resource); per-model \
                        names (gpu_resource = \"\") cannot tell them apart"
                .to_string());
        }
        Ok(())
    }
}

/// Reads the config file without ever blocking on it (a FIFO there is an error, not a
/// hang) and at most 1 MiB of it.
fn read_config_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    const LIMIT: u64 = 1024 * 1024;
    let file = crate::host::open_local_regular(path)?;
    let mut text = String::new();
    file.take(LIMIT + 1).read_to_string(&mut text)?;
    if text.len() as u64 > LIMIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {LIMIT} bytes; refusing to read it"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_default() {
        let cfg = Config::from_toml("", Path::new("c.toml")).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_key_is_an_error_that_names_it() {
        let err = Config::from_toml("[vfio]\nbind_nvswitchez = true\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bind_nvswitchez"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
        let err = Config::from_toml("colour = 1\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn the_udev_event_source_needs_the_udev_build() {
        let r = Config::from_toml(
            "[device_plugin]\nevent_source = \"udev\"\n",
            Path::new("c.toml"),
        );
        if cfg!(feature = "udev") {
            assert_eq!(r.unwrap().device_plugin.event_source, EventSource::Udev);
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("udev` cargo feature"), "{e}");
        }
        let e = Config::from_toml(
            "[device_plugin]\nevent_source = \"dbus\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dbus"), "{e}");
    }
}
