//! `[cc]`: the GPUs' Confidential Computing mode as `cchost run` keeps it (documented in
//! docs/config.md).

use serde::{Deserialize, Serialize};

/// The CC mode an operator asks for: the one vocabulary of `cc.mode_on_start`,
/// `cc.default_mode` and `[[cc.modes]] mode` (docs/config.md, "One vocabulary"). Each
/// field accepts a part of it, checked at load ([`CcConfig::validate`]) so that a
/// refusal names the field and says why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestedMode {
    /// Leave the mode as it is (`cchost gpu cc set` changes it by hand).
    #[default]
    Keep,
    On,
    Off,
    /// A whole-node debugging mode.
    Devtools,
    /// Protected PCIe: every GPU and NVSwitch of a board, all or nothing.
    Ppcie,
}

impl RequestedMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestedMode::Keep => "keep",
            RequestedMode::On => "on",
            RequestedMode::Off => "off",
            RequestedMode::Devtools => "devtools",
            RequestedMode::Ppcie => "ppcie",
        }
    }
}

impl std::fmt::Display for RequestedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CcConfig {
    /// `cchost run` switches every CC-capable GPU that is driverless or on vfio-pci and
    /// unused to this mode at start (journaled, as `cchost gpu cc set`). Not `ppcie`.
    pub mode_on_start: RequestedMode,
    /// `cchost run` watches its own Node's `nvidia.com/cc.mode` label and switches the
    /// GPUs to it, as NVIDIA's cc-manager does (needs the `node` labels backend).
    pub follow_label: bool,
    /// The mode `follow_label` applies while the Node has no `nvidia.com/cc.mode` label
    /// (cc-manager's `DEFAULT_CC_MODE`; `keep` leaves the GPUs as they are).
    pub default_mode: RequestedMode,
    /// Per-GPU modes of a mixed node (`[[cc.modes]]`); empty: one mode for the node.
    pub modes: super::cc_modes::CcModes,
}

impl CcConfig {
    /// Each field's part of [`RequestedMode`]; per-GPU modes exclude the two whole-node
    /// ways of setting the mode: they would switch the same GPUs against each other.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.mode_on_start == RequestedMode::Ppcie {
            // cc_on_start::set_mode switches the GPUs' CC mode one GPU at a time and
            // leaves NVSwitches alone; PPCIe is a board-wide all-or-nothing change of
            // GPUs and NVSwitches (docs/gpu.md, "PPCIe (HGX Hopper)").
            return Err(
                "cc.mode_on_start = \"ppcie\" is not accepted: mode_on_start switches each \
                 GPU's CC mode (on, off, devtools), while Protected PCIe covers a whole \
                 board (every GPU and NVSwitch, all or nothing); use `cchost gpu cc ppcie \
                 set on`, or cc.follow_label with nvidia.com/cc.mode=ppcie (or \
                 cc.default_mode = \"ppcie\")"
                    .to_string(),
            );
        }
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
        if self.mode_on_start != RequestedMode::Keep {
            return Err(
                "cc.modes sets each GPU's mode at start, and cc.mode_on_start sets one \
                        mode for every GPU: leave cc.mode_on_start at \"keep\""
                    .to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RequestedMode;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn keep_by_default_and_modes_parse() {
        let c = Config::from_toml("", Path::new("c.toml")).unwrap().cc;
        assert_eq!(c.mode_on_start, RequestedMode::Keep);
        let c = Config::from_toml("[cc]\nmode_on_start = \"on\"\n", Path::new("c.toml"))
            .unwrap()
            .cc;
        assert_eq!(c.mode_on_start, RequestedMode::On);
        let e = Config::from_toml("[cc]\nmode_on_start = \"ppcie\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ppcie"), "{e}");
    }

    #[test]
    fn mode_on_start_ppcie_is_refused_naming_the_field_and_why() {
        let e = Config::from_toml("[cc]\nmode_on_start = \"ppcie\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml"), "{e}");
        assert!(e.contains("cc.mode_on_start = \"ppcie\""), "{e}");
        assert!(e.contains("whole board"), "{e}");
        assert!(e.contains("cchost gpu cc ppcie set"), "{e}");
    }

    /// One vocabulary, each field its part: every value parses, and what a field does
    /// not take is refused at load.
    #[test]
    fn every_value_parses_where_the_field_takes_it() {
        for (v, m) in [
            ("keep", RequestedMode::Keep),
            ("on", RequestedMode::On),
            ("off", RequestedMode::Off),
            ("devtools", RequestedMode::Devtools),
            ("ppcie", RequestedMode::Ppcie),
        ] {
            assert_eq!(m.as_str(), v);
            let c = Config::from_toml(
                &format!("[cc]\ndefault_mode = \"{v}\"\n"),
                Path::new("c.toml"),
            )
            .unwrap()
            .cc;
            assert_eq!(c.default_mode, m);
            let r = Config::from_toml(
                &format!("[cc]\nmode_on_start = \"{v}\"\n"),
                Path::new("c.toml"),
            );
            if m == RequestedMode::Ppcie {
                assert!(r.is_err());
            } else {
                assert_eq!(r.unwrap().cc.mode_on_start, m);
            }
        }
        let e = Config::from_toml("[cc]\ndefault_mode = \"maybe\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("maybe"), "{e}");
    }
}
