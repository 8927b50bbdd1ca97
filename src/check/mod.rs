//! The readiness tree behind `cchost check`.
//!
//! A check is a named function from the inventory (and config) to an outcome:
//! PASS / FAIL / WARN / SKIP, a one-line message, and on FAIL/WARN a one-line remedy.
//! Checks form a tree: a child only makes sense when its parent holds, so when a parent
//! FAILs (or is SKIPped) its children are SKIPped without running (snphost style).
//!
//! Evaluation ([`evaluate`]) is separate from rendering ([`render`]), from the list of
//! checks ([`registry::CHECK_LIST`]: id, title, category, parent, inputs, remedy kinds)
//! and from the trees a profile runs ([`build_checks`]). To add a check, add its id to
//! the registry (and to docs/check-json.md, which a test holds to the registry), write
//! its function in the subtree's file and put it in the tree.

mod dcap;
mod gpu;
mod host;
mod kernel_args;
mod passthrough;
pub mod registry;
pub mod remedy;
pub mod render;
mod tee;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::host::HostRoot;
use crate::inventory::{CpuVendor, Inventory};
pub use registry::{CHECK_LIST, CheckId, CheckMeta};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub status: Status,
    pub message: String,
    /// One line: what to do. Always set on FAIL and WARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl CheckOutcome {
    pub(crate) fn pass(message: impl Into<String>) -> Self {
        CheckOutcome {
            status: Status::Pass,
            message: message.into(),
            remedy: None,
        }
    }
    pub fn fail(message: impl Into<String>, remedy: impl Into<String>) -> Self {
        CheckOutcome {
            status: Status::Fail,
            message: message.into(),
            remedy: Some(remedy.into()),
        }
    }
    pub fn warn(message: impl Into<String>, remedy: impl Into<String>) -> Self {
        CheckOutcome {
            status: Status::Warn,
            message: message.into(),
            remedy: Some(remedy.into()),
        }
    }
    /// Nothing to check here (e.g. no GPUs); the children are skipped too.
    pub fn skip(message: impl Into<String>) -> Self {
        CheckOutcome {
            status: Status::Skip,
            message: message.into(),
            remedy: None,
        }
    }
}

/// Which TEE the host is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Tdx,
    Snp,
    /// TDX on Intel, SNP on AMD.
    Auto,
}

impl Profile {
    /// The profile actually checked: `Auto` resolved from the CPU vendor (`None` when
    /// the CPU has no supported TEE or could not be read).
    pub fn resolve(self, inv: &Inventory) -> Option<Profile> {
        match self {
            Profile::Auto => match inv.cpu.as_ref().map(|c| c.vendor) {
                Some(CpuVendor::Intel) => Some(Profile::Tdx),
                Some(CpuVendor::Amd) => Some(Profile::Snp),
                _ => None,
            },
            p => Some(p),
        }
    }
}

/// What checks see.
pub struct Ctx<'a> {
    pub inv: &'a Inventory,
    pub config: &'a Config,
    /// The profile asked for, resolved (`None`: no TEE this CPU supports).
    pub profile: Option<Profile>,
    /// The DCAP chain, probed live before evaluation ([`dcap::probe`]); `None` when it
    /// was not probed (not a TDX host, `dcap.enable = off`, or no host to probe).
    pub dcap: Option<&'a crate::dcap::status::Report>,
    /// What `cchost gpu bind --all` would do on this host, planned before evaluation so
    /// the passthrough check offers that command only when it would not refuse; `None`
    /// when there is no host to plan on.
    pub bind_all: Option<&'a Result<crate::plan::vfio::Plan, crate::plan::vfio::PlanError>>,
    /// Other CDI specs on the host that define cchost's kinds ([`crate::cdi::foreign`]),
    /// read before evaluation; `None` when there is no host to read.
    pub cdi_conflicts: Option<&'a [crate::cdi::foreign::Conflict]>,
}

pub(crate) type CheckFn = Box<dyn Fn(&Ctx) -> CheckOutcome>;

/// A registered check ([`registry::CHECK_LIST`]: its id, title and metadata) with its
/// function, and the checks that only make sense when it holds.
pub struct Check {
    pub id: CheckId,
    pub run: CheckFn,
    pub children: Vec<Check>,
}

impl Check {
    pub fn new(id: CheckId, run: impl Fn(&Ctx) -> CheckOutcome + 'static) -> Self {
        Check {
            id,
            run: Box::new(run),
            children: Vec::new(),
        }
    }

    pub fn with(mut self, children: impl IntoIterator<Item = Check>) -> Self {
        self.children.extend(children);
        self
    }
}

/// An evaluated check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub title: String,
    #[serde(flatten)]
    pub outcome: CheckOutcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

/// The full tree of checks for a profile.
pub(crate) fn build_checks(ctx: &Ctx) -> Vec<Check> {
    let mut v = vec![host::cpu_and_kvm()];
    v.push(tee::tee(ctx.profile));
    v.push(host::iommu());
    v.push(host::iommu_cmdline());
    v.push(kernel_args::kernel_args());
    v.push(host::vsock());
    v.push(gpu::gpus());
    v.push(passthrough::passthrough());
    v.push(passthrough::cdi_conflicts());
    v.push(dcap::dcap_check());
    v.push(host::inventory_health());
    v
}

/// Runs checks; children of a FAIL or SKIP are SKIPped without running.
pub(crate) fn evaluate(checks: &[Check], ctx: &Ctx) -> Vec<Node> {
    checks.iter().map(|c| evaluate_one(c, ctx)).collect()
}

fn evaluate_one(c: &Check, ctx: &Ctx) -> Node {
    let outcome = (c.run)(ctx);
    let children = match outcome.status {
        Status::Pass | Status::Warn => evaluate(&c.children, ctx),
        Status::Fail | Status::Skip => c
            .children
            .iter()
            .map(|ch| skipped(ch, c.id.name()))
            .collect(),
    };
    Node {
        id: c.id.name().to_string(),
        title: c.id.title().to_string(),
        outcome,
        children,
    }
}

fn skipped(c: &Check, parent: &str) -> Node {
    Node {
        id: c.id.name().to_string(),
        title: c.id.title().to_string(),
        outcome: CheckOutcome::skip(format!("needs {parent}")),
        children: c.children.iter().map(|ch| skipped(ch, parent)).collect(),
    }
}

/// Evaluates the whole tree for an inventory (`build_checks` + `evaluate`), with the
/// host for the subtrees that need live probes (DCAP): they are gathered first ([`dcap::probe`]), then the tree is evaluated from them.
pub(crate) fn build_tree_on(
    inv: &Inventory,
    config: &Config,
    profile: Profile,
    host: Option<&HostRoot>,
) -> Vec<Node> {
    let resolved = profile.resolve(inv);
    let probed = host.and_then(|h| dcap::probe(h, inv, config, resolved));
    let bind_all = host.map(|h| {
        crate::plan::vfio::plan_bind(h, config, &inv.gpus, &crate::plan::vfio::Selection::All)
    });
    let cdi_conflicts = host.map(|h| {
        let cfg = &config.device_plugin;
        let kinds = crate::cdi::foreign::planned_kinds(cfg, &inv.gpus);
        crate::cdi::foreign::conflicts(h, &cfg.cdi_dir, &kinds, &Default::default())
    });
    let ctx = Ctx {
        inv,
        config,
        profile: resolved,
        dcap: probed.as_ref(),
        bind_all: bind_all.as_ref(),
        cdi_conflicts: cdi_conflicts.as_deref(),
    };
    evaluate(&build_checks(&ctx), &ctx)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

/// A FAIL or WARN, flattened for quick reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub title: String,
    pub status: Status,
    pub message: String,
    pub remedy: Option<String>,
}

/// What `cchost check --json` prints (docs/check-json.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `cchost.check/v1`.
    pub schema: String,
    /// The profile asked for.
    pub profile: Profile,
    /// The profile checked (`auto` resolved); `None` when no TEE applies.
    pub resolved_profile: Option<Profile>,
    /// No check failed.
    pub ready: bool,
    pub summary: Summary,
    pub checks: Vec<Node>,
    /// Every FAIL, then every WARN, in tree order.
    pub findings: Vec<Finding>,
}

pub(crate) const SCHEMA: &str = "cchost.check/v1";

impl Report {
    pub fn new(inv: &Inventory, config: &Config, profile: Profile) -> Self {
        Self::new_on(inv, config, profile, None)
    }

    /// Like [`Report::new`], with the host for subtrees that probe it live (DCAP).
    pub fn new_on(
        inv: &Inventory,
        config: &Config,
        profile: Profile,
        host: Option<&HostRoot>,
    ) -> Self {
        Self::from_nodes(
            profile,
            profile.resolve(inv),
            build_tree_on(inv, config, profile, host),
        )
    }

    pub(crate) fn from_nodes(
        profile: Profile,
        resolved: Option<Profile>,
        checks: Vec<Node>,
    ) -> Self {
        let mut summary = Summary::default();
        let mut fails = Vec::new();
        let mut warns = Vec::new();
        walk(&checks, &mut |n| {
            match n.outcome.status {
                Status::Pass => summary.pass += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Skip => summary.skip += 1,
            }
            let f = || Finding {
                id: n.id.clone(),
                title: n.title.clone(),
                status: n.outcome.status,
                message: n.outcome.message.clone(),
                remedy: n.outcome.remedy.clone(),
            };
            match n.outcome.status {
                Status::Fail => fails.push(f()),
                Status::Warn => warns.push(f()),
                _ => {}
            }
        });
        fails.extend(warns);
        Report {
            schema: SCHEMA.to_string(),
            profile,
            resolved_profile: resolved,
            ready: summary.fail == 0,
            summary,
            checks,
            findings: fails,
        }
    }

    /// Finds a node by id anywhere in the tree.
    pub fn find(&self, id: &str) -> Option<&Node> {
        fn go<'a>(nodes: &'a [Node], id: &str) -> Option<&'a Node> {
            nodes.iter().find_map(|n| {
                if n.id == id {
                    Some(n)
                } else {
                    go(&n.children, id)
                }
            })
        }
        go(&self.checks, id)
    }
}

/// Visits every node, depth first, parents before children.
pub fn walk<'a>(nodes: &'a [Node], f: &mut dyn FnMut(&'a Node)) {
    for n in nodes {
        f(n);
        walk(&n.children, f);
    }
}

#[cfg(test)]
mod tests;
