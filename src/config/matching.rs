//! Which PCI functions cchost treats as GPUs and NVSwitches, and what their device IDs
//! say about the chip. Defaults from docs/facts/gpu.md#pci-ids and gpu-admin-tools'
//! device-ID ranges; a new SKU is a config line, not a release.

use serde::{Deserialize, Serialize};

/// One matching rule: a vendor, optionally a class (16-bit, `0x0302`) and a device-ID
/// list (empty = any device of that vendor and class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceMatch {
    pub vendor: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<u16>,
}

impl DeviceMatch {
    pub fn matches(&self, vendor: u16, device: u16, class24: u32) -> bool {
        vendor == self.vendor
            && self.class.is_none_or(|c| (class24 >> 8) as u16 == c)
            && (self.devices.is_empty() || self.devices.contains(&device))
    }
}

/// GPU architecture generation, as far as CC cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Hopper,
    Blackwell,
    /// NVSwitch gen3 ("LS10", Hopper HGX).
    Ls10,
    Other,
}

/// A device-ID range belonging to one chip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChipRange {
    pub chip: String,
    pub architecture: Architecture,
    pub first: u16,
    pub last: u16,
    /// Confidential Computing mode can be queried and set.
    pub cc: bool,
    /// Protected PCIe (multi-GPU CC) mode exists.
    pub ppcie: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// Rules for GPUs. Setting this list replaces the defaults.
    pub gpu: Vec<DeviceMatch>,
    /// Rules for NVSwitches. Setting this list replaces the defaults.
    pub nvswitch: Vec<DeviceMatch>,
    /// Chip ranges by device ID. Setting this list replaces the defaults.
    pub chip: Vec<ChipRange>,
}

pub(crate) const NVIDIA_VENDOR: u16 = 0x10de;

impl Default for MatchConfig {
    fn default() -> Self {
        let nv = |class| DeviceMatch {
            vendor: NVIDIA_VENDOR,
            class: Some(class),
            devices: Vec::new(),
        };
        let chip = |chip: &str, architecture, first, last, cc, ppcie| ChipRange {
            chip: chip.to_string(),
            architecture,
            first,
            last,
            cc,
            ppcie,
        };
        use Architecture::*;
        MatchConfig {
            // VGA controller (graphics-mode boards) and 3D controller (data centre).
            gpu: vec![nv(0x0300), nv(0x0302)],
            // NVSwitches enumerate as "bridge, other".
            nvswitch: vec![nv(0x0680)],
            chip: vec![
                chip("GH100", Hopper, 0x22f0, 0x237f, true, true),
                chip("GB100", Blackwell, 0x2900, 0x297f, true, false),
                chip("GB102", Blackwell, 0x2980, 0x29ff, true, false),
                chip("GB110", Blackwell, 0x3180, 0x31ff, true, false),
                chip("GB112", Blackwell, 0x3200, 0x327f, true, false),
                chip("GB202", Blackwell, 0x2b80, 0x2bff, true, false),
                chip("GB203", Blackwell, 0x2c00, 0x2c7f, true, false),
                chip("GB205", Blackwell, 0x2f00, 0x2f7f, true, false),
                chip("GB206", Blackwell, 0x2d00, 0x2d7f, true, false),
                chip("GB207", Blackwell, 0x2d80, 0x2dff, true, false),
                // NVSwitch gen3 (HGX H100/H200): PPCIe capable.
                chip("LS10", Ls10, 0x22a3, 0x22a3, false, true),
            ],
        }
    }
}

impl MatchConfig {
    pub fn is_gpu(&self, vendor: u16, device: u16, class24: u32) -> bool {
        self.gpu.iter().any(|m| m.matches(vendor, device, class24))
    }

    pub(crate) fn is_nvswitch(&self, vendor: u16, device: u16, class24: u32) -> bool {
        self.nvswitch
            .iter()
            .any(|m| m.matches(vendor, device, class24))
    }

    /// The chip range a device ID falls in. Only NVIDIA parts have chip ranges.
    pub(crate) fn chip_for(&self, vendor: u16, device: u16) -> Option<&ChipRange> {
        if vendor != NVIDIA_VENDOR {
            return None;
        }
        self.chip
            .iter()
            .find(|c| (c.first..=c.last).contains(&device))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        for c in &self.chip {
            if c.first > c.last {
                return Err(format!(
                    "match.chip {:?}: first {:#06x} is above last {:#06x}",
                    c.chip, c.first, c.last
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_data_centre_gpus_and_nvswitches() {
        let m = MatchConfig::default();
        assert!(m.is_gpu(0x10de, 0x2330, 0x030200)); // H100 SXM5
        assert!(m.is_gpu(0x10de, 0x2901, 0x030200)); // B200
        assert!(!m.is_gpu(0x10de, 0x22a3, 0x068000)); // NVSwitch is not a GPU
        assert!(m.is_nvswitch(0x10de, 0x22a3, 0x068000));
        assert!(!m.is_gpu(0x8086, 0x1234, 0x030000));
        assert_eq!(m.chip_for(0x10de, 0x2335).unwrap().chip, "GH100"); // H200
        assert_eq!(m.chip_for(0x10de, 0x2901).unwrap().chip, "GB100");
        assert!(m.chip_for(0x10de, 0x20b0).is_none()); // A100: no CC
    }

    #[test]
    fn a_new_sku_is_a_config_line() {
        let text = "[[match.gpu]]\nvendor = 0x1234\ndevices = [0x11e8]\n";
        let cfg = crate::config::Config::from_toml(text, std::path::Path::new("t")).unwrap();
        assert!(cfg.matching.is_gpu(0x1234, 0x11e8, 0x00ff00));
        assert!(
            !cfg.matching.is_gpu(0x10de, 0x2330, 0x030200),
            "list replaces defaults"
        );
    }

    #[test]
    fn inverted_chip_range_is_rejected() {
        let text = "[[match.chip]]\nchip = \"X\"\narchitecture = \"hopper\"\nfirst = 0x2\nlast = 0x1\ncc = true\nppcie = false\n";
        let err = crate::config::Config::from_toml(text, std::path::Path::new("t")).unwrap_err();
        assert!(err.to_string().contains("first"), "{err}");
    }
}
