//! `vfio.bind_on_start`: `cchost run` moves the matched GPUs (and NVSwitches) to their
//! vfio driver before it serves them, as NVIDIA's vfio-manager does when its DaemonSet
//! starts. The same plan, refusals and journal as `cchost gpu bind --all`. One refused
//! device (in use, the boot VGA device, a foreign group member) must not keep the others
//! from being served, so a refused plan for all is retried device by device; what is
//! still refused or fails is reported and left as it is.

use crate::apply;
use crate::config::Config;
use crate::gpu::vfio::{BindOutcome, Step};
use crate::host::HostRoot;
use crate::host::pci::PciAddress;
use crate::inventory::gpu::discover_gpus;
use crate::journal::Journal;

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
    let plans = match crate::plan::vfio::plan_all_or_each(host, config, &inv) {
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
