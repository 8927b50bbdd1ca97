//! Freeing GPUs held by NVIDIA's host daemons before a bind (`[vfio]
//! stop_nvidia_services`): the units a bind plan names are stopped through
//! [`crate::gpu::services`] (each stop journaled before it is asked for), then the plan
//! is made again so the holders are scanned afresh. A unit that will not stop, or a
//! device still held once they stopped, refuses the bind: the units this run stopped are
//! started again and their entries dropped, so nothing is left changed.

use crate::gpu::services::{self, ServiceError, Units};
use crate::host::HostError;
use crate::journal::Journal;
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

/// Starts the units again, newest first; says what it did (empty: nothing stopped).
fn start_again(journal: &mut Journal, bus: &dyn Units, stopped: &[String]) -> String {
    if stopped.is_empty() {
        return String::new();
    }
    let mut problems = Vec::new();
    for u in stopped.iter().rev() {
        if let Err(e) = services::start_again(journal, bus, u) {
            problems.push(format!("{u}: {e}"));
        }
    }
    if problems.is_empty() {
        format!("; started again: {}", stopped.join(", "))
    } else {
        format!(
            "; starting them again failed ({}): the journal keeps them for `cchost undo`",
            problems.join("; ")
        )
    }
}

#[cfg(test)]
mod tests;
