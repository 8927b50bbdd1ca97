//! `cchost gpu cc query | set | ppcie`: Confidential Computing mode by hand.
//!
//! Queries map `resource0` read-only and only read registers; a runtime-suspended GPU
//! is reported as not read unless `--wake` allows waking it (a write of
//! `power/control`, put back byte for byte afterwards). `set` requires each GPU to
//! be driverless or on vfio-pci and unused, journals the state before (a `gpu.cc` entry
//! that `cchost undo` restores), stages the knobs, resets all GPUs together through
//! sysfs and verifies each one.
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde::Serialize;

use cchost::gpu::cc::device::Timing;
use cchost::gpu::cc::journaled;
use cchost::gpu::cc::live::MmioOpener;
use cchost::gpu::cc::live::{self, LiveDevice};
use cchost::gpu::cc::precheck;
use cchost::gpu::cc::switch::{self, Outcome, PpcieReport, Status, SwitchStep};
use cchost::gpu::cc::{CcDevice, CcState, Family, TargetMode};
use cchost::host::mmio::MapAccess;
use cchost::host::pci::{PciAddress, PciDevice};

use super::Global;
use super::output::outln;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read the active CC mode (register reads through a read-only mapping).
    Query(QueryArgs),
    /// Set the CC mode: stage, reset the GPUs together, verify each.
    Set(SetArgs),
    /// Protected PCIe for HGX Hopper boards (all GPUs and NVSwitches together).
    #[command(subcommand)]
    Ppcie(PpcieCommand),
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// PCI addresses (`0000:3b:00.0`); none = every CC-capable GPU.
    pub devices: Vec<String>,
    /// Every CC-capable GPU (the default for a query).
    #[arg(long, conflicts_with = "devices")]
    pub all: bool,
    /// Wake a runtime-suspended GPU to read it: writes `on` to its `power/control` and
    /// puts the old content back afterwards. Without it a suspended GPU is reported as
    /// not read, and the query writes nothing.
    #[arg(long)]
    pub wake: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    On,
    Off,
    Devtools,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    pub mode: ModeArg,
    /// PCI addresses of the GPUs to switch.
    pub devices: Vec<String>,
    /// Switch every CC-capable GPU.
    #[arg(long, conflicts_with = "devices")]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, clap::Subcommand)]
pub enum PpcieCommand {
    /// PPCIe state of every HGX Hopper GPU and NVSwitch.
    Query {
        /// Wake runtime-suspended devices to read them (see `gpu cc query --wake`).
        #[arg(long)]
        wake: bool,
        #[arg(long)]
        json: bool,
    },
    /// Turn PPCIe on or off on the whole board (all or nothing).
    Set {
        state: OnOff,
        #[arg(long)]
        json: bool,
    },
}

/// One row of a query.
#[derive(Debug, Serialize)]
struct QueryRow {
    device: String,
    family: Family,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<CcState>,
    /// `nvidia.com/cc.mode.state`-compatible value.
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Query(a) => {
            let targets = select(g, &a.devices, |f| f.is_gpu())?;
            query(g, targets, a.json, a.wake)
        }
        Command::Set(a) => {
            if a.devices.is_empty() && !a.all {
                bail!("name the GPUs to switch (PCI addresses) or pass --all");
            }
            let targets = select(g, &a.devices, |f| f.is_gpu())?;
            let mode = match a.mode {
                ModeArg::On => TargetMode::On,
                ModeArg::Off => TargetMode::Off,
                ModeArg::Devtools => TargetMode::Devtools,
            };
            set(g, targets, mode, a.json)
        }
        Command::Ppcie(PpcieCommand::Query { json, wake }) => {
            let targets = select(g, &[], Family::supports_ppcie)?;
            query(g, targets, json, wake)
        }
        Command::Ppcie(PpcieCommand::Set { state, json }) => {
            let targets = select(g, &[], Family::supports_ppcie)?;
            ppcie_set(g, targets, matches!(state, OnOff::On), json)
        }
    }
}

/// The named devices (each must be CC-capable), or every candidate the filter keeps.
fn select(
    g: &Global,
    names: &[String],
    keep: impl Fn(Family) -> bool,
) -> anyhow::Result<Vec<(PciDevice, Family)>> {
    let all = live::candidates(&g.host, &g.config.matching)
        .context("listing PCI devices")?
        .into_iter()
        .filter(|(_, f)| keep(*f))
        .collect::<Vec<_>>();
    if names.is_empty() {
        if all.is_empty() {
            bail!(
                "no CC-capable NVIDIA device found (device matching: [match] in {})",
                g.config_path.display()
            );
        }
        return Ok(all);
    }
    let mut out = Vec::new();
    for n in names {
        let addr: PciAddress = n
            .parse()
            .with_context(|| format!("{n:?}: not a PCI address"))?;
        if out
            .iter()
            .any(|(p, _): &(PciDevice, Family)| p.address == addr)
        {
            continue; // named twice: switch it once
        }
        match all.iter().find(|(p, _)| p.address == addr) {
            Some(t) => out.push(t.clone()),
            None => bail!("{addr}: not a CC-capable GPU on this host (or not matched by config)"),
        }
    }
    Ok(out)
}

/// Opens each target; `wake` = false (a query without `--wake`): a runtime-suspended
/// device is not opened (waking it is a write) but reported as not read.
fn open_all(
    g: &Global,
    targets: &[(PciDevice, Family)],
    access: MapAccess,
    wake: bool,
) -> Vec<Result<LiveDevice, String>> {
    let opener = MmioOpener::default();
    targets
        .iter()
        .map(|(p, f)| match access {
            MapAccess::ReadOnly => {
                if !wake
                    && live::runtime_suspended(&g.host, &p.address).map_err(|e| e.to_string())?
                {
                    return Err(
                        "not read: GPU is runtime-suspended (pass --wake to wake it)".to_string(),
                    );
                }
                precheck::check_unused(&g.host, p).map_err(|e| e.to_string())?;
                live::open(&g.host, p, *f, access, Timing::default()).map_err(|e| e.to_string())
            }
            MapAccess::ReadWrite => live::open_for_switch(&g.host, p, *f, &opener),
        })
        .collect()
}

/// Logs each switch step (counted across devices); the crash-test hook
/// ([`super::test_hooks`], test builds only) may kill cchost after one of them, like
/// `gpu bind`'s.
fn kill_observer() -> anyhow::Result<impl Fn(&str, SwitchStep) + Sync> {
    let kill_after = super::test_hooks::kill_after_step()?;
    let n = AtomicU32::new(0);
    Ok(move |dev: &str, step: SwitchStep| {
        let k = n.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(dev, ?step, n = k, "CC step done");
        if kill_after == Some(k) {
            super::test_hooks::kill_self(k, &format!("{dev} {step:?}"));
        }
    })
}

fn query(
    g: &Global,
    targets: Vec<(PciDevice, Family)>,
    json: bool,
    wake: bool,
) -> anyhow::Result<ExitCode> {
    let opened = open_all(g, &targets, MapAccess::ReadOnly, wake);
    let devs: Vec<&CcDevice> = opened
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|l| &l.device))
        .collect();
    let mut results = switch::parallel(&devs, |d| d.query()).into_iter();
    let rows: Vec<QueryRow> = targets
        .iter()
        .zip(&opened)
        .map(|((p, f), o)| {
            let r = match o {
                Ok(_) => results
                    .next()
                    .unwrap_or_else(|| Err(cchost::gpu::cc::CcError::Protocol("lost".into())))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            };
            QueryRow {
                device: p.address.to_string(),
                family: *f,
                label: r.as_ref().ok().map(CcState::label),
                state: r.as_ref().ok().copied(),
                error: r.err(),
            }
        })
        .collect();
    let ok = rows.iter().all(|r| r.error.is_none());
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            match (&r.state, &r.error) {
                (Some(s), _) => outln!("{}  {:<9} {s}", r.device, format!("{:?}", r.family)),
                (_, Some(e)) => {
                    outln!("{}  {:<9} error: {e}", r.device, format!("{:?}", r.family))
                }
                _ => {}
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_outcomes(outs: &[Outcome]) -> anyhow::Result<()> {
    for o in outs {
        let state = o
            .after
            .map(|s| s.to_string())
            .or_else(|| o.read_back.as_ref().map(|r| r.to_string()))
            .unwrap_or_default();
        let status = match o.status {
            Status::Unchanged => "unchanged",
            Status::Switched => "switched",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        };
        outln!("{}  {status:<9} {state}", o.device);
        if let Some(e) = &o.error {
            outln!("    {e}");
        }
    }
    Ok(())
}

/// Devices refused before anything was touched, as failed outcomes.
fn refused_outcome(p: &PciDevice, f: Family, requested: &str, why: String) -> Outcome {
    Outcome::refused(p.address.to_string(), f, requested, why)
}

fn set(
    g: &Global,
    targets: Vec<(PciDevice, Family)>,
    mode: TargetMode,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut journal = super::gpu::open_journal(g)?;
    let observe = kill_observer()?;
    let opened = open_all(g, &targets, MapAccess::ReadWrite, true);
    let devs: Vec<(&PciDevice, &CcDevice)> = opened
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|l| (&l.pci, &l.device)))
        .collect();
    let mut results = journaled::set_cc(&mut journal, &devs, mode, &observe).into_iter();
    let outs: Vec<Outcome> = targets
        .iter()
        .zip(&opened)
        .filter_map(|((p, f), o)| match o {
            Ok(_) => results.next(),
            Err(e) => Some(refused_outcome(p, *f, &mode.to_string(), e.clone())),
        })
        .collect();
    let ok = outs.iter().all(Outcome::ok);
    if json {
        outln!("{}", serde_json::to_string_pretty(&outs)?);
    } else {
        print_outcomes(&outs)?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ppcie_set(
    g: &Global,
    targets: Vec<(PciDevice, Family)>,
    on: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut journal = super::gpu::open_journal(g)?;
    let observe = kill_observer()?;
    let opened = open_all(g, &targets, MapAccess::ReadWrite, true);
    // All or nothing: one refused device stops the whole board before any change.
    let refused: Vec<String> = opened
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    if !refused.is_empty() {
        let requested = if on { "ppcie on" } else { "ppcie off" };
        let devices = targets
            .iter()
            .zip(&opened)
            .map(|((p, f), o)| match o {
                Err(e) => refused_outcome(p, *f, requested, e.clone()),
                Ok(_) => {
                    let mut out = refused_outcome(
                        p,
                        *f,
                        requested,
                        "not switched: another device of the PPCIe group was refused".into(),
                    );
                    out.status = Status::Skipped;
                    out
                }
            })
            .collect();
        let report = PpcieReport {
            requested: requested.into(),
            status: Status::Failed,
            devices,
        };
        return finish_ppcie(&report, json);
    }
    let devs: Vec<(&PciDevice, &CcDevice)> = opened
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|l| (&l.pci, &l.device)))
        .collect();
    let report = journaled::set_ppcie(&mut journal, &devs, on, &observe);
    finish_ppcie(&report, json)
}

fn finish_ppcie(report: &PpcieReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_outcomes(&report.devices)?;
        outln!("{}: {:?}", report.requested, report.status);
    }
    Ok(if report.status == Status::Failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
