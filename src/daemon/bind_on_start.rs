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
            // The devices the units hold stay refused; the others are still bound.
            Err(e) => {
                out.refused = vec![e.to_string()];
                match crate::plan::vfio::plan_all_or_each(host, &off, &inv) {
                    Ok((p, refused, failed)) => {
                        plans = p;
                        out.refused.extend(refused);
                        out.failed = failed;
                    }
                    Err(e) => {
                        out.failed.push(format!("GPU inventory: {e}"));
                        return out;
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{PciSpec, Tree};

    /// Two GPUs: one held by nvidia-persistenced, one free.
    fn host() -> Tree {
        let t = Tree::new();
        t.kernel("6.8.0-test", "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n");
        t.pci(
            &PciSpec::new("0000:3b:00.0", 0x10de, 0x2330, 0x030200)
                .driver("nvidia")
                .group(1),
        )
        .pci(&PciSpec::new("0000:5e:00.0", 0x10de, 0x2330, 0x030200).group(2))
        .nvidia_minor("0000:3b:00.0", 0)
        .process_holding(1111, "nvidia-persistenced", 3, "/dev/nvidia0");
        t
    }

    /// With `stop_nvidia_services` and no system bus: the held GPU is refused with the
    /// unit and the reason, nothing is journaled for it, and the free GPU is still tried
    /// (it fails here only because a fixture's sysfs cannot bind).
    #[test]
    fn a_stop_that_cannot_happen_refuses_the_held_gpu_and_tries_the_others() {
        let t = host();
        let mut cfg = Config::default();
        cfg.vfio.stop_nvidia_services = true;
        cfg.vfio.load_modules = false;
        let mut j = Journal::open(&t.host).unwrap();
        let out = bind_matched(&t.host, &mut j, &cfg);
        let refused = out.refused.join("\n");
        assert!(
            refused.contains("nvidia-persistenced.service") && refused.contains("no system bus"),
            "{out:?}"
        );
        assert!(
            out.failed.iter().any(|f| f.contains("vfio-pci")),
            "the free GPU was attempted: {out:?}"
        );
        assert!(
            !j.entries().iter().any(|e| e.kind == "systemd.stop"),
            "{:?}",
            j.entries()
        );
    }
}
