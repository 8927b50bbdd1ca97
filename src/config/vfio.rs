//! `[vfio]`: how cchost binds GPUs to vfio (documented in docs/config.md).

use std::path::PathBuf;

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
    /// When the only processes holding a GPU (or NVSwitch) are NVIDIA's host daemons
    /// (`nvidia-persistenced`, `nvidia-fabricmanager`), stop their systemd units over
    /// D-Bus before the bind (journaled: `cchost undo` starts them again). Off: such a
    /// bind is refused, naming the units. `cchost gpu bind --stop-services` turns it on
    /// for one command.
    pub stop_nvidia_services: bool,
    /// How long a unit may take to stop (or start again), in milliseconds.
    pub stop_services_timeout_ms: u64,
    /// Make the next boot give the matched GPUs (and NVSwitches, per `bind_nvswitches`)
    /// to vfio-pci before nvidia can claim them: `vfio-pci.ids=` on the kernel command
    /// line (through the kernel-arguments plan) and a modprobe.d file with the same ids
    /// and a `softdep` that loads vfio-pci before nvidia and nouveau.
    pub boot_bind: bool,
    /// The modprobe.d file cchost owns for `boot_bind`.
    pub modprobe_file: PathBuf,
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
            stop_nvidia_services: false,
            stop_services_timeout_ms: 30_000,
            boot_bind: false,
            modprobe_file: PathBuf::from("/etc/modprobe.d/cchost-vfio.conf"),
        }
    }
}

impl VfioConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        // modprobe reads *.conf directly in /etc/modprobe.d (modprobe.d(5)); checked in
        // normal form, so `..` cannot leave it.
        super::paths::file_in(
            "vfio.modprobe_file",
            &self.modprobe_file,
            "/etc/modprobe.d",
            Some(".conf"),
        )?;
        if self.stop_services_timeout_ms == 0 {
            return Err("vfio.stop_services_timeout_ms must be more than 0".into());
        }
        Ok(())
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
        assert!(!c.stop_nvidia_services);
        assert_eq!(c.stop_services_timeout_ms, 30_000);
        assert!(!c.boot_bind);
        assert_eq!(
            c.modprobe_file,
            std::path::PathBuf::from("/etc/modprobe.d/cchost-vfio.conf")
        );
    }

    #[test]
    fn keys_parse() {
        let text = "[vfio]\nbind_nvswitches = false\nallow_foreign_group_members = true\ndevice_node_timeout_ms = 50\nstop_nvidia_services = true\nboot_bind = true\n";
        let c = Config::from_toml(text, Path::new("c.toml")).unwrap().vfio;
        assert!(!c.bind_nvswitches);
        assert!(c.allow_foreign_group_members);
        assert_eq!(c.device_node_timeout_ms, 50);
        assert!(c.stop_nvidia_services && c.boot_bind);
    }

    #[test]
    fn the_modprobe_file_stays_in_modprobe_d() {
        for bad in [
            "/etc/modprobe.d/../shadow.conf",
            "/etc/cchost.conf",
            "/etc/modprobe.d/x.txt",
        ] {
            let text = format!("[vfio]\nmodprobe_file = \"{bad}\"\n");
            let e = Config::from_toml(&text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("vfio.modprobe_file"), "{bad}: {e}");
        }
    }
}
