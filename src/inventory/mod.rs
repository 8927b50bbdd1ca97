//! What the host is: a pure model built from what [`HostRoot`](crate::host::HostRoot)
//! reads, serializable, with the evidence behind every verdict.

pub mod cmdline;
pub mod gpu;
pub mod modalias;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::HostError;

pub use gpu::{GpuDevice, GpuInventory, GpuKind, discover_gpus};

/// Something that could not be read or understood. The inventory goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The host path at fault.
    pub path: PathBuf,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Problem {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    pub fn from_host(e: &HostError) -> Self {
        Problem {
            path: e.path().map(Path::to_path_buf).unwrap_or_default(),
            message: e.to_string(),
        }
    }
}

impl From<HostError> for Problem {
    fn from(e: HostError) -> Self {
        Problem::from_host(&e)
    }
}

#[cfg(test)]
pub(crate) mod testutil;
