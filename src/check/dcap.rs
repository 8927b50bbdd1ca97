//! The DCAP subtree of `cchost check` (TDX hosts): the verdicts of `cchost dcap
//! status`, shown as check nodes.
//!
//! The probes are live (a socket, HTTPS): [`probe`] runs them once, before evaluation,
//! as the inventory is read before it; the checks then only read the report
//! ([`Ctx::dcap`]), so evaluation stays pure.

use super::{Check, CheckId, CheckOutcome, Ctx, Profile, Status};
use crate::config::{Config, DcapEnable};
use crate::dcap::status::{self, Item, Level, Report};
use crate::host::HostRoot;
use crate::inventory::Inventory;

/// Child checks and the report items each shows (an id ending in `.`: every item with
/// that prefix).
const CHILDREN: &[(CheckId, &[&str])] = &[
    (CheckId::DcapQgsConf, &["qgs.conf"]),
    (CheckId::DcapQgs, &["qgs"]),
    (CheckId::DcapQcnl, &["qcnl", "qcnl.trust"]),
    (
        CheckId::DcapPccs,
        &["pccs", "pccs.qe_identity", "pccs.tcb_info"],
    ),
    (CheckId::DcapRegistration, &["pccs.pckcert"]),
    (CheckId::DcapCollateral, &["qgs.collateral"]),
    (CheckId::DcapExpiry, &["expiry."]),
];

/// The `dcap` check with its children; SKIP unless the profile is TDX and the probes
/// ran ([`probe`]).
pub(crate) fn dcap_check() -> Check {
    let root = Check::new(CheckId::Dcap, |ctx| {
        let Some(report) = ctx.dcap else {
            return skip_reason(ctx);
        };
        let worst = report.worst();
        let msg = format!(
            "QGS {}; PCCS {}",
            report.qgs_endpoint,
            report.pccs_url.as_deref().unwrap_or("(none)")
        );
        // The children carry the verdicts; a FAIL here would skip them (the tree skips
        // the children of a failed parent), so the root at most WARNs.
        match worst {
            Level::Fail => CheckOutcome::warn(
                format!("{msg}: the chain is broken"),
                "see the failing DCAP checks below (or `cchost dcap status`)",
            ),
            Level::Warn => CheckOutcome::warn(msg, "see the DCAP warnings below"),
            _ => CheckOutcome::pass(msg),
        }
    });
    let children = CHILDREN.iter().map(|(id, items)| {
        Check::new(*id, move |ctx| {
            let Some(report) = ctx.dcap else {
                return CheckOutcome::skip("DCAP not probed");
            };
            outcome(report, items)
        })
    });
    root.with(children.collect::<Vec<_>>())
}

fn skip_reason(ctx: &Ctx) -> CheckOutcome {
    if ctx.config.dcap.enable == DcapEnable::Off {
        CheckOutcome::skip("dcap.enable = off")
    } else if ctx.profile != Some(Profile::Tdx) {
        CheckOutcome::skip("not a TDX host: no quote generation needed")
    } else if tdx_off(ctx) {
        CheckOutcome::skip(
            "TDX is not enabled here: quote generation comes after it (see the TDX checks)",
        )
    } else {
        CheckOutcome::skip("no host to probe")
    }
}

/// The inventory says TDX is off (not merely unknown).
fn tdx_off(ctx: &Ctx) -> bool {
    tdx_off_in(ctx.inv)
}

fn tdx_off_in(inv: &Inventory) -> bool {
    inv.tdx.verdict.state == crate::inventory::verdict::State::No
}

/// Runs the DCAP probes when the subtree applies (the profile is TDX and TDX is not
/// off, or `dcap.enable = on`): the input [`Ctx::dcap`] of the checks. `None`: not
/// probed (the checks then say why).
///
/// The probes are async and this is called from synchronous code that may itself run
/// inside a tokio runtime (the daemon): they run on a thread of their own with a small
/// runtime.
pub fn probe(
    host: &HostRoot,
    inv: &Inventory,
    config: &Config,
    profile: Option<Profile>,
) -> Option<Report> {
    let applies = match config.dcap.enable {
        DcapEnable::Off => false,
        DcapEnable::On => true,
        // A TDX-capable CPU with TDX off (not set up yet, or a VM) has no guests to
        // quote for: probing QGS there would report an empty chain as a PASS.
        DcapEnable::Auto => profile == Some(Profile::Tdx) && !tdx_off_in(inv),
    };
    if !applies {
        return None;
    }
    let host = host.clone();
    let cfg = config.dcap.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            // The API key is only needed to reach Intel PCS directly; a check never
            // fails for want of it.
            let key = crate::dcap::files::load_api_key(&cfg).ok().flatten();
            Some(rt.block_on(status::report(
                &host,
                &cfg,
                key,
                crate::dcap::collateral::now_unix(),
            )))
        })
        .join()
        .ok()
        .flatten()
    })
}

/// Folds the report items a child shows into one outcome (the worst wins).
fn outcome(report: &Report, ids: &[&str]) -> CheckOutcome {
    let mine: Vec<&Item> = report
        .items
        .iter()
        .filter(|i| {
            ids.iter()
                .any(|id| i.id == *id || (id.ends_with('.') && i.id.starts_with(id)))
        })
        .collect();
    let Some(worst) = mine.iter().max_by_key(|i| i.level) else {
        return CheckOutcome::skip(
            "not probed (an earlier link failed or there is nothing to check)",
        );
    };
    let message = mine
        .iter()
        .map(|i| i.summary.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let remedy = worst
        .remedy
        .clone()
        .unwrap_or_else(|| "see `cchost dcap status`".into());
    let status = match worst.level {
        Level::Fail => Status::Fail,
        Level::Warn => Status::Warn,
        Level::Skip => Status::Skip,
        Level::Pass | Level::Info => Status::Pass,
    };
    CheckOutcome {
        status,
        message,
        remedy: matches!(status, Status::Fail | Status::Warn).then_some(remedy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Node, evaluate};

    fn find<'a>(nodes: &'a [Node], id: &str) -> &'a Node {
        let mut found = None;
        super::super::walk(nodes, &mut |n| {
            if n.id == id {
                found = Some(n);
            }
        });
        found.unwrap_or_else(|| panic!("no node {id}"))
    }

    #[test]
    fn tdx_host_without_qgs_fails_with_causes_and_others_skip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/module/kvm_intel/parameters")).unwrap();
        std::fs::write(
            dir.path().join("sys/module/kvm_intel/parameters/tdx"),
            "Y\n",
        )
        .unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let mut config = Config::default();
        // A port nobody listens on (just freed), so the PCCS probe has a known answer.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        config.dcap.pccs.url = format!("https://127.0.0.1:{port}/sgx/certification/v4/");
        let inv = Inventory::collect(&host, &config);
        let probed = probe(&host, &inv, &config, Some(Profile::Tdx));
        assert!(probed.is_some(), "a TDX host is probed");
        let ctx = Ctx {
            inv: &inv,
            config: &config,
            profile: Some(Profile::Tdx),
            dcap: probed.as_ref(),
            bind_all: None,
            cdi_conflicts: None,
        };
        let nodes = evaluate(&[dcap_check()], &ctx);
        assert_eq!(nodes[0].outcome.status, Status::Warn, "{:?}", nodes[0]);
        let qgs = find(&nodes, "dcap.qgs");
        assert_eq!(qgs.outcome.status, Status::Fail);
        assert!(qgs.outcome.message.contains("no socket there"), "{qgs:?}");
        assert!(qgs.outcome.remedy.is_some());
        let pccs = find(&nodes, "dcap.pccs");
        assert!(
            pccs.outcome.message.contains("nothing listening"),
            "{pccs:?}"
        );
        // qgs.conf / qcnl missing: warnings with a remedy.
        assert_eq!(find(&nodes, "dcap.qgs_conf").outcome.status, Status::Warn);

        // Not a TDX profile: nothing probed, the whole subtree is skipped.
        assert!(probe(&host, &inv, &config, Some(Profile::Snp)).is_none());
        let ctx = Ctx {
            profile: Some(Profile::Snp),
            dcap: None,
            bind_all: None,
            cdi_conflicts: None,
            ..ctx
        };
        let nodes = evaluate(&[dcap_check()], &ctx);
        assert_eq!(nodes[0].outcome.status, Status::Skip);
        assert!(nodes[0].outcome.message.contains("not a TDX host"));
        assert!(
            nodes[0]
                .children
                .iter()
                .all(|c| c.outcome.status == Status::Skip)
        );
    }
}
