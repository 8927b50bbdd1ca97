//! The two GPU resources of a mixed node (`[[cc.modes]]`, docs/config.md): GPUs whose
//! configured mode is `on` keep `device_plugin.gpu_resource` (`nvidia.com/pgpu`, the
//! name NVIDIA's confidential samples request), GPUs in `off` move to
//! `device_plugin.non_cc_gpu_resource`. Kata resolves `<resource>=<ID>` in CDI
//! (docs/facts/gpu.md#kata-cdi-contract), so the resource name is also the CDI kind
//! and each kind gets its own spec file.
//!
//! The name comes from the configuration, the health from the firmware: a GPU is only
//! healthy (allocatable) while its CC mode, as last read, is the mode of its resource.
//! A confidential pod must never be handed a GPU outside CC mode, and a plain one a GPU
//! in CC mode, which its guest driver cannot use; a GPU whose mode is unread or
//! disagrees is advertised unhealthy, with the reason, until a read shows it agrees.

use std::collections::BTreeMap;

use super::facts::CcMode;
use super::passthrough::{DeviceClass, Discovery, Health, Skipped, numeric_key};
use crate::config::RequestedMode;
use crate::config::cc_modes::GpuSlot;
use crate::host::pci::PciAddress;

/// What the split needs: the configured modes, resolved on this host (or why they
/// could not be), the non-CC resource name, and the firmware's modes as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcSplit {
    pub wanted: Result<BTreeMap<PciAddress, RequestedMode>, String>,
    pub non_cc_resource: String,
    pub read: BTreeMap<PciAddress, CcMode>,
}

/// The resolver's view of the matched GPUs.
pub fn gpu_slots(inv: &super::GpuInventory) -> Vec<GpuSlot> {
    inv.gpus()
        .map(|d| GpuSlot {
            address: d.address,
            numa: d.numa_node,
            model: d.model.clone().unwrap_or_default(),
        })
        .collect()
}

/// Moves the `off` GPUs to the non-CC resource and gates every GPU's health on its
/// firmware mode. When the modes cannot be resolved on this host, no GPU is advertised
/// (each is skipped with the reason): which GPU is confidential would be a guess.
pub fn apply(scan: &mut Discovery, split: &CcSplit) {
    let mut skipped = Vec::new();
    scan.devices.retain_mut(|d| {
        if d.class != DeviceClass::Gpu {
            return true;
        }
        let wanted = match &split.wanted {
            Ok(w) => w,
            Err(e) => {
                skipped.extend(
                    d.functions
                        .iter()
                        .map(|f| Skipped::because(*f, format!("not served: {e}"))),
                );
                return false;
            }
        };
        let modes: Vec<Option<RequestedMode>> =
            d.functions.iter().map(|f| wanted.get(f).copied()).collect();
        let mode = match modes.split_first() {
            Some((Some(m), rest)) if rest.iter().all(|r| *r == Some(*m)) => *m,
            _ => {
                skipped.extend(d.functions.iter().map(|f| {
                    Skipped::because(
                        *f,
                        "its IOMMU group holds GPUs without one common mode in cc.modes",
                    )
                }));
                return false;
            }
        };
        if mode == RequestedMode::Off {
            d.resource = split.non_cc_resource.clone();
        }
        if d.health.is_healthy() {
            d.health = firmware_agrees(&d.functions, mode, &split.read, &d.resource);
        }
        true
    });
    scan.skipped.extend(skipped);
    scan.devices.sort_by(|a, b| {
        (a.resource.as_str(), numeric_key(&a.id)).cmp(&(b.resource.as_str(), numeric_key(&b.id)))
    });
}

fn firmware_agrees(
    functions: &[PciAddress],
    mode: RequestedMode,
    read: &BTreeMap<PciAddress, CcMode>,
    resource: &str,
) -> Health {
    for f in functions {
        let agrees = match (mode, read.get(f)) {
            (_, None) => {
                return Health::Unhealthy(format!(
                    "{f}: CC mode not read yet; it is served as {resource} once its \
                     firmware shows mode {}",
                    mode.as_str()
                ));
            }
            (RequestedMode::On, Some(m)) => *m == CcMode::On,
            (RequestedMode::Off, Some(m)) => *m == CcMode::Off,
            // Refused per GPU at load (CcModes::validate); never a resource's mode.
            (RequestedMode::Keep | RequestedMode::Devtools | RequestedMode::Ppcie, Some(_)) => {
                false
            }
        };
        if !agrees {
            let now = read.get(f).map(|m| m.as_str()).unwrap_or("unread");
            return Health::Unhealthy(format!(
                "{f}: firmware CC mode is {now}, but cc.modes gives it {}; not allocatable \
                 as {resource} until they agree",
                mode.as_str()
            ));
        }
    }
    Health::Healthy
}
