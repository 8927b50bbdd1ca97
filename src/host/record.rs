//! An optional record of every host path the accessors touch, for `cchost capture`:
//! run the inventory with recording on, then copy exactly those paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::HostRoot;

/// How a path was used, which decides what a capture keeps of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Only its presence or kind was asked (`exists`, `kind`): an empty stand-in will do.
    Node,
    /// A symlink's target was read (`read_link`, `link_name`).
    Link,
    /// A directory was listed: its entries' names (and kinds) matter.
    List,
    /// A file's content was read.
    Read,
}

type Log = Arc<Mutex<BTreeSet<(PathBuf, Access)>>>;

/// Shared by the clones of one recording `HostRoot`; `None` when not recording.
#[derive(Debug, Clone, Default)]
pub(super) struct Recorder(Option<Log>);

// Recording does not change which host a `HostRoot` is.
impl PartialEq for Recorder {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Recorder {}

impl HostRoot {
    /// The same host, recording every path its accessors touch from now on.
    pub fn with_recorder(&self) -> HostRoot {
        let mut h = self.clone();
        h.recorder = Recorder(Some(Arc::default()));
        h
    }

    /// The paths recorded so far, sorted (empty when not recording).
    pub fn recorded(&self) -> Vec<(PathBuf, Access)> {
        match &self.recorder.0 {
            Some(set) => match set.lock() {
                Ok(s) => s.iter().cloned().collect(),
                Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
            },
            None => Vec::new(),
        }
    }

    pub(super) fn record(&self, host_path: &Path, access: Access) {
        if let Some(set) = &self.recorder.0 {
            let p = Path::new("/").join(host_path);
            match set.lock() {
                Ok(mut s) => s.insert((p, access)),
                Err(poisoned) => poisoned.into_inner().insert((p, access)),
            };
        }
    }
}
