//! Carrying out a `gpu bind` / `gpu unbind` plan ([`crate::plan::vfio`]) through the
//! vfio actuator ([`crate::gpu::vfio`]), each move journaled before it is made.

use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::gpu::vfio::{self, BIND_KIND, BindOutcome, Binding, Observer, UnbindOutcome, VfioError};
use crate::host::HostRoot;
use crate::host::pci::PciAddress;
use crate::journal::Journal;
use crate::plan::vfio::{Plan, is_vfio_name};

/// The result for one device.
#[derive(Debug, Serialize)]
pub struct ItemResult<T> {
    pub address: PciAddress,
    #[serde(flatten)]
    pub outcome: Result<T, String>,
}

/// Carries out a bind plan, device by device. The vfio drivers are made present
/// first (before any device is touched). A device that fails is put back where it
/// was and the run stops there: devices done before it stay bound (and journaled).
pub fn apply_bind(
    host: &HostRoot,
    journal: &mut Journal,
    config: &Config,
    plan: &Plan,
    observe: Observer<'_>,
) -> Result<Vec<ItemResult<BindOutcome>>, VfioError> {
    let mut drivers = Vec::new();
    for it in &plan.items {
        let d = if it.changes {
            vfio::ensure_vfio_driver(
                host,
                &it.module,
                &it.driver_candidates,
                config.vfio.load_modules,
            )?
        } else {
            String::new()
        };
        drivers.push(d);
    }
    let timeout = Duration::from_millis(config.vfio.device_node_timeout_ms);
    // Journal entries first, one per function that moves, in plan order (so undo's
    // order does not depend on thread scheduling); then one thread per function: the
    // sysfs writes of different devices overlap (a real GPU's unbind from nvidia takes
    // long). A function that fails is put back at once; the others carry on.
    let shared = vfio::Shared::new(journal, observe);
    let fail = |address: &PciAddress, e: VfioError| {
        let mut msg = e.to_string();
        msg.push_str(&roll_back_one(host, &mut shared.journal(), address));
        msg
    };
    let begun: Vec<Result<Option<vfio::Begun>, String>> = plan
        .items
        .iter()
        .zip(&drivers)
        .map(|(it, driver)| {
            if !it.changes {
                return Ok(None);
            }
            vfio::begin_bind(&shared, host, &it.address, driver).map_err(|e| fail(&it.address, e))
        })
        .collect();
    let out = std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .items
            .iter()
            .zip(drivers)
            .zip(begun)
            .map(|((it, driver), begun)| {
                let (shared, fail) = (&shared, &fail);
                s.spawn(move || {
                    let outcome = match begun {
                        Err(msg) => Err(msg),
                        Ok(None) => Ok(BindOutcome::AlreadyBound {
                            driver: if it.changes {
                                driver
                            } else {
                                it.current.driver.clone().unwrap_or_default()
                            },
                        }),
                        Ok(Some(b)) => vfio::finish_bind(shared, host, b, timeout)
                            .map_err(|e| fail(&it.address, e)),
                    };
                    ItemResult {
                        address: it.address,
                        outcome,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    Ok(out)
}

/// Puts a device whose bind failed back on its recorded binding.
fn roll_back_one(host: &HostRoot, journal: &mut Journal, address: &PciAddress) -> String {
    let Some(entry) = journal.find(BIND_KIND, &address.to_string()).cloned() else {
        return String::new();
    };
    let original: Binding = match entry.restore_as() {
        Ok(b) => b,
        Err(e) => return format!("; could not read its journal entry: {e}"),
    };
    match vfio::restore_binding(host, address, &original) {
        Ok(()) => match journal.forget(entry.seq) {
            Ok(()) => format!("; put back on {original}"),
            Err(e) => format!("; put back on {original}, but the journal: {e}"),
        },
        Err(e) => format!("; could not put it back on {original} ({e}); `cchost undo` will retry"),
    }
}

/// Carries out an unbind plan; stops at the first failure.
pub fn apply_unbind(
    host: &HostRoot,
    journal: &mut Journal,
    plan: &Plan,
    observe: Observer<'_>,
) -> Vec<ItemResult<UnbindOutcome>> {
    let mut out = Vec::new();
    for it in &plan.items {
        let r = vfio::unbind(host, journal, &it.address, &is_vfio_name, observe);
        let failed = r.is_err();
        out.push(ItemResult {
            address: it.address,
            outcome: r.map_err(|e| e.to_string()),
        });
        if failed {
            break;
        }
    }
    out
}
