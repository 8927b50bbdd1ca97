//! Freeing GPUs held by NVIDIA's host daemons before a bind (`[vfio]
//! stop_nvidia_services`): the units a bind plan names are stopped through
//! [`crate::gpu::services`] (each stop journaled before it is asked for), then the plan
//! is made again so the holders are scanned afresh. A unit that will not stop, or a
//! device still held once they stopped, refuses the bind: the units this run stopped are
//! started again and their entries dropped, so nothing is left changed.
//!
//! After `gpu unbind`, [`start_when_released`] starts the stopped units again once no
//! device cchost bound is left on vfio: the host is then as it was before the binds.

use crate::gpu::services::{self, STOP_KIND, ServiceError, Units};
use crate::gpu::vfio::BIND_KIND;
use crate::host::HostError;
use crate::journal::{Entry, EntryState, Journal};
use crate::plan::vfio::{PlanError, Refusal};

/// Why the bind does not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum FreeError {
    #[error(
        "refused, nothing was bound: cchost could not stop {} (NVIDIA's host daemons holding the devices): {source}{restarted}",
        .units.join(", ")
    )]
    Stop {
        units: Vec<String>,
        source: Box<ServiceError>,
        restarted: String,
    },
    #[error(
        "refused, nothing was bound: the devices are still in use after stopping {}:\n{}{restarted}",
        .stopped.join(", "),
        .refusals.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n")
    )]
    StillHeld {
        stopped: Vec<String>,
        refusals: Vec<Refusal>,
        restarted: String,
    },
    #[error("{0}{1}")]
    Host(HostError, String),
}

/// Stops `units` (the running ones; the journal records which), then calls `replan`
/// with the holders gone. On any refusal the units stopped here are started again.
/// Returns the new plan and the units stopped.
pub fn free_then_replan<T>(
    journal: &mut Journal,
    bus: &dyn Units,
    units: &[String],
    replan: impl FnOnce() -> Result<T, PlanError>,
) -> Result<(T, Vec<String>), FreeError> {
    let mut stopped = Vec::new();
    for u in units {
        match services::stop_journaled(journal, bus, u) {
            Ok(true) => {
                tracing::info!(unit = %u, "stopped (it held GPUs); `cchost undo` starts it again");
                stopped.push(u.clone());
            }
            Ok(false) => {}
            Err(source) => {
                let restarted = start_again(journal, bus, &stopped);
                return Err(FreeError::Stop {
                    units: units.to_vec(),
                    source: Box::new(source),
                    restarted,
                });
            }
        }
    }
    match replan() {
        Ok(p) => Ok((p, stopped)),
        Err(PlanError::Refused(refusals)) => {
            let restarted = start_again(journal, bus, &stopped);
            Err(FreeError::StillHeld {
                stopped,
                refusals,
                restarted,
            })
        }
        Err(PlanError::Host(e)) => {
            let restarted = start_again(journal, bus, &stopped);
            Err(FreeError::Host(e, restarted))
        }
    }
}

/// What [`start_when_released`] did with the units cchost stopped for its binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUnbind {
    /// The journal records no stopped unit.
    NoneStopped,
    /// Every device cchost bound is released: these units were started again (newest
    /// stop first) and their entries dropped.
    Started(Vec<String>),
    /// Devices cchost bound are still on vfio (`bound` of them): the units stay stopped,
    /// since a daemon such as Fabric Manager expects the whole board, until the last
    /// device is released or `cchost undo` runs.
    KeptStopped { units: Vec<String>, bound: usize },
    /// Starting failed: the message says which; the journal keeps those for `cchost undo`.
    StartFailed(String),
}

/// After an unbind: once no `vfio.bind` entry is left in the journal, starts every unit
/// the journal records as stopped (the bus is called only then, so an unbind on a host
/// without systemd never touches it).
pub fn start_when_released(journal: &mut Journal, bus: &dyn Units) -> AfterUnbind {
    let (units, bound) = stopped_units(journal.entries(), &[]);
    if units.is_empty() {
        return AfterUnbind::NoneStopped;
    }
    if bound > 0 {
        return AfterUnbind::KeptStopped { units, bound };
    }
    let problems = start_each(journal, bus, &units);
    if problems.is_empty() {
        AfterUnbind::Started(units)
    } else {
        AfterUnbind::StartFailed(problems.join("; "))
    }
}

/// The units the journal records as stopped, in the order they were stopped, and how
/// many devices cchost bound stay on vfio once the devices in `released` are released
/// (`gpu unbind --dry-run` asks with the plan's devices; after an unbind, with none).
pub fn stopped_units(entries: &[Entry], released: &[String]) -> (Vec<String>, usize) {
    let mut stopped: Vec<(u64, &str)> = entries
        .iter()
        .filter(|e| e.kind == STOP_KIND && e.state == EntryState::Applied)
        .map(|e| (e.seq, e.subject.as_str()))
        .collect();
    stopped.sort();
    let bound = entries
        .iter()
        .filter(|e| e.kind == BIND_KIND && !released.contains(&e.subject))
        .count();
    (
        stopped.into_iter().map(|(_, u)| u.to_string()).collect(),
        bound,
    )
}

/// Starts the units again, newest first; says what it did (empty: nothing stopped).
fn start_again(journal: &mut Journal, bus: &dyn Units, stopped: &[String]) -> String {
    if stopped.is_empty() {
        return String::new();
    }
    let problems = start_each(journal, bus, stopped);
    if problems.is_empty() {
        format!("; started again: {}", stopped.join(", "))
    } else {
        format!(
            "; starting them again failed ({}): the journal keeps them for `cchost undo`",
            problems.join("; ")
        )
    }
}

/// Starts each unit, the last stopped first, dropping its entry; what went wrong.
fn start_each(journal: &mut Journal, bus: &dyn Units, stopped: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for u in stopped.iter().rev() {
        if let Err(e) = services::start_again(journal, bus, u) {
            problems.push(format!("{u}: {e}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests;
