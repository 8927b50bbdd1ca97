//! `cchost gpu list | bind | unbind | cc`.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use cchost::apply;
use cchost::apply::services::{AfterUnbind, FreeError};
use cchost::config::Config;
use cchost::gpu::cc::device::Timing;
use cchost::gpu::cc::journaled::CcRestorer;
use cchost::gpu::cc::live::MmioOpener;
use cchost::gpu::services::{ServiceRestorer, SystemBus};
use cchost::gpu::vfio::{self, Step, VfioRestorer};
use cchost::host::pci::PciAddress;
use cchost::inventory::discover_gpus;
use cchost::journal::{self, Journal, Restorer};
use cchost::plan::vfio::{PlanError, Selection, plan_bind, plan_unbind};

use super::Global;
use super::output::outln;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// NVIDIA GPUs and NVSwitches (as matched by the config) and their state.
    List(ListArgs),
    /// Bind GPUs (with their other slot functions, and NVSwitches) to vfio.
    Bind(BindArgs),
    /// Release GPUs from vfio: back to the driver they had before cchost bound them.
    Unbind(BindArgs),
    /// Confidential Computing mode: query or set.
    #[command(subcommand)]
    Cc(super::gpu_cc::Command),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BindArgs {
    /// PCI addresses (0000:3b:00.0).
    #[arg(
        value_name = "BDF",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    devices: Vec<PciAddress>,
    /// Every matched GPU (and NVSwitch, per `[vfio] bind_nvswitches`).
    #[arg(long)]
    all: bool,
    /// Show what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// bind: when NVIDIA's host daemons (nvidia-persistenced, nvidia-fabricmanager)
    /// are the only holders, stop their systemd units first (`cchost undo` starts
    /// them again); as `[vfio] stop_nvidia_services = true` for this command.
    #[arg(long)]
    stop_services: bool,
}

impl BindArgs {
    fn selection(&self) -> Selection {
        if self.all {
            Selection::All
        } else {
            Selection::Addresses(self.devices.clone())
        }
    }
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Cc(cc) => super::gpu_cc::run(g, cc),
        Command::List(a) => list(g, a),
        Command::Bind(a) => bind(g, a),
        Command::Unbind(a) => unbind(g, a),
    }
}

static MMIO_OPENER: MmioOpener = MmioOpener {
    timing: Timing::DEFAULT,
};
static CC_RESTORER: CcRestorer<'static> = CcRestorer {
    opener: &MMIO_OPENER,
};

/// The journal restorers of the GPU steps (also used by `undo`).
pub fn restorers() -> [&'static dyn Restorer; 4] {
    [
        &VfioRestorer::BIND,
        &VfioRestorer::UNBIND,
        &CC_RESTORER,
        &ServiceRestorer::SYSTEM,
    ]
}

/// The config of a bind: `--stop-services` turns `[vfio] stop_nvidia_services` on.
fn bind_config(g: &Global, a: &BindArgs) -> Config {
    let mut c = g.config.clone();
    c.vfio.stop_nvidia_services |= a.stop_services;
    c
}

/// The same config with stopping off: once the units are down, anything still holding
/// a device refuses it.
fn without_stopping(c: &Config) -> Config {
    let mut c = c.clone();
    c.vfio.stop_nvidia_services = false;
    c
}

fn system_bus(g: &Global, c: &Config) -> SystemBus {
    SystemBus::for_host(
        &g.host,
        Duration::from_millis(c.vfio.stop_services_timeout_ms),
    )
}

fn say_stopped(stopped: &[String]) {
    for u in stopped {
        eprintln!("stopped {u} (it held the devices); `cchost undo` starts it again");
    }
}

fn refused_stop(e: FreeError, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_json(&serde_json::json!({ "refused": [e.to_string()] }))?;
    }
    eprintln!("{e}");
    Ok(ExitCode::from(1))
}

/// Opens the journal and finishes or rolls back GPU steps an earlier run left half done.
pub(super) fn open_journal(g: &Global) -> anyhow::Result<Journal> {
    let mut j = Journal::open(&g.host)?;
    for r in journal::recover(&mut j, &restorers())? {
        eprintln!(
            "recovered an interrupted step of an earlier run: {} {} ({:?})",
            r.kind,
            r.subject,
            r.recovery.map(|x| format!("{x:?}")).unwrap_or_default()
        );
    }
    Ok(j)
}

/// Logs each sysfs/journal step (counting from 1 across all devices); the crash-test
/// hook ([`super::test_hooks`], test builds only) may kill cchost after one of them.
fn step_observer() -> anyhow::Result<impl FnMut(&PciAddress, Step)> {
    let kill_after = super::test_hooks::kill_after_step()?;
    let mut n = 0u32;
    Ok(move |addr: &PciAddress, step: Step| {
        n += 1;
        tracing::debug!(%addr, ?step, n, "step done");
        if kill_after == Some(n) {
            super::test_hooks::kill_self(n, &format!("{addr} {step:?}"));
        }
    })
}

/// Says which journal entries an interrupted run left behind (read-only commands).
fn warn_pending(entries: &[journal::Entry]) {
    for e in entries
        .iter()
        .filter(|e| e.state != journal::EntryState::Applied)
    {
        eprintln!(
            "warning: journal entry {e} was left half done; the next bind/unbind/undo finishes it"
        );
    }
}

fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn refused(e: PlanError, json: bool) -> anyhow::Result<ExitCode> {
    match e {
        PlanError::Refused(r) => {
            if json {
                print_json(&serde_json::json!({ "refused": r }))?;
            }
            eprintln!("{}", PlanError::Refused(r));
            Ok(ExitCode::from(1))
        }
        PlanError::Host(h) => Err(h.into()),
    }
}

fn bind(g: &Global, a: BindArgs) -> anyhow::Result<ExitCode> {
    // A dry run reads the journal without locking or recovering: it changes nothing.
    let mut journal = if a.dry_run {
        warn_pending(&Journal::peek(&g.host)?);
        None
    } else {
        Some(open_journal(g)?)
    };
    let config = bind_config(g, &a);
    let inv = discover_gpus(&g.host, &config.matching);
    let mut plan = match plan_bind(&g.host, &config, &inv, &a.selection()) {
        Ok(p) => p,
        // `--all` binds what it can: each refused device is named, the others bound.
        Err(PlanError::Refused(_)) if matches!(a.selection(), Selection::All) => {
            return bind_each(g, &config, a, journal.as_mut(), &inv);
        }
        Err(e) => return refused(e, a.json),
    };
    if let Some(j) = journal.as_mut()
        && !plan.stop_units.is_empty()
    {
        let off = without_stopping(&config);
        let again = || {
            let inv = discover_gpus(&g.host, &off.matching);
            plan_bind(&g.host, &off, &inv, &a.selection())
        };
        match apply::services::free_then_replan(j, &system_bus(g, &config), &plan.stop_units, again)
        {
            Ok((p, stopped)) => {
                say_stopped(&stopped);
                plan = p;
            }
            // `--all` still binds the devices the units do not hold.
            Err(e) if matches!(a.selection(), Selection::All) => {
                eprintln!("{e}");
                let off = without_stopping(&config);
                return bind_each(g, &off, a, journal.as_mut(), &inv);
            }
            Err(e) => return refused_stop(e, a.json),
        }
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    if plan.items.is_empty() {
        eprintln!("no matched GPU or NVSwitch to bind");
    }
    let Some(journal) = journal.as_mut() else {
        if a.json {
            return print_json(&plan).map(|_| ExitCode::SUCCESS);
        }
        for u in &plan.stop_units {
            outln!("would stop {u} first (it holds the devices; `cchost undo` starts it again)");
        }
        for it in &plan.items {
            let what = if it.changes {
                format!(
                    "would bind to {} (now {})",
                    it.driver_candidates.first().map_or("?", String::as_str),
                    it.current
                )
            } else {
                format!("already on {}", it.current)
            };
            outln!("{} {what}", it.address);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut observe = step_observer()?;
    let results = apply::vfio::apply_bind(&g.host, journal, &config, &plan, &mut observe)?;
    let failed = results.iter().any(|r| r.outcome.is_err()) || results.len() < plan.items.len();
    if a.json {
        print_json(&results)?;
    } else {
        for r in &results {
            match &r.outcome {
                Ok(vfio::BindOutcome::AlreadyBound { driver }) => {
                    outln!("{} already on {driver}", r.address)
                }
                Ok(vfio::BindOutcome::Bound { from, driver }) => {
                    outln!("{} bound to {driver} (was {from})", r.address)
                }
                Err(e) => eprintln!("{} FAILED: {e}", r.address),
            }
        }
        for it in plan.items.iter().skip(results.len()) {
            eprintln!("{} not attempted (an earlier device failed)", it.address);
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `bind --all` with some device refused: the device-by-device plans, each refusal
/// printed, the rest bound. Exit 1 (not everything is bound).
fn bind_each(
    g: &Global,
    config: &Config,
    a: BindArgs,
    mut journal: Option<&mut Journal>,
    inv: &cchost::inventory::gpu::GpuInventory,
) -> anyhow::Result<ExitCode> {
    let (mut plans, mut refusals, mut failures) =
        cchost::plan::vfio::plan_all_or_each(&g.host, config, inv)?;
    let mut stop: Vec<String> = Vec::new();
    for u in plans.iter().flat_map(|p| &p.stop_units) {
        if !stop.contains(u) {
            stop.push(u.clone());
        }
    }
    if let Some(j) = journal.as_deref_mut()
        && !stop.is_empty()
    {
        let off = without_stopping(config);
        let again = || {
            let inv = discover_gpus(&g.host, &off.matching);
            cchost::plan::vfio::plan_all_or_each(&g.host, &off, &inv).map_err(PlanError::Host)
        };
        match apply::services::free_then_replan(j, &system_bus(g, config), &stop, again) {
            Ok(((p, r, f), stopped)) => {
                say_stopped(&stopped);
                (plans, refusals, failures) = (p, r, f);
            }
            // The devices the units hold stay refused; the others are still bound.
            Err(e) => {
                (plans, refusals, failures) =
                    cchost::plan::vfio::plan_all_or_each(&g.host, &off, inv)?;
                refusals.insert(0, e.to_string());
            }
        }
    } else {
        for u in &stop {
            println!("would stop {u} first (it holds the devices; `cchost undo` starts it again)");
        }
    }
    for r in &refusals {
        eprintln!("{r} (refused; the other devices are bound)");
    }
    for f in &failures {
        eprintln!("{f} FAILED");
    }
    let Some(journal) = journal else {
        if a.json {
            print_json(&serde_json::json!({ "plans": plans, "refused": refusals }))?;
        }
        for it in plans.iter().flat_map(|p| &p.items) {
            println!("{} would bind (now {})", it.address, it.current);
        }
        return Ok(ExitCode::from(1));
    };
    let mut observe = step_observer()?;
    let mut all = Vec::new();
    for plan in &plans {
        for w in &plan.warnings {
            eprintln!("warning: {w}");
        }
        let results = apply::vfio::apply_bind(&g.host, journal, config, plan, &mut observe)?;
        for r in &results {
            if a.json {
                continue;
            }
            match &r.outcome {
                Ok(vfio::BindOutcome::AlreadyBound { driver }) => {
                    println!("{} already on {driver}", r.address)
                }
                Ok(vfio::BindOutcome::Bound { from, driver }) => {
                    println!("{} bound to {driver} (was {from})", r.address)
                }
                Err(e) => eprintln!("{} FAILED: {e}", r.address),
            }
        }
        all.extend(results);
    }
    if a.json {
        print_json(&serde_json::json!({ "results": all, "refused": refusals }))?;
    }
    Ok(ExitCode::from(1))
}

fn unbind(g: &Global, a: BindArgs) -> anyhow::Result<ExitCode> {
    let (mut journal, entries) = if a.dry_run {
        let entries = Journal::peek(&g.host)?;
        warn_pending(&entries);
        (None, entries)
    } else {
        let j = open_journal(g)?;
        let entries = j.entries().to_vec();
        (Some(j), entries)
    };
    let inv = discover_gpus(&g.host, &g.config.matching);
    let plan = match plan_unbind(&g.host, &entries, &inv, &a.selection()) {
        Ok(p) => p,
        Err(e) => return refused(e, a.json),
    };
    let Some(journal) = journal.as_mut() else {
        if a.json {
            return print_json(&plan).map(|_| ExitCode::SUCCESS);
        }
        for u in &plan.stop_units {
            outln!("would stop {u} first (it holds the devices; `cchost undo` starts it again)");
        }
        for it in &plan.items {
            outln!("{} would be released (now {})", it.address, it.current);
        }
        let released: Vec<String> = plan.items.iter().map(|i| i.address.to_string()).collect();
        match apply::services::stopped_units(&entries, &released) {
            (units, _) if units.is_empty() => {}
            (units, 0) => outln!(
                "would start {} again (every device cchost bound is released)",
                units.join(", ")
            ),
            (units, bound) => outln!(
                "{} would stay stopped ({bound} device(s) cchost bound stay on vfio)",
                units.join(", ")
            ),
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut observe = step_observer()?;
    let results = apply::vfio::apply_unbind(&g.host, journal, &plan, &mut observe);
    let mut failed = results.iter().any(|r| r.outcome.is_err());
    if a.json {
        print_json(&results)?;
    } else {
        for r in &results {
            match &r.outcome {
                Ok(vfio::UnbindOutcome::NotBound { binding }) => {
                    outln!("{} not on vfio ({binding}); nothing to do", r.address)
                }
                Ok(vfio::UnbindOutcome::Restored { to }) => {
                    outln!("{} restored to {to}", r.address)
                }
                Ok(vfio::UnbindOutcome::Released { from }) => {
                    outln!("{} released from {from}; left without a driver", r.address)
                }
                Err(e) => eprintln!("{} FAILED: {e}", r.address),
            }
        }
    }
    // The NVIDIA daemons `gpu bind --stop-services` stopped come back with the last
    // device cchost bound (docs/gpu.md, "NVIDIA's host daemons").
    match apply::services::start_when_released(journal, &system_bus(g, &g.config)) {
        AfterUnbind::NoneStopped => {}
        AfterUnbind::Started(units) => {
            for u in units {
                eprintln!("started {u} again (every device cchost bound is released)");
            }
        }
        AfterUnbind::KeptStopped { units, bound } => eprintln!(
            "{} stay stopped: {bound} device(s) cchost bound are still on vfio (the last \
             unbind, or `cchost undo`, starts them)",
            units.join(", ")
        ),
        AfterUnbind::StartFailed(msg) => {
            eprintln!("starting the NVIDIA daemons again failed: {msg}; `cchost undo` retries");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Serialize)]
struct ListRow {
    address: PciAddress,
    kind: cchost::inventory::GpuKind,
    vendor: u16,
    device: u16,
    model: Option<String>,
    driver: Option<String>,
    iommu_group: Option<u32>,
    vfio_driver: String,
    boot_vga: bool,
    /// cchost bound it (journal entry), and what it restores to.
    bound_by_cchost: Option<String>,
}

fn list(g: &Global, a: ListArgs) -> anyhow::Result<ExitCode> {
    let inv = discover_gpus(&g.host, &g.config.matching);
    let entries = Journal::peek(&g.host)?;
    let rows: Vec<ListRow> = inv
        .devices
        .iter()
        .map(|d| ListRow {
            address: d.address,
            kind: d.kind,
            vendor: d.vendor,
            device: d.device,
            model: d.model.clone(),
            driver: d.driver.clone(),
            iommu_group: d.iommu_group.as_ref().map(|g| g.number),
            vfio_driver: d.vfio.driver.clone(),
            boot_vga: d.boot_vga,
            bound_by_cchost: entries
                .iter()
                .find(|e| e.kind == vfio::BIND_KIND && e.subject == d.address.to_string())
                .map(|e| match e.restore_as::<vfio::Binding>() {
                    Ok(b) => format!("restores to {b}"),
                    Err(err) => err.to_string(),
                }),
        })
        .collect();
    if a.json {
        print_json(&serde_json::json!({ "devices": rows, "problems": inv.problems }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<14} {:<9} {:<10} {:<14} {:<6} {:<22} MODEL",
        "ADDRESS",
        "KIND",
        "ID",
        "DRIVER",
        "GROUP",
        "CCHOST"
    );
    for r in &rows {
        outln!(
            "{:<14} {:<9} {:<10} {:<14} {:<6} {:<22} {}",
            r.address.to_string(),
            format!("{:?}", r.kind).to_lowercase(),
            format!("{:04x}:{:04x}", r.vendor, r.device),
            r.driver.as_deref().unwrap_or("-"),
            r.iommu_group.map_or("-".to_string(), |n| n.to_string()),
            r.bound_by_cchost.as_deref().unwrap_or("-"),
            r.model.as_deref().unwrap_or("")
        );
    }
    for p in &inv.problems {
        eprintln!("warning: {}: {}", p.path.display(), p.message);
    }
    for e in entries
        .iter()
        .filter(|e| e.state != journal::EntryState::Applied)
    {
        eprintln!(
            "warning: journal entry {e} was left half done; the next bind/unbind/undo finishes it"
        );
    }
    Ok(ExitCode::SUCCESS)
}
