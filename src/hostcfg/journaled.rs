//! What the journal records for the host-configuration actuators (kernel arguments,
//! modules), and how `cchost undo` (and recovery after a crash) restores it.

use serde::{Deserialize, Serialize};

use super::boot::{self, BootStep};
use crate::host::HostRoot;
use crate::journal::{Entry, RestoreError, Restorer};

/// Journal kind of a boot-configuration step (change and restore: the [`BootStep`]).
pub(crate) const KARGS_KIND: &str = "kernel.args";
/// Journal kind of a module load.
pub(crate) const MODULE_KIND: &str = "kernel.module";

/// The change and restore record of a module load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ModuleRestore {
    pub module: String,
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
        boot::undo_step(host, host, &step).map_err(|e| match e {
            e @ boot::BootError::EditedSince { .. } => RestoreError::refused(e.to_string()),
            e => RestoreError::new(e.to_string()),
        })
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
