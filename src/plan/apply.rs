//! Running a plan: each action through its actuator, each host change written to the
//! journal (with what restores it) before it is made. A failed step is rolled back at
//! once where it can be; later actions do not run. cchost never reboots.

use serde::{Deserialize, Serialize};

use super::build::{Action, Plan};
use crate::host::HostRoot;
use crate::hostcfg::boot::{self, BootStep, HostTools};
use crate::journal::{self, Entry, Journal, JournalError, RestoreError, Restorer};

/// Journal kind of a boot-configuration step (change and restore: the [`BootStep`]).
pub const KARGS_KIND: &str = "kernel.args";
/// Journal kind of a module load.
pub const MODULE_KIND: &str = "kernel.module";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModuleRestore {
    module: String,
}

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
            Action::PersistModules { path, content, .. } | Action::KataDropin { path, content } => {
                let p = path.display().to_string();
                journal::write_file(journal, &p, content, 0o644)?
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

/// Undoes boot-configuration steps (`cchost undo`, recovery after a crash).
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelArgsRestorer;

impl Restorer for KernelArgsRestorer {
    fn kind(&self) -> &str {
        KARGS_KIND
    }

    fn restore(&self, host: &HostRoot, entry: &Entry) -> Result<(), RestoreError> {
        let step: BootStep = entry.restore_as()?;
        boot::undo_step(host, host, &step).map_err(|e| RestoreError::new(e.to_string()))
    }
}

/// Unloads a module cchost loaded (fails, and says so, while it is in use).
#[derive(Debug, Default, Clone, Copy)]
pub struct ModuleRestorer;

impl Restorer for ModuleRestorer {
    fn kind(&self) -> &str {
        MODULE_KIND
    }

    fn restore(&self, host: &HostRoot, entry: &Entry) -> Result<(), RestoreError> {
        let r: ModuleRestore = entry.restore_as()?;
        let out = host.run_host_tool("modprobe", &["-r", r.module.as_str()])?;
        if out.success {
            Ok(())
        } else {
            Err(RestoreError::new(format!(
                "modprobe -r {}: {}",
                r.module,
                out.stderr.trim()
            )))
        }
    }
}
