//! `vfio.bind_on_start`: `cchost run` moves the matched GPUs (and NVSwitches) to their
//! vfio driver before it serves them, as NVIDIA's vfio-manager does when its DaemonSet
//! starts. The same plan, refusals and journal as `cchost gpu bind --all`. One refused
//! device (in use, the boot VGA device, a foreign group member) must not keep the others
//! from being served, so a refused plan for all is retried device by device; what is
//! still refused or fails is reported and left as it is.

use std::time::Duration;

use crate::apply;
use crate::config::Config;
use crate::gpu::services::SystemBus;
use crate::gpu::vfio::{BindOutcome, Step};
use crate::host::HostRoot;
use crate::host::pci::PciAddress;
use crate::inventory::gpu::discover_gpus;
use crate::journal::Journal;
use crate::plan::vfio::PlanError;

/// What binding at start did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StartBind {
    pub bound: Vec<String>,
    pub already: Vec<String>,
    /// Device (or plan) and why, one line each.
    pub refused: Vec<String>,
    pub failed: Vec<String>,
}

pub fn bind_matched(host: &HostRoot, journal: &mut Journal, config: &Config) -> StartBind {
    let inv = discover_gpus(host, &config.matching);
    let mut out = StartBind::default();
    let mut plans = match crate::plan::vfio::plan_all_or_each(host, config, &inv) {
        Ok((plans, refused, failed)) => {
            out.refused = refused;
            out.failed = failed;
            plans
        }
        Err(e) => {
            out.failed.push(format!("GPU inventory: {e}"));
            return out;
        }
    };
    // `[vfio] stop_nvidia_services`: the daemons holding the GPUs are stopped first and
    // the plans made again without them.
    let mut stop: Vec<String> = Vec::new();
    for u in plans.iter().flat_map(|p| &p.stop_units) {
        if !stop.contains(u) {
            stop.push(u.clone());
        }
    }
    if !stop.is_empty() {
        let mut off = config.clone();
        off.vfio.stop_nvidia_services = false;
        let bus = SystemBus::for_host(
            host,
            Duration::from_millis(config.vfio.stop_services_timeout_ms),
        );
        let again =
            || crate::plan::vfio::plan_all_or_each(host, &off, &inv).map_err(PlanError::Host);
        match apply::services::free_then_replan(journal, &bus, &stop, again) {
            Ok(((p, refused, failed), stopped)) => {
                for u in &stopped {
                    tracing::info!(unit = %u, "stopped: it held GPUs to bind");
                }
                (plans, out.refused, out.failed) = (p, refused, failed);
            }
            Err(e) => {
                out.refused.push(e.to_string());
                return out;
            }
        }
    }
    let mut quiet = |_: &PciAddress, _: Step| {};
    for plan in plans {
        match apply::vfio::apply_bind(host, journal, config, &plan, &mut quiet) {
            Ok(results) => {
                for r in results {
                    let a = r.address.to_string();
                    match r.outcome {
                        Ok(BindOutcome::Bound { .. }) if !out.bound.contains(&a) => {
                            out.bound.push(a)
                        }
                        Ok(BindOutcome::AlreadyBound { .. }) if !out.already.contains(&a) => {
                            out.already.push(a)
                        }
                        Ok(_) => {}
                        Err(e) => out.failed.push(format!("{a}: {e}")),
                    }
                }
            }
            Err(e) => out.failed.push(e.to_string()),
        }
    }
    out
}
