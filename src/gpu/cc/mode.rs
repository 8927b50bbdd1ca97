//! CC modes as the registers report them, and the modes a user can ask for.

use serde::{Deserialize, Serialize};

use super::regs::{self, Family};

/// Active CC mode, decoded from bits[1:0] of the mode register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CcMode {
    Off,
    On,
    Devtools,
    /// Value 2: left by an interrupted switch; only setting a mode fixes it
    /// (gpu-admin-tools #7).
    Invalid,
}

impl CcMode {
    pub(crate) fn from_bits(bits: u32) -> CcMode {
        match bits & regs::CC_MODE_MASK {
            0 => CcMode::Off,
            1 => CcMode::On,
            3 => CcMode::Devtools,
            _ => CcMode::Invalid,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CcMode::Off => "off",
            CcMode::On => "on",
            CcMode::Devtools => "devtools",
            CcMode::Invalid => "invalid",
        }
    }
}

impl std::fmt::Display for CcMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode that can be requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetMode {
    Off,
    On,
    Devtools,
}

impl TargetMode {
    pub fn as_mode(self) -> CcMode {
        match self {
            TargetMode::Off => CcMode::Off,
            TargetMode::On => CcMode::On,
            TargetMode::Devtools => CcMode::Devtools,
        }
    }
}

impl std::fmt::Display for TargetMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_mode().as_str())
    }
}

/// A change `cchost gpu cc set` / `ppcie set` makes: what the journal records as the
/// change of a `gpu.cc` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Setting {
    /// A CC mode (GPUs).
    Cc(TargetMode),
    /// PPCIe on or off (HGX Hopper GPUs and LS10 NVSwitches).
    Ppcie(bool),
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::Cc(m) => write!(f, "cc {m}"),
            Setting::Ppcie(on) => write!(f, "ppcie {}", if *on { "on" } else { "off" }),
        }
    }
}

/// The state a restore puts a device back into, derived from the state read before a
/// change: the CC mode (GPUs) and the PPCIe flag (families that have one). `None`
/// fields are left as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wanted {
    pub cc: Option<TargetMode>,
    pub ppcie: Option<bool>,
}

impl Wanted {
    /// What restores `before`. The invalid mode (value 2) is never a target: a device
    /// that was invalid before cchost touched it has nothing worth restoring.
    pub(crate) fn from_state(before: &CcState) -> Result<Wanted, CcMode> {
        let cc = match before.mode {
            None => None,
            Some(CcMode::Off) => Some(TargetMode::Off),
            Some(CcMode::On) => Some(TargetMode::On),
            Some(CcMode::Devtools) => Some(TargetMode::Devtools),
            Some(CcMode::Invalid) => return Err(CcMode::Invalid),
        };
        Ok(Wanted {
            cc,
            ppcie: before.ppcie,
        })
    }

    /// Does `state` show this?
    pub fn matches(&self, state: &CcState) -> bool {
        self.cc.is_none_or(|m| state.mode == Some(m.as_mode()))
            && self.ppcie.is_none_or(|p| state.ppcie == Some(p))
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = self.cc {
            parts.push(format!("cc={m}"));
        }
        if let Some(p) = self.ppcie {
            parts.push(format!("ppcie={}", if p { "on" } else { "off" }));
        }
        f.write_str(&parts.join(" "))
    }
}

/// What the registers say, after the FSP reported boot-complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CcState {
    /// `None` on an NVSwitch (it has PPCIe only).
    pub mode: Option<CcMode>,
    /// `None` where the family has no PPCIe (Blackwell).
    pub ppcie: Option<bool>,
    /// Blackwell only: bit 2 of the mode register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bar0_firewall: Option<bool>,
    /// The raw register the state was decoded from.
    pub raw: u32,
}

impl CcState {
    /// Decodes the family's mode register (the PPCIe register on an NVSwitch).
    pub(crate) fn decode(family: Family, raw: u32) -> CcState {
        match family {
            Family::Hopper => CcState {
                mode: Some(CcMode::from_bits(raw)),
                ppcie: Some(raw & regs::HOPPER_PPCIE_BIT != 0),
                bar0_firewall: None,
                raw,
            },
            Family::Blackwell | Family::Gb20x => CcState {
                mode: Some(CcMode::from_bits(raw)),
                ppcie: None,
                bar0_firewall: Some(raw & regs::BLACKWELL_FIREWALL_BIT != 0),
                raw,
            },
            Family::Ls10 => CcState {
                mode: None,
                ppcie: Some(raw & 1 != 0),
                bar0_firewall: None,
                raw,
            },
        }
    }

    /// The label value NVIDIA's tooling uses (`nvidia.com/cc.mode.state`).
    pub fn label(&self) -> &'static str {
        if self.ppcie == Some(true) {
            return "ppcie";
        }
        match self.mode {
            Some(CcMode::Invalid) => "failed",
            Some(m) => m.as_str(),
            None => "off",
        }
    }
}

impl std::fmt::Display for CcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        if let Some(m) = self.mode {
            write!(f, "cc={m}")?;
            sep = " ";
        }
        if let Some(p) = self.ppcie {
            write!(f, "{sep}ppcie={}", if p { "on" } else { "off" })?;
            sep = " ";
        }
        if let Some(fw) = self.bar0_firewall {
            write!(f, "{sep}bar0-firewall={}", if fw { "on" } else { "off" })?;
        }
        write!(f, " (raw {:#010x})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_family() {
        let s = CcState::decode(Family::Hopper, 0x21);
        assert_eq!((s.mode, s.ppcie), (Some(CcMode::On), Some(true)));
        assert_eq!(s.label(), "ppcie");
        let s = CcState::decode(Family::Hopper, 0x2);
        assert_eq!(s.mode, Some(CcMode::Invalid));
        assert_eq!(s.label(), "failed");
        let s = CcState::decode(Family::Blackwell, 0x7);
        assert_eq!(s.mode, Some(CcMode::Devtools));
        assert_eq!(s.bar0_firewall, Some(true));
        assert_eq!(s.ppcie, None);
        let s = CcState::decode(Family::Ls10, 0x1);
        assert_eq!((s.mode, s.ppcie), (None, Some(true)));
    }
}
