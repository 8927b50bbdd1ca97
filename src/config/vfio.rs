//! `[vfio]`: how cchost binds GPUs to vfio (documented in docs/config.md).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VfioConfig {
    /// Bind NVSwitches along with GPUs (HGX boards need them in the guest for NVLink).
    pub bind_nvswitches: bool,
    /// Bind the other functions of a GPU's slot (the HDMI audio function of a
    /// graphics-mode board) together with the GPU.
    pub bind_slot_functions: bool,
    /// Bind even when the IOMMU group holds devices cchost was not asked to move (they are
    /// left as they are, so the group is not usable by a VM until they are dealt with).
    /// Off: such a bind is refused.
    pub allow_foreign_group_members: bool,
    /// Load vfio-pci / the variant driver and vfio_iommu_type1 with the host's modprobe
    /// when they are missing. Off: a missing driver is an error.
    pub load_modules: bool,
    /// How long to wait for /dev/vfio/<group> (or /dev/vfio/devices/vfioN) to appear
    /// after a bind, in milliseconds (devtmpfs creates the node asynchronously).
    pub device_node_timeout_ms: u64,
    /// `cchost run` binds every matched GPU (and NVSwitch, per `bind_nvswitches`) at
    /// start, as `cchost gpu bind --all` would; refused devices are logged and left.
    pub bind_on_start: bool,
}

impl Default for VfioConfig {
    fn default() -> Self {
        VfioConfig {
            bind_nvswitches: true,
            bind_slot_functions: true,
            allow_foreign_group_members: false,
            load_modules: true,
            device_node_timeout_ms: 2000,
            bind_on_start: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn defaults_bind_nvswitches_and_refuse_foreign_members() {
        let c = Config::from_toml("", Path::new("c.toml")).unwrap().vfio;
        assert!(c.bind_nvswitches);
        assert!(c.bind_slot_functions);
        assert!(!c.allow_foreign_group_members);
        assert!(c.load_modules);
        assert_eq!(c.device_node_timeout_ms, 2000);
        assert!(!c.bind_on_start);
    }

    #[test]
    fn keys_parse() {
        let text = "[vfio]\nbind_nvswitches = false\nallow_foreign_group_members = true\ndevice_node_timeout_ms = 50\n";
        let c = Config::from_toml(text, Path::new("c.toml")).unwrap().vfio;
        assert!(!c.bind_nvswitches);
        assert!(c.allow_foreign_group_members);
        assert_eq!(c.device_node_timeout_ms, 50);
    }
}
