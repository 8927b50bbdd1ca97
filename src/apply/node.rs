//! Running a node plan ([`crate::plan::build`]): each action through its actuator, each host change written to the
//! journal (with what restores it) before it is made. A failed step is rolled back at
//! once where it can be; later actions do not run. cchost never reboots.

use serde::Serialize;

use crate::host::HostRoot;
use crate::hostcfg::boot::{self, HostTools};
use crate::hostcfg::journaled::{KARGS_KIND, MODULE_KIND, ModuleRestore};
use crate::journal::{self, Journal, JournalError};
use crate::plan::build::{Action, Plan};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{action}: {message}")]
    Step { action: String, message: String },
}

/// What one action did.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub action: String,
    pub changed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub done: Vec<Done>,
    pub reboot_required: bool,
}

/// Applies every action of the plan, in order.
pub fn apply(
    host: &HostRoot,
    tools: &dyn HostTools,
    journal: &mut Journal,
    plan: &Plan,
) -> Result<ApplyReport, ApplyError> {
    let mut done = Vec::new();
    for a in &plan.actions {
        let summary = a.summary();
        let step_err = |message: String| ApplyError::Step {
            action: summary.clone(),
            message,
        };
        let changed = match a {
            Action::KernelArgs {
                mechanism, steps, ..
            } => {
                for s in steps {
                    let seq = journal.begin(KARGS_KIND, mechanism.as_str(), s, s)?;
                    if let Err(e) = boot::run_step(host, tools, s) {
                        // Put back what this step may have half done.
                        let undo = boot::undo_step(host, tools, s);
                        match undo {
                            Ok(()) => journal.forget(seq)?,
                            Err(u) => {
                                return Err(step_err(format!(
                                    "{e}; rolling back also failed ({u}); the journal keeps the step for `cchost undo`"
                                )));
                            }
                        }
                        return Err(step_err(format!("{e} (rolled back)")));
                    }
                    journal.applied(seq)?;
                }
                true
            }
            Action::LoadModule { module, .. } => {
                let seq = journal.begin(
                    MODULE_KIND,
                    module,
                    ModuleRestore {
                        module: module.clone(),
                    },
                    ModuleRestore {
                        module: module.clone(),
                    },
                )?;
                if let Err(e) = host.modprobe(module) {
                    journal.forget(seq)?;
                    return Err(step_err(e.to_string()));
                }
                journal.applied(seq)?;
                true
            }
            Action::PersistModules { path, content, .. }
            | Action::KataDropin { path, content }
            | Action::ModprobeFile { path, content, .. } => {
                let p = path.display().to_string();
                journal::write_file(host, journal, &p, content, 0o644)?
            }
        };
        done.push(Done {
            action: summary,
            changed,
        });
    }
    Ok(ApplyReport {
        done,
        reboot_required: plan.reboot_required,
    })
}
