//! `[kata]`: where cchost puts its Kata drop-ins (documented in docs/config.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KataConfig {
    /// Write the QGS drop-in (TDX hosts with DCAP on).
    pub qgs_dropin: bool,
    /// The `config.d` directories of the TDX runtime handlers (the sandboxed-containers
    /// operator's `kata-tdx` and `kata-tdx-nvidia-gpu`).
    pub tdx_config_dirs: Vec<PathBuf>,
}

impl Default for KataConfig {
    fn default() -> Self {
        KataConfig {
            qgs_dropin: true,
            tdx_config_dirs: vec![
                PathBuf::from("/etc/kata-containers/kata-tdx/config.d"),
                PathBuf::from("/etc/kata-containers/kata-tdx-nvidia-gpu/config.d"),
            ],
        }
    }
}
