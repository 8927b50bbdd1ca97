//! Which of the replaced stack's jobs cchost does on this node, from its configuration
//! and the host. The consumers' "deploy" labels (`nvidia.com/gpu.deploy.*`) stand for
//! these jobs, so cchost writes them only when it truly does the job here.

use crate::config::{Config, PluginMode};
use crate::host::{HostRoot, NodeKind};
use crate::inventory::facts::Duties;

/// The duties `cchost run` takes on with this configuration on this host.
pub fn duties(cfg: &Config, host: &HostRoot) -> Duties {
    let dp = &cfg.device_plugin;
    // The same decision as the daemon's device-plugin service (src/daemon/passthrough.rs).
    let serves_gpus = match dp.mode {
        PluginMode::Off => false,
        PluginMode::On => true,
        PluginMode::Auto => host.kind_followed(&dp.socket_dir) == Some(NodeKind::Dir),
    };
    Duties {
        binds_gpus: cfg.vfio.bind_on_start,
        serves_gpus,
        manages_cc_mode: cfg.cc.follow_label,
        per_gpu_cc_modes: !cfg.cc.modes.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duty_follows_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let mut cfg = Config::default();
        assert_eq!(duties(&cfg, &host), Duties::default());
        // auto: only where the kubelet's device-plugin directory exists.
        std::fs::create_dir_all(dir.path().join("var/lib/kubelet/device-plugins")).unwrap();
        assert!(duties(&cfg, &host).serves_gpus);
        cfg.device_plugin.mode = PluginMode::Off;
        cfg.vfio.bind_on_start = true;
        cfg.cc.follow_label = true;
        let d = duties(&cfg, &host);
        assert!(!d.serves_gpus && d.binds_gpus && d.manages_cc_mode);
    }
}
