//! What the host is: a pure model built from what [`HostRoot`](crate::host::HostRoot)
//! reads, serializable, with the evidence behind every verdict.

pub mod cc_split;
pub mod cca;
pub mod cmdline;
pub mod cpuinfo;
pub mod facts;
mod facts_from_inventory;
pub mod gpu;
pub mod iommu;
pub mod kernel;
pub mod kernel_log;
pub mod lockdown;
pub mod misc;
pub mod modalias;
pub mod modules;
pub mod passthrough;
pub mod pci_names;
pub mod render;
pub mod sev;
pub mod tdx;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::host::{HostError, HostRoot};

pub use cca::CcaInfo;
pub use cpuinfo::{CpuInfo, CpuVendor};
pub use facts::NodeFacts;
pub use gpu::{GpuDevice, GpuInventory, GpuKind, discover_gpus};
pub use iommu::{IommuInfo, IommuMode};
pub use kernel::{KernelInfo, ModuleState};
pub use kernel_log::KernelLogInfo;
pub use sev::SevInfo;
pub use tdx::TdxInfo;
pub use verdict::{Blocker, Evidence, State, Tee, Verdict};

pub(crate) const PROC_CPUINFO: &str = "/proc/cpuinfo";

/// Everything cchost knows about the host. Pure data: two inventories of the same
/// host (live, and from a capture of it) compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// `None` when /proc/cpuinfo is unreadable (see `problems`).
    pub cpu: Option<CpuInfo>,
    pub kernel: KernelInfo,
    pub kernel_log: KernelLogInfo,
    pub tdx: TdxInfo,
    pub sev: SevInfo,
    pub cca: CcaInfo,
    pub iommu: IommuInfo,
    /// Kernel lockdown: in integrity mode user space cannot map GPU BARs.
    #[serde(default)]
    pub lockdown: lockdown::LockdownInfo,
    /// misc.capacity as read, when present.
    pub misc_capacity: Option<misc::MiscCapacity>,
    pub gpus: GpuInventory,
    /// Files that could not be read or understood; the rest is still valid.
    pub problems: Vec<Problem>,
}

impl Inventory {
    /// Reads the host. Never fails: what cannot be read becomes a [`Problem`] and the
    /// verdicts that needed it say so.
    pub fn collect(host: &HostRoot, config: &Config) -> Self {
        let mut problems = Vec::new();
        let cpu = match host.read_string(PROC_CPUINFO) {
            Ok(t) => CpuInfo::parse(Path::new(PROC_CPUINFO), &t)
                .map_err(|e| problems.push(e.into()))
                .ok(),
            Err(e) => {
                problems.push(e.into());
                None
            }
        };
        let kernel = KernelInfo::collect(host, &mut problems);
        let kernel_log = KernelLogInfo::collect(host, &mut problems);
        let lockdown = lockdown::LockdownInfo::collect(host, &kernel_log, &mut problems);
        let misc_capacity = misc::read_misc_capacity(host).unwrap_or_else(|e| {
            problems.push(e.into());
            None
        });
        let iommu = IommuInfo::collect(
            host,
            &kernel.cmdline,
            cpu.as_ref(),
            &kernel_log,
            &mut problems,
        );
        let mut param = |module: &str, name: &str| {
            modules::read_bool_param(host, module, name).unwrap_or_else(|e| {
                problems.push(e.into());
                None
            })
        };
        let tdx_param = param("kvm_intel", "tdx");
        let sev_params: BTreeMap<String, modules::ModuleParam> = sev::LEVELS
            .iter()
            .filter_map(|(p, _, _)| param("kvm_amd", p).map(|v| (p.to_string(), v)))
            .collect();
        let tdx = TdxInfo::judge(
            cpu.as_ref(),
            &kernel,
            &kernel_log,
            tdx_param.as_ref(),
            misc_capacity.as_ref(),
        );
        let sev = SevInfo::judge(&sev::SevInputs {
            cpu: cpu.as_ref(),
            kernel: &kernel,
            log: &kernel_log,
            iommu: &iommu,
            params: &sev_params,
            misc: misc_capacity.as_ref(),
        });
        let cca = CcaInfo::judge(cpu.as_ref(), &kernel_log);
        let gpus = discover_gpus(host, &config.matching);
        Inventory {
            cpu,
            kernel,
            kernel_log,
            tdx,
            sev,
            cca,
            iommu,
            lockdown,
            misc_capacity,
            gpus,
            problems,
        }
    }

    /// Every verdict of the inventory, named by its place in the JSON.
    pub fn verdicts(&self) -> [(&'static str, &Verdict); 7] {
        [
            ("tdx.verdict", &self.tdx.verdict),
            ("sev.sev", &self.sev.sev),
            ("sev.sev_es", &self.sev.sev_es),
            ("sev.snp", &self.sev.snp),
            ("cca.verdict", &self.cca.verdict),
            ("iommu.present", &self.iommu.present),
            ("iommu.enabled", &self.iommu.enabled),
        ]
    }

    /// Every verdict, to fill in what the inventory leaves to others (the remedy text,
    /// `check::remedy::annotate`); in the order of [`Inventory::verdicts`].
    pub(crate) fn verdicts_mut(&mut self) -> [&mut Verdict; 7] {
        [
            &mut self.tdx.verdict,
            &mut self.sev.sev,
            &mut self.sev.sev_es,
            &mut self.sev.snp,
            &mut self.cca.verdict,
            &mut self.iommu.present,
            &mut self.iommu.enabled,
        ]
    }
}

/// Something that could not be read or understood. The inventory goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The host path at fault.
    pub path: PathBuf,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Problem {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn from_host(e: &HostError) -> Self {
        let path = e.path().map(Path::to_path_buf).unwrap_or_default();
        // HostError's text starts with the path; the problem holds it separately.
        let full = e.to_string();
        let prefix = format!("{}: ", path.display());
        let message = full.strip_prefix(&prefix).unwrap_or(&full).to_string();
        Problem { path, message }
    }
}

impl From<HostError> for Problem {
    fn from(e: HostError) -> Self {
        Problem::from_host(&e)
    }
}

#[cfg(test)]
mod tests;
