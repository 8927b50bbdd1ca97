//! The running kernel: release, command line, the modules that matter for
//! confidential containers, and the device nodes they create.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;

use super::Problem;
use super::cmdline::Cmdline;
use super::modules::{PROC_MODULES, parse_modules_builtin, parse_proc_modules};

pub(crate) const PROC_CMDLINE: &str = "/proc/cmdline";
pub(crate) const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// Modules whose state the inventory reports.
pub(crate) const MODULES_OF_INTEREST: &[&str] = &[
    "kvm",
    "kvm_intel",
    "kvm_amd",
    "ccp",
    "vfio",
    "vfio_pci",
    "vfio_pci_core",
    "vfio_iommu_type1",
    "iommufd",
    "nvgrace_gpu_vfio_pci",
    "vhost_vsock",
    "vsock",
    "vsock_loopback",
    "nvidia",
    "nouveau",
];

/// Device nodes whose presence the inventory reports. Any kind of node counts:
/// fixture trees and captures hold empty regular files where the host has character
/// devices (a capture cannot copy a device node).
pub(crate) const DEVICE_NODES: &[&str] = &[
    "/dev/kvm",
    "/dev/vhost-vsock",
    "/dev/vsock",
    "/dev/sev",
    "/dev/iommu",
    "/dev/vfio/vfio",
    "/dev/sgx_enclave",
    "/dev/sgx_provision",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleState {
    Loaded,
    BuiltIn,
    /// /sys/module/<name> exists but /proc/modules could not be read to tell which.
    Present,
    Absent,
    /// Neither /proc/modules nor /sys/module could tell.
    Unknown,
}

impl ModuleState {
    pub(crate) fn available(self) -> bool {
        matches!(
            self,
            ModuleState::Loaded | ModuleState::BuiltIn | ModuleState::Present
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `/proc/sys/kernel/osrelease`.
    pub release: Option<String>,
    pub cmdline: Cmdline,
    /// The kernel can load modules (`/proc/modules` exists; CONFIG_MODULES).
    pub modules_supported: bool,
    /// State of each module in [`MODULES_OF_INTEREST`].
    pub modules: BTreeMap<String, ModuleState>,
    /// Presence of each node in [`DEVICE_NODES`].
    pub device_nodes: BTreeMap<String, bool>,
    /// Legacy VFIO group nodes (`/dev/vfio/<group>`).
    pub vfio_groups: Vec<String>,
    /// iommufd VFIO cdevs (`/dev/vfio/devices/vfioN`).
    pub vfio_cdevs: Vec<String>,
}

impl KernelInfo {
    pub fn module(&self, name: &str) -> ModuleState {
        self.modules
            .get(name)
            .copied()
            .unwrap_or(ModuleState::Unknown)
    }

    pub fn node(&self, path: &str) -> bool {
        self.device_nodes.get(path).copied().unwrap_or(false)
    }

    pub fn collect(host: &HostRoot, problems: &mut Vec<Problem>) -> Self {
        let release = match host.read_attr_opt(OSRELEASE) {
            Ok(Some(r)) if !r.is_empty() && !r.contains('/') => Some(r),
            Ok(Some(r)) => {
                problems.push(Problem::new(OSRELEASE, format!("unusable release {r:?}")));
                None
            }
            Ok(None) => None,
            Err(e) => {
                problems.push(e.into());
                None
            }
        };
        // Bytes, not UTF-8: the kernel's command line is a byte string.
        let cmdline = match host.read_bytes(PROC_CMDLINE) {
            Ok(t) => {
                if std::str::from_utf8(&t).is_err() {
                    problems.push(Problem::new(
                        PROC_CMDLINE,
                        "not UTF-8: split as bytes, as the kernel does; bad bytes show as U+FFFD",
                    ));
                }
                Cmdline::parse_bytes(Path::new(PROC_CMDLINE), &t).unwrap_or_else(|e| {
                    problems.push(e.into());
                    Cmdline::default()
                })
            }
            Err(e) if e.is_not_found() => {
                problems.push(Problem::new(PROC_CMDLINE, "missing"));
                Cmdline::default()
            }
            Err(e) => {
                problems.push(e.into());
                Cmdline::default()
            }
        };
        let mut modules_supported = true;
        let loaded = match host.read_string(PROC_MODULES) {
            Ok(t) => parse_proc_modules(Path::new(PROC_MODULES), &t)
                .map_err(|e| problems.push(e.into()))
                .ok(),
            // A kernel without loadable-module support (CONFIG_MODULES=n) has no
            // /proc/modules: everything it has is built in.
            Err(e) if e.is_not_found() => {
                modules_supported = false;
                Some(Default::default())
            }
            Err(e) => {
                problems.push(e.into());
                None
            }
        };
        let builtin = match &release {
            Some(r) => {
                let p = format!("/lib/modules/{r}/modules.builtin");
                match host.read_string_opt(&p) {
                    Ok(Some(t)) => parse_modules_builtin(&t),
                    Ok(None) => Default::default(),
                    Err(e) => {
                        problems.push(e.into());
                        Default::default()
                    }
                }
            }
            None => Default::default(),
        };
        let modules = MODULES_OF_INTEREST
            .iter()
            .map(|&m| {
                // /sys/module/<name> exists for loaded modules and for built-in ones
                // that have parameters, even when modules.builtin is not installed.
                let in_sysfs = host.exists(format!("/sys/module/{m}"));
                let state = match &loaded {
                    Some(l) if l.contains(m) => ModuleState::Loaded,
                    _ if builtin.contains(m) => ModuleState::BuiltIn,
                    Some(_) if in_sysfs => ModuleState::BuiltIn,
                    None if in_sysfs => ModuleState::Present,
                    Some(_) => ModuleState::Absent,
                    None => ModuleState::Unknown,
                };
                (m.to_string(), state)
            })
            .collect();
        let device_nodes = DEVICE_NODES
            .iter()
            .map(|&p| (p.to_string(), host.exists(p)))
            .collect();
        let mut list = |dir: &str| -> Vec<String> {
            host.list_dir_opt(dir).unwrap_or_else(|e| {
                problems.push(e.into());
                Vec::new()
            })
        };
        let vfio_groups = list("/dev/vfio")
            .into_iter()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with("noiommu-"))
            .collect();
        let vfio_cdevs = list("/dev/vfio/devices");
        KernelInfo {
            release,
            cmdline,
            modules_supported,
            modules,
            device_nodes,
            vfio_groups,
            vfio_cdevs,
        }
    }
}
