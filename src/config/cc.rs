//! `[cc]`: the GPUs' Confidential Computing mode as `cchost run` keeps it (documented in
//! docs/config.md).

use serde::{Deserialize, Serialize};

/// What `cchost run` does with the GPUs' CC mode when it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeOnStart {
    /// Leave it as it is (`cchost gpu cc set` changes it by hand).
    #[default]
    Keep,
    On,
    Off,
    Devtools,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CcConfig {
    /// `cchost run` switches every CC-capable GPU that is driverless or on vfio-pci and
    /// unused to this mode at start (journaled, as `cchost gpu cc set`).
    pub mode_on_start: ModeOnStart,
}

#[cfg(test)]
mod tests {
    use super::ModeOnStart;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn keep_by_default_and_modes_parse() {
        let c = Config::from_toml("", Path::new("c.toml")).unwrap().cc;
        assert_eq!(c.mode_on_start, ModeOnStart::Keep);
        let c = Config::from_toml("[cc]\nmode_on_start = \"on\"\n", Path::new("c.toml"))
            .unwrap()
            .cc;
        assert_eq!(c.mode_on_start, ModeOnStart::On);
        let e = Config::from_toml("[cc]\nmode_on_start = \"ppcie\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ppcie"), "{e}");
    }
}
