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
    /// `cchost run` watches its own Node's `nvidia.com/cc.mode` label and switches the
    /// GPUs to it, as NVIDIA's cc-manager does (needs the `node` labels backend).
    pub follow_label: bool,
    /// The mode `follow_label` applies while the Node has no `nvidia.com/cc.mode` label.
    pub default_mode: DefaultMode,
    /// Per-GPU modes of a mixed node (`[[cc.modes]]`); empty: one mode for the node.
    pub modes: super::cc_modes::CcModes,
}

impl CcConfig {
    /// Per-GPU modes exclude the two whole-node ways of setting the mode: they would
    /// switch the same GPUs against each other.
    pub fn validate(&self) -> Result<(), String> {
        self.modes.validate()?;
        if self.modes.is_empty() {
            return Ok(());
        }
        if self.follow_label {
            return Err(
                "cc.modes sets each GPU's mode, and cc.follow_label = true sets one \
                        mode for the whole node from the nvidia.com/cc.mode label: use one \
                        of the two"
                    .to_string(),
            );
        }
        if self.mode_on_start != ModeOnStart::Keep {
            return Err(
                "cc.modes sets each GPU's mode at start, and cc.mode_on_start sets one \
                        mode for every GPU: leave cc.mode_on_start at \"keep\""
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// The mode applied without a `nvidia.com/cc.mode` label (cc-manager's
/// `DEFAULT_CC_MODE`; `keep` leaves the GPUs as they are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultMode {
    #[default]
    Keep,
    On,
    Off,
    Devtools,
    Ppcie,
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
