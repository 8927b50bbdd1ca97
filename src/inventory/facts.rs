//! The facts that node configuration decides from: a small, serde-able digest of the
//! inventory. Labels, kernel arguments and modules are pure functions of this (and the
//! config), so they are table-tested without a host; `from_inventory` fills it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

// One vocabulary per fact: the inventory's own CPU vendor and IOMMU mode (Arm and Off
// included), not copies of them.
pub use super::cpuinfo::CpuVendor;
pub use super::iommu::IommuMode;

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

/// Hardware virtualization as Kata needs it (the CPU flags NFD's `cpu.cpuid` feature
/// shows, by their /proc/cpuinfo names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtFacts {
    /// cpuinfo `sse4_2` (NFD `SSE42`).
    pub sse4_2: bool,
    /// cpuinfo `vmx` (Intel VT-x; NFD `VMX`).
    pub vmx: bool,
    /// cpuinfo `svm` (AMD-V; NFD `SVM`).
    pub svm: bool,
}

/// Intel SGX as the DCAP stack (QGS, the SGX device plugin) needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgxFacts {
    /// cpuinfo `sgx` and `sgx_lc` (launch control; the in-kernel driver needs it).
    pub cpu: bool,
    /// `/dev/sgx_enclave`: the kernel's SGX driver found EPC memory and started
    /// (arch/x86/kernel/cpu/sgx/driver.c creates it only then).
    pub enclave_device: bool,
    /// `/dev/sgx_provision`: needed by the quoting enclaves QGS loads.
    pub provision_device: bool,
}

impl SgxFacts {
    /// SGX is usable on this node: CPU support with launch control and both device
    /// nodes (the BIOS enabled it and gave it EPC).
    pub fn enabled(&self) -> bool {
        self.cpu && self.enclave_device && self.provision_device
    }
}

/// The jobs cchost itself does on this node (from its configuration and the host),
/// which the consumers' "deploy" labels stand for. Not hardware facts, but facts about
/// cchost here; the labels stay a pure function of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duties {
    /// `cchost run` binds the matched GPUs to vfio at start (`vfio.bind_on_start`): the
    /// job of the GPU Operator's vfio-manager.
    pub binds_gpus: bool,
    /// `cchost run` serves the GPUs to the kubelet as a device plugin with CDI
    /// (`device_plugin.mode` resolves to on): the job of the sandbox device plugin.
    pub serves_gpus: bool,
    /// `cchost run` sets the GPUs' CC mode from the Node's `nvidia.com/cc.mode` label
    /// (`cc.manage = "label"`): the job of NVIDIA's cc-manager.
    pub manages_cc_mode: bool,
    /// The operator gave each GPU its own CC mode (`[[cc.modes]]`): GPUs in `on` and
    /// `off` side by side are the plan (a mixed node), not a failure.
    #[serde(default)]
    pub per_gpu_cc_modes: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// `None` when /proc/cpuinfo could not be read.
    pub cpu_vendor: Option<CpuVendor>,
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
    /// `/dev/kvm` exists.
    #[serde(default)]
    pub kvm_device: bool,
    #[serde(default)]
    pub virt: VirtFacts,
    #[serde(default)]
    pub sgx: SgxFacts,
    pub gpus: Vec<GpuFacts>,
    /// A CC mode the label-driven CC manager wants but has not applied to every device
    /// yet (one is in use); retried when it is free.
    #[serde(default)]
    pub cc_pending: Option<String>,
    /// What cchost does here (filled from the config by the caller; default: nothing).
    #[serde(default)]
    pub duties: Duties,
}

impl NodeFacts {
    /// A module is usable now (loaded, or built into the kernel). Names compare with
    /// `-` and `_` as equals, as the kernel does.
    pub(crate) fn module_active(&self, name: &str) -> bool {
        let n = name.replace('-', "_");
        self.modules_loaded.contains(&n) || self.modules_builtin.contains(&n)
    }
}
