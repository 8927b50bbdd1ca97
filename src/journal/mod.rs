//! The journal: every host change cchost makes, written down *before* it is made,
//! together with what restores it.
//!
//! One JSON file, `/var/lib/cchost/journal.json` (under the host root), rewritten
//! atomically (temp file, fsync, rename) at every transition, and guarded by an
//! exclusive lock on `/var/lib/cchost/journal.lock` while a process holds it open.
//!
//! An entry is generic: a `kind` naming the actuator that understands it (`vfio.bind`,
//! `file`), a `subject` (what is changed: a PCI address, a file path), the `change`
//! about to be made and the `restore` data that undoes it (both free-form JSON owned by
//! the actuator), and a state:
//!
//! - `applying`: written before the change starts; if cchost dies now the change may be
//!   half done, and the next start hands the entry to its [`Restorer`] to finish or roll
//!   back ([`recover`]).
//! - `applied`: the change is complete; `cchost undo` will restore it.
//! - `restoring`: written before a restore starts; the next start finishes the restore.
//!
//! Entries are removed once restored (or when the change turned out to be a no-op).
//! A journal that does not parse is an error naming the file, and nothing is changed.

mod file;
mod merge;
mod restore;

pub use merge::take_back;

pub use file::{FILE_KIND, FileChange, FileRestore, FileRestorer, write_file};
pub use restore::{Recovery, RestoreError, Restored, Restorer, recover, undo_all};

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::host::{HostError, HostLock, HostRoot};

/// The journal file.
pub(crate) const JOURNAL_PATH: &str = "/var/lib/cchost/journal.json";
/// The lock that serialises cchost processes touching the journal.
pub(crate) const LOCK_PATH: &str = "/var/lib/cchost/journal.lock";

const FORMAT_VERSION: u32 = 1;

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// The change is about to start or is under way.
    Applying,
    /// The change is complete.
    Applied,
    /// The restore is about to start or is under way.
    Restoring,
}

/// One journaled change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Increasing number; undo goes from the highest down.
    pub seq: u64,
    /// Which actuator owns the entry (`vfio.bind`, `file`).
    pub kind: String,
    /// What is changed (`0000:3b:00.0`, `/etc/modules-load.d/cchost.conf`).
    pub subject: String,
    pub state: EntryState,
    /// The change about to be made (actuator-specific).
    pub change: serde_json::Value,
    /// How to restore what was there before (actuator-specific).
    pub restore: serde_json::Value,
    /// When the entry was written (seconds since the epoch).
    pub at_unix: u64,
}

impl Entry {
    /// The `restore` data decoded into the actuator's own type.
    pub fn restore_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, RestoreError> {
        serde_json::from_value(self.restore.clone()).map_err(|e| {
            RestoreError::new(format!(
                "journal entry {} ({} {}): unreadable restore data: {e}",
                self.seq, self.kind, self.subject
            ))
        })
    }

    /// The `change` data decoded into the actuator's own type.
    pub(crate) fn change_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, RestoreError> {
        serde_json::from_value(self.change.clone()).map_err(|e| {
            RestoreError::new(format!(
                "journal entry {} ({} {}): unreadable change data: {e}",
                self.seq, self.kind, self.subject
            ))
        })
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} {} {} ({:?})",
            self.seq, self.kind, self.subject, self.state
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFile {
    version: u32,
    next_seq: u64,
    entries: Vec<Entry>,
}

impl Default for JournalFile {
    fn default() -> Self {
        JournalFile {
            version: FORMAT_VERSION,
            next_seq: 1,
            entries: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: corrupt, nothing was changed ({reason}); inspect it, then move it away to start afresh", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("journal: {0}")]
    Host(#[from] HostError),
    #[error("journal: no entry #{0}")]
    NoSuchEntry(u64),
    #[error("journal entry {entry}: {source}")]
    Restore {
        entry: String,
        #[source]
        source: RestoreError,
    },
    #[error("journal entry {0}: no restorer knows the kind; nothing was changed for it")]
    UnknownKind(String),
}

/// Default for how long a command waits for another cchost process's journal lock.
pub(crate) const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Milliseconds to wait for the journal lock (set once by the CLI, `--lock-wait`).
static LOCK_WAIT_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_LOCK_WAIT.as_millis() as u64);

/// Sets how long [`Journal::open`] waits for the lock before it gives up.
pub fn set_lock_wait(wait: std::time::Duration) {
    LOCK_WAIT_MS.store(
        u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
}

fn lock_wait() -> crate::host::LockWait {
    crate::host::LockWait::Upto(std::time::Duration::from_millis(
        LOCK_WAIT_MS.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

/// The open journal. Holding it holds the lock.
#[derive(Debug)]
pub struct Journal {
    host: HostRoot,
    file: JournalFile,
    _lock: HostLock,
}

impl Journal {
    /// Opens (or starts) the journal under the host root, waiting for the lock (saying
    /// so) at most the time set with [`set_lock_wait`].
    pub fn open(host: &HostRoot) -> Result<Self, JournalError> {
        let lock = host.lock_exclusive(LOCK_PATH, lock_wait())?;
        let file = match host.read_bytes(JOURNAL_PATH) {
            Ok(bytes) => parse(&bytes).map_err(|reason| JournalError::Corrupt {
                path: host.lexical(JOURNAL_PATH),
                reason,
            })?,
            Err(e) if e.is_not_found() => JournalFile::default(),
            Err(HostError::TooLarge { path, limit }) => {
                return Err(JournalError::Corrupt {
                    path: host.lexical(path),
                    reason: format!("larger than {limit} bytes"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Journal {
            host: host.clone(),
            file,
            _lock: lock,
        })
    }

    /// Reads the journal without taking the lock (for `list`-style reports).
    pub fn peek(host: &HostRoot) -> Result<Vec<Entry>, JournalError> {
        match host.read_bytes(JOURNAL_PATH) {
            Ok(bytes) => parse(&bytes)
                .map(|f| f.entries)
                .map_err(|reason| JournalError::Corrupt {
                    path: host.lexical(JOURNAL_PATH),
                    reason,
                }),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// The journal file as a local path (for messages).
    pub fn path(&self) -> PathBuf {
        self.host.lexical(JOURNAL_PATH)
    }

    /// The host the journal lives on, for the journal's own restores. Actuators take the
    /// host as a parameter beside the journal rather than pulling it out of here.
    pub(crate) fn host(&self) -> &HostRoot {
        &self.host
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.file.entries
    }

    pub fn get(&self, seq: u64) -> Option<&Entry> {
        self.file.entries.iter().find(|e| e.seq == seq)
    }

    /// The newest entry of `kind` about `subject`.
    pub fn find(&self, kind: &str, subject: &str) -> Option<&Entry> {
        self.file
            .entries
            .iter()
            .rev()
            .find(|e| e.kind == kind && e.subject == subject)
    }

    /// Records a change that is about to be made (state `applying`) and writes the
    /// journal to disk before returning: only then may the caller make the change.
    pub fn begin(
        &mut self,
        kind: &str,
        subject: &str,
        change: impl Serialize,
        restore: impl Serialize,
    ) -> Result<u64, JournalError> {
        let to_json = |v: &dyn erased::Ser| -> Result<serde_json::Value, JournalError> {
            v.to_value().map_err(|e| JournalError::Corrupt {
                path: self.host.lexical(JOURNAL_PATH),
                reason: format!("cannot encode an entry for {kind} {subject}: {e}"),
            })
        };
        let change = to_json(&change)?;
        let restore = to_json(&restore)?;
        let seq = self.file.next_seq;
        self.file.next_seq = seq.checked_add(1).ok_or_else(|| JournalError::Corrupt {
            path: self.host.lexical(JOURNAL_PATH),
            reason: format!("next_seq {seq} leaves no room for another entry"),
        })?;
        self.file.entries.push(Entry {
            seq,
            kind: kind.to_string(),
            subject: subject.to_string(),
            state: EntryState::Applying,
            change,
            restore,
            at_unix: now(),
        });
        self.save()?;
        Ok(seq)
    }

    /// Marks an existing entry as being applied again (a change re-made after someone
    /// else undid it; the entry keeps its original `restore`).
    pub(crate) fn reapplying(&mut self, seq: u64) -> Result<(), JournalError> {
        self.set_state(seq, EntryState::Applying)
    }

    /// Like [`Journal::reapplying`], and records the new change (the `restore` stays:
    /// it holds the state before cchost's first change).
    pub(crate) fn reapplying_with(
        &mut self,
        seq: u64,
        change: impl Serialize,
    ) -> Result<(), JournalError> {
        let change = serde_json::to_value(&change).map_err(|e| JournalError::Corrupt {
            path: self.host.lexical(JOURNAL_PATH),
            reason: format!("cannot encode a change for entry #{seq}: {e}"),
        })?;
        let e = self
            .file
            .entries
            .iter_mut()
            .find(|e| e.seq == seq)
            .ok_or(JournalError::NoSuchEntry(seq))?;
        e.change = change;
        e.state = EntryState::Applying;
        self.save()
    }

    /// Marks a change complete.
    pub fn applied(&mut self, seq: u64) -> Result<(), JournalError> {
        self.set_state(seq, EntryState::Applied)
    }

    /// Marks the start of a restore (written before the restore starts).
    pub(crate) fn restoring(&mut self, seq: u64) -> Result<(), JournalError> {
        self.set_state(seq, EntryState::Restoring)
    }

    /// Drops an entry: its change was restored, or turned out to change nothing.
    pub(crate) fn forget(&mut self, seq: u64) -> Result<(), JournalError> {
        let before = self.file.entries.len();
        self.file.entries.retain(|e| e.seq != seq);
        if self.file.entries.len() == before {
            return Err(JournalError::NoSuchEntry(seq));
        }
        self.save()
    }

    fn set_state(&mut self, seq: u64, state: EntryState) -> Result<(), JournalError> {
        let e = self
            .file
            .entries
            .iter_mut()
            .find(|e| e.seq == seq)
            .ok_or(JournalError::NoSuchEntry(seq))?;
        if e.state == state {
            return Ok(());
        }
        e.state = state;
        self.save()
    }

    fn save(&self) -> Result<(), JournalError> {
        let mut text =
            serde_json::to_vec_pretty(&self.file).map_err(|e| JournalError::Corrupt {
                path: self.host.lexical(JOURNAL_PATH),
                reason: format!("cannot encode: {e}"),
            })?;
        text.push(b'\n');
        self.host.write_atomic(JOURNAL_PATH, &text, 0o600)?;
        Ok(())
    }
}

/// [`parse`] for `crate::fuzzing`.
pub(crate) fn parse_for_fuzzing(bytes: &[u8]) -> Result<(), String> {
    parse(bytes).map(|_| ())
}

fn parse(bytes: &[u8]) -> Result<JournalFile, String> {
    let file: JournalFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != FORMAT_VERSION {
        return Err(format!(
            "format version {} (this cchost reads version {FORMAT_VERSION})",
            file.version
        ));
    }
    // A sequence number that cannot be incremented would wrap to 0 on the next change
    // and leave a journal this function rejects (issue 14.4): refuse it while nothing
    // has been changed yet.
    if file.next_seq == u64::MAX {
        return Err(format!(
            "next_seq {} leaves no room for another entry",
            file.next_seq
        ));
    }
    let mut seqs = std::collections::BTreeSet::new();
    for e in &file.entries {
        if !seqs.insert(e.seq) {
            return Err(format!("entry #{} appears twice", e.seq));
        }
        if e.seq >= file.next_seq {
            return Err(format!(
                "entry #{} is not below next_seq {}",
                e.seq, file.next_seq
            ));
        }
    }
    Ok(file)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `impl Serialize` values behind a `dyn` (to share one conversion closure).
mod erased {
    pub(crate) trait Ser {
        fn to_value(&self) -> Result<serde_json::Value, serde_json::Error>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
            serde_json::to_value(self)
        }
    }
}

#[cfg(test)]
mod tests;
