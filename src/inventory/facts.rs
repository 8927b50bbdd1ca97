//! The facts that node configuration decides from: a small, serde-able digest of the
//! inventory. Labels, kernel arguments and modules are pure functions of this (and the
//! config), so they are table-tested without a host; `from_inventory` fills it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuVendor {
    Intel,
    Amd,
    Other,
    #[default]
    Unknown,
}

/// Intel TDX on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxFacts {
    /// The platform can run TDX (cpuinfo `tdx_host_platform`: BIOS has it on).
    pub capable: bool,
    /// KVM runs TD guests (`/sys/module/kvm_intel/parameters/tdx` = Y).
    pub enabled: bool,
    /// HKIDs for TDs (misc.capacity `tdx`).
    pub keys: Option<u64>,
}

/// AMD SEV / SEV-ES / SEV-SNP on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpFacts {
    /// The CPU has SEV-SNP (cpuinfo `sev_snp`).
    pub capable: bool,
    /// `/sys/module/kvm_amd/parameters/sev_snp` is Y or 1.
    pub enabled: bool,
    pub sev_enabled: bool,
    pub sev_es_enabled: bool,
    /// SEV-ES ASIDs (misc.capacity `sev_es`); SNP guests use these.
    pub esids: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IommuMode {
    /// DMA translated (`DMA`, `DMA-FQ` group types).
    Translated,
    /// Identity mapping (`iommu=pt`).
    Passthrough,
    /// Groups of both kinds.
    Mixed,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuFacts {
    /// DMAR (Intel) or IVRS (AMD) ACPI table present.
    pub present: bool,
    /// The kernel made IOMMU groups.
    pub enabled: bool,
    pub mode: IommuMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CcMode {
    On,
    Off,
    Devtools,
    Ppcie,
    /// The firmware could not be queried, or reported the invalid mode (2) an interrupted
    /// switch leaves (NVIDIA's `failed`).
    Failed,
}

impl CcMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CcMode::On => "on",
            CcMode::Off => "off",
            CcMode::Devtools => "devtools",
            CcMode::Ppcie => "ppcie",
            CcMode::Failed => "failed",
        }
    }
}

/// One matched GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuFacts {
    pub address: String,
    /// Marketing name (pci-ids), e.g. "GH100 [H100 SXM5 80GB]".
    pub model: Option<String>,
    /// Chip, e.g. "GH100".
    pub chip: Option<String>,
    /// Its chip supports Confidential Computing mode.
    pub cc_capable: bool,
    /// The CC mode the firmware reports, when it was queried.
    pub cc_mode: Option<CcMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub cpu_vendor: CpuVendor,
    pub tdx: TdxFacts,
    pub snp: SnpFacts,
    pub iommu: IommuFacts,
    /// The running kernel's command line, split into arguments.
    pub cmdline: Vec<String>,
    /// Modules in /proc/modules.
    pub modules_loaded: BTreeSet<String>,
    /// Modules in /lib/modules/<release>/modules.builtin.
    pub modules_builtin: BTreeSet<String>,
    /// `/dev/vhost-vsock` exists.
    pub vhost_vsock_device: bool,
    pub gpus: Vec<GpuFacts>,
}

impl NodeFacts {
    /// A module is usable now (loaded, or built into the kernel). Names compare with
    /// `-` and `_` as equals, as the kernel does.
    pub fn module_active(&self, name: &str) -> bool {
        let n = name.replace('-', "_");
        self.modules_loaded.contains(&n) || self.modules_builtin.contains(&n)
    }
}
