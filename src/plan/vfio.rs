//! Deciding what a `gpu bind` / `gpu unbind` moves, and refusing what is unsafe
//! (reads the host, changes nothing; `apply::vfio` carries a plan out).
//!
//! Every device is checked before any is changed: one refusal refuses the whole request
//! and nothing is touched (design rule 5). Refusals: the address does not exist or is
//! not a matched GPU/NVSwitch, the IOMMU is off (no group), the device drives the boot
//! console, its IOMMU group holds devices not being moved (unless
//! `[vfio] allow_foreign_group_members`), or a process holds it (unless the only
//! holders are NVIDIA's host daemons and `[vfio] stop_nvidia_services` lets cchost
//! stop their units first: the plan then names them in `stop_units`).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::Config;
use crate::gpu::services;
use crate::gpu::usage::{self, Holder};
use crate::gpu::vfio::{BIND_KIND, Binding};
use crate::host::pci::{PciAddress, PciDevice, device_dir};
use crate::host::{HostError, HostRoot};
use crate::inventory::gpu::read_vfio_aliases;
use crate::inventory::modalias::VfioChoice;
use crate::inventory::{GpuDevice, GpuInventory, GpuKind};
use crate::journal::Entry;

/// Which devices a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every matched GPU (and NVSwitch when `[vfio] bind_nvswitches`).
    All,
    Addresses(Vec<PciAddress>),
}

/// Why a device is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    Gpu,
    NvSwitch,
    /// Another function of a GPU's slot (HDMI audio), moved with it.
    SlotFunction {
        of: PciAddress,
    },
    /// Not matched now, but cchost bound it earlier (unbind only).
    Journaled,
}

/// One device of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub address: PciAddress,
    #[serde(flatten)]
    pub role: Role,
    pub current: Binding,
    /// The vfio module and the driver directory names it may register (bind only).
    pub module: String,
    pub driver_candidates: Vec<String>,
    /// False when the device is already where it should be.
    pub changes: bool,
}

/// One reason not to go ahead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "refusal")]
pub enum Refusal {
    NoSuchDevice {
        address: PciAddress,
    },
    Unreadable {
        address: PciAddress,
        error: String,
    },
    NotMatched {
        address: PciAddress,
        vendor: u16,
        device: u16,
        class: u32,
    },
    NoIommu {
        address: PciAddress,
    },
    BootVga {
        address: PciAddress,
    },
    ForeignGroupMembers {
        address: PciAddress,
        group: u32,
        members: Vec<String>,
    },
    InUse {
        address: PciAddress,
        holders: Vec<Holder>,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoSuchDevice { address } => {
                write!(f, "{address}: no such PCI device")
            }
            Refusal::Unreadable { address, error } => {
                write!(f, "{address}: cannot read the device: {error}")
            }
            Refusal::NotMatched {
                address,
                vendor,
                device,
                class,
            } => write!(
                f,
                "{address} ({vendor:04x}:{device:04x}, class {class:06x}) is not a GPU or NVSwitch matched by the [match] config"
            ),
            Refusal::NoIommu { address } => write!(
                f,
                "{address} has no IOMMU group: the IOMMU is off (enable VT-d/AMD-Vi in firmware; on Intel also add intel_iommu=on to the kernel command line, while the AMD IOMMU is on by default and amd_iommu=on is not a valid value)"
            ),
            Refusal::BootVga { address } => write!(
                f,
                "{address} is the boot VGA device (it drives the console); not taking it from the host"
            ),
            Refusal::ForeignGroupMembers {
                address,
                group,
                members,
            } => write!(
                f,
                "{address}: IOMMU group {group} also holds {} which would go to the VM with it; move them too, or set [vfio] allow_foreign_group_members = true",
                members.join(", ")
            ),
            Refusal::InUse { address, holders } => {
                write!(
                    f,
                    "{address} is in use: {}",
                    holders
                        .iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )?;
                let units = nvidia_daemons(holders);
                if !units.is_empty() {
                    write!(
                        f,
                        "; these are NVIDIA's host daemons of a pre-installed driver: stop them first (systemctl stop {}) and disable them if the GPUs stay on vfio, or let cchost stop them and start them again on undo (`cchost gpu bind --stop-services`, or [vfio] stop_nvidia_services = true; only when they are the only holders)",
                        units.join(" ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The systemd units of NVIDIA's host daemons among the holders (`nvidia-persistenced`
/// keeps every GPU's /dev/nvidiaN open; `nv-fabricmanager` the NVSwitches' nodes).
fn nvidia_daemons(holders: &[Holder]) -> Vec<&'static str> {
    let mut units = Vec::new();
    for unit in holders
        .iter()
        .filter_map(|h| services::unit_of_comm(&h.comm))
    {
        if !units.contains(&unit) {
            units.push(unit);
        }
    }
    units
}

/// With `[vfio] stop_nvidia_services`: the in-use refusals whose holders are all NVIDIA
/// host daemons become units to stop; the others stay refusals.
fn daemons_to_stop(refusals: Vec<Refusal>, stop: &mut Vec<String>) -> Vec<Refusal> {
    let mut left = Vec::new();
    for r in refusals {
        match &r {
            Refusal::InUse { holders, .. }
                if !holders.is_empty()
                    && holders
                        .iter()
                        .all(|h| services::unit_of_comm(&h.comm).is_some()) =>
            {
                for u in nvidia_daemons(holders) {
                    if !stop.iter().any(|s| s == u) {
                        stop.push(u.to_string());
                    }
                }
            }
            _ => left.push(r),
        }
    }
    left
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("refused, nothing was changed:\n{}", .0.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<Refusal>),
    #[error(transparent)]
    Host(#[from] HostError),
}

/// What a command will do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub items: Vec<Item>,
    /// Things allowed by config that the user should know about.
    pub warnings: Vec<String>,
    /// systemd units of NVIDIA's host daemons that hold the devices and are to be
    /// stopped before the bind (`[vfio] stop_nvidia_services`); the holders are
    /// scanned again after they stop.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_units: Vec<String>,
}

/// A driver name that is a vfio driver (`vfio-pci`, `nvgrace_gpu_vfio_pci`, ...).
pub(crate) fn is_vfio_name(d: &str) -> bool {
    d.contains("vfio")
}

/// The plans to apply, the refused devices and the unreadable ones (`address: why`).
pub(crate) type EachPlans = (Vec<Plan>, Vec<String>, Vec<String>);

/// The plans for `bind --all` when some device is refused: one plan per matched device
/// (GPUs, and NVSwitches with `vfio.bind_nvswitches`), so one device in use, the boot
/// VGA device or a foreign group member does not keep the others from being bound. The
/// refused ones come back as `address: reason` lines, the unreadable ones as errors.
pub fn plan_all_or_each(
    host: &HostRoot,
    config: &Config,
    inv: &GpuInventory,
) -> Result<EachPlans, HostError> {
    match plan_bind(host, config, inv, &Selection::All) {
        Ok(p) => return Ok((vec![p], Vec::new(), Vec::new())),
        Err(PlanError::Host(e)) => return Err(e),
        Err(PlanError::Refused(_)) => {}
    }
    let (mut plans, mut refused, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let wanted = inv
        .devices
        .iter()
        .filter(|d| d.kind == GpuKind::Gpu || config.vfio.bind_nvswitches);
    for d in wanted {
        let sel = Selection::Addresses(vec![d.address]);
        match plan_bind(host, config, inv, &sel) {
            Ok(p) => plans.push(p),
            Err(PlanError::Refused(rs)) => {
                refused.extend(rs.iter().map(|r| format!("{}: {r}", d.address)))
            }
            Err(PlanError::Host(e)) => failed.push(format!("{}: {e}", d.address)),
        }
    }
    Ok((plans, refused, failed))
}

/// Plans a bind. Reads the host, changes nothing.
pub fn plan_bind(
    host: &HostRoot,
    config: &Config,
    inv: &GpuInventory,
    sel: &Selection,
) -> Result<Plan, PlanError> {
    let mut refusals = Vec::new();
    let chosen: Vec<&GpuDevice> = match sel {
        Selection::All => inv
            .devices
            .iter()
            .filter(|d| d.kind == GpuKind::Gpu || config.vfio.bind_nvswitches)
            .collect(),
        Selection::Addresses(addrs) => {
            let mut v = Vec::new();
            for a in addrs {
                match inv.devices.iter().find(|d| d.address == *a) {
                    Some(d) => v.push(d),
                    None => refusals.push(not_matched(host, a)),
                }
            }
            v
        }
    };

    // The devices and their slot functions, GPU first, each once.
    let mut items: Vec<Item> = Vec::new();
    let mut devs: Vec<PciDevice> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut aliases = None;
    for g in &chosen {
        if !seen.insert(g.address) {
            continue;
        }
        let dev = match host.pci_device(&g.address) {
            Ok(d) => d,
            Err(e) => {
                refusals.push(Refusal::Unreadable {
                    address: g.address,
                    error: e.to_string(),
                });
                continue;
            }
        };
        let role = match g.kind {
            GpuKind::Gpu => Role::Gpu,
            GpuKind::NvSwitch => Role::NvSwitch,
        };
        items.push(item(&dev, role, &g.vfio));
        devs.push(dev);
        if g.kind != GpuKind::Gpu || !config.vfio.bind_slot_functions {
            continue;
        }
        for f in &g.slot_functions {
            if f.bridge || f.matched || !seen.insert(f.address) {
                continue;
            }
            let dev = match host.pci_device(&f.address) {
                Ok(d) => d,
                Err(e) => {
                    refusals.push(Refusal::Unreadable {
                        address: f.address,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let aliases = aliases.get_or_insert_with(|| read_vfio_aliases(host).0);
            let choice = match &dev.modalias {
                Some(m) => aliases.choose(m),
                None => VfioChoice::fallback("no modalias"),
            };
            items.push(item(&dev, Role::SlotFunction { of: g.address }, &choice));
            devs.push(dev);
        }
    }

    let moving: BTreeSet<PciAddress> = items.iter().map(|i| i.address).collect();
    let mut warnings = Vec::new();
    for (it, dev) in items.iter().zip(&devs) {
        if !it.changes {
            continue;
        }
        if dev.boot_vga == Some(true) {
            refusals.push(Refusal::BootVga {
                address: dev.address,
            });
        }
        let Some(group) = dev.iommu_group else {
            refusals.push(Refusal::NoIommu {
                address: dev.address,
            });
            continue;
        };
        let foreign = foreign_members(host, group, &moving)?;
        if !foreign.is_empty() {
            if config.vfio.allow_foreign_group_members {
                warnings.push(format!(
                    "{}: IOMMU group {group} also holds {} (left as they are: allowed by [vfio] allow_foreign_group_members)",
                    dev.address,
                    foreign.join(", ")
                ));
            } else {
                refusals.push(Refusal::ForeignGroupMembers {
                    address: dev.address,
                    group,
                    members: foreign,
                });
            }
        }
    }
    let changing: Vec<PciDevice> = items
        .iter()
        .zip(&devs)
        .filter(|(i, _)| i.changes)
        .map(|(_, d)| d.clone())
        .collect();
    let mut stop_units = Vec::new();
    let held = in_use(host, &changing)?;
    if config.vfio.stop_nvidia_services {
        refusals.extend(daemons_to_stop(held, &mut stop_units));
    } else {
        refusals.extend(held);
    }
    if !refusals.is_empty() {
        return Err(PlanError::Refused(refusals));
    }
    Ok(Plan {
        items,
        warnings,
        stop_units,
    })
}

fn item(dev: &PciDevice, role: Role, choice: &VfioChoice) -> Item {
    let candidates = choice.driver_candidates();
    let changes = !dev
        .driver
        .as_ref()
        .is_some_and(|d| candidates.iter().any(|c| c == d));
    Item {
        address: dev.address,
        role,
        current: Binding::of(dev),
        module: choice.module.clone(),
        driver_candidates: candidates,
        changes,
    }
}

/// Why an address that is not in the GPU inventory was asked for.
fn not_matched(host: &HostRoot, a: &PciAddress) -> Refusal {
    if !host.exists(device_dir(a)) {
        return Refusal::NoSuchDevice { address: *a };
    }
    match host.pci_device(a) {
        Ok(d) => Refusal::NotMatched {
            address: *a,
            vendor: d.vendor,
            device: d.device,
            class: d.class,
        },
        Err(e) => Refusal::Unreadable {
            address: *a,
            error: e.to_string(),
        },
    }
}

/// Members of `group` that are not being moved, are not PCI bridges (a GPU's own
/// upstream port often shares its group) and are not already on a vfio driver.
fn foreign_members(
    host: &HostRoot,
    group: u32,
    moving: &BTreeSet<PciAddress>,
) -> Result<Vec<String>, HostError> {
    let mut out = Vec::new();
    for m in host.iommu_group_devices(group)? {
        if moving.contains(&m) {
            continue;
        }
        match host.pci_device(&m) {
            Ok(d) if d.class_code() == 0x0604 => {}
            Ok(d) if d.driver.as_deref().is_some_and(is_vfio_name) => {}
            Ok(d) => out.push(format!(
                "{m} ({:04x}:{:04x}, {})",
                d.vendor,
                d.device,
                match &d.driver {
                    Some(drv) => format!("driver {drv}"),
                    None => "no driver".to_string(),
                }
            )),
            Err(e) => out.push(format!("{m} (unreadable: {e})")),
        }
    }
    Ok(out)
}

fn in_use(host: &HostRoot, devs: &[PciDevice]) -> Result<Vec<Refusal>, HostError> {
    if devs.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<Refusal> = Vec::new();
    for (addr, h) in usage::users_of_all(host, devs)? {
        match out.iter_mut().find_map(|r| match r {
            Refusal::InUse { address, holders } if *address == addr => Some(holders),
            _ => None,
        }) {
            Some(holders) => holders.push(h),
            None => out.push(Refusal::InUse {
                address: addr,
                holders: vec![h],
            }),
        }
    }
    Ok(out)
}

/// Plans an unbind: the selected devices (and the slot functions cchost bound with
/// them) that are on a vfio driver or journaled as bound by cchost.
pub fn plan_unbind(
    host: &HostRoot,
    entries: &[Entry],
    inv: &GpuInventory,
    sel: &Selection,
) -> Result<Plan, PlanError> {
    let mut refusals = Vec::new();
    let journaled: Vec<PciAddress> = entries
        .iter()
        .filter(|e| e.kind == BIND_KIND)
        .filter_map(|e| e.subject.parse().ok())
        .collect();
    let mut wanted: Vec<(PciAddress, Role)> = Vec::new();
    let role_of = |a: &PciAddress| match inv.devices.iter().find(|d| d.address == *a) {
        Some(d) if d.kind == GpuKind::Gpu => Role::Gpu,
        Some(_) => Role::NvSwitch,
        None => Role::Journaled,
    };
    match sel {
        Selection::All => {
            for d in &inv.devices {
                wanted.push((d.address, role_of(&d.address)));
            }
            for a in &journaled {
                wanted.push((*a, role_of(a)));
            }
        }
        Selection::Addresses(addrs) => {
            for a in addrs {
                let known = inv.devices.iter().any(|d| d.address == *a) || journaled.contains(a);
                if !known {
                    refusals.push(not_matched(host, a));
                    continue;
                }
                wanted.push((*a, role_of(a)));
                // Slot functions cchost bound along with this GPU.
                for j in &journaled {
                    if j.slot() == a.slot() && j != a {
                        wanted.push((*j, Role::SlotFunction { of: *a }));
                    }
                }
            }
        }
    }
    let mut items = Vec::new();
    let mut devs = Vec::new();
    let mut seen = BTreeSet::new();
    for (a, role) in wanted {
        if !seen.insert(a) {
            continue;
        }
        let dev = match host.pci_device(&a) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => {
                refusals.push(Refusal::NoSuchDevice { address: a });
                continue;
            }
            Err(e) => {
                refusals.push(Refusal::Unreadable {
                    address: a,
                    error: e.to_string(),
                });
                continue;
            }
        };
        let on_vfio = dev.driver.as_deref().is_some_and(is_vfio_name);
        let changes = on_vfio || journaled.contains(&a);
        if !changes {
            continue;
        }
        items.push(Item {
            address: a,
            role,
            current: Binding::of(&dev),
            module: String::new(),
            driver_candidates: Vec::new(),
            changes,
        });
        devs.push(dev);
    }
    refusals.extend(in_use(host, &devs)?);
    if !refusals.is_empty() {
        return Err(PlanError::Refused(refusals));
    }
    Ok(Plan {
        items,
        warnings: Vec::new(),
        stop_units: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
