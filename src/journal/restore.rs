//! Putting things back: recovery of interrupted steps at start, and `cchost undo`.

use serde::Serialize;

use super::{Entry, EntryState, Journal, JournalError};
use crate::host::{HostError, HostRoot};

/// Why a restore failed (actuator-specific message).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RestoreError {
    pub message: String,
    /// True when the restorer refused before touching anything (the entry stays
    /// `applied`, not `restoring`).
    pub refused: bool,
}

impl RestoreError {
    pub fn new(msg: impl Into<String>) -> Self {
        RestoreError {
            message: msg.into(),
            refused: false,
        }
    }

    /// A refusal: nothing was changed.
    pub fn refused(msg: impl Into<String>) -> Self {
        RestoreError {
            message: msg.into(),
            refused: true,
        }
    }
}

impl From<HostError> for RestoreError {
    fn from(e: HostError) -> Self {
        RestoreError::new(e.to_string())
    }
}

/// What recovery did with an interrupted change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// The change was undone; the entry is dropped.
    RolledBack,
    /// The change was completed; the entry stays (state `applied`) for a later undo.
    Finished,
}

/// The actuator side of the journal: knows how to undo one kind of entry.
pub trait Restorer {
    /// The entry kind handled (`vfio.bind`).
    fn kind(&self) -> &str;

    /// Restores what the entry's change altered. Must be idempotent: it may run again
    /// on a restore that was interrupted, or on a change that was only half made.
    fn restore(&self, host: &HostRoot, entry: &Entry) -> Result<(), RestoreError>;

    /// Deals with a change interrupted while `applying`. The default rolls it back:
    /// the checks that allowed it may no longer hold, so redo it deliberately.
    fn recover(&self, host: &HostRoot, entry: &Entry) -> Result<Recovery, RestoreError> {
        self.restore(host, entry)?;
        Ok(Recovery::RolledBack)
    }
}

/// One entry dealt with by [`recover`] or [`undo_all`].
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub seq: u64,
    pub kind: String,
    pub subject: String,
    /// `rolled_back` / `finished` for recovery; `None` for a plain undo.
    pub recovery: Option<Recovery>,
}

fn restorer_for<'a>(
    restorers: &'a [&'a dyn Restorer],
    entry: &Entry,
) -> Result<&'a dyn Restorer, JournalError> {
    restorers
        .iter()
        .copied()
        .find(|r| r.kind() == entry.kind)
        .ok_or_else(|| JournalError::UnknownKind(entry.to_string()))
}

/// Finishes or rolls back every step an earlier run left half done (newest first).
/// Entries of kinds no restorer here knows are left alone (another command owns them).
pub fn recover(
    journal: &mut Journal,
    restorers: &[&dyn Restorer],
) -> Result<Vec<Restored>, JournalError> {
    let mut todo: Vec<Entry> = journal
        .entries()
        .iter()
        .filter(|e| e.state != EntryState::Applied)
        .filter(|e| restorers.iter().any(|r| r.kind() == e.kind))
        .cloned()
        .collect();
    todo.sort_by_key(|e| std::cmp::Reverse(e.seq));
    let mut done = Vec::new();
    for entry in todo {
        let r = restorer_for(restorers, &entry)?;
        let wrap = |source| JournalError::Restore {
            entry: entry.to_string(),
            source,
        };
        let recovery = match entry.state {
            EntryState::Applying => {
                tracing::warn!(entry = %entry, "an earlier run stopped in the middle of this change; recovering");
                let how = r.recover(journal.host(), &entry).map_err(wrap)?;
                match how {
                    Recovery::RolledBack => journal.forget(entry.seq)?,
                    Recovery::Finished => journal.applied(entry.seq)?,
                }
                how
            }
            EntryState::Restoring => {
                tracing::warn!(entry = %entry, "an earlier run stopped in the middle of a restore; finishing it");
                r.restore(journal.host(), &entry).map_err(wrap)?;
                journal.forget(entry.seq)?;
                Recovery::RolledBack
            }
            EntryState::Applied => continue,
        };
        done.push(Restored {
            seq: entry.seq,
            kind: entry.kind.clone(),
            subject: entry.subject.clone(),
            recovery: Some(recovery),
        });
    }
    Ok(done)
}

/// Reverts everything in the journal, newest first. Every entry's kind must be known
/// before anything is touched; the first failing restore stops the undo (later
/// entries may depend on it) and is reported with the entry.
pub fn undo_all(
    journal: &mut Journal,
    restorers: &[&dyn Restorer],
) -> Result<Vec<Restored>, JournalError> {
    for e in journal.entries() {
        restorer_for(restorers, e)?;
    }
    let mut done = recover(journal, restorers)?;
    let mut todo: Vec<Entry> = journal.entries().to_vec();
    todo.sort_by_key(|e| std::cmp::Reverse(e.seq));
    for entry in todo {
        let r = restorer_for(restorers, &entry)?;
        journal.restoring(entry.seq)?;
        if let Err(source) = r.restore(journal.host(), &entry) {
            if source.refused {
                // Nothing was touched: the change is still in place, as before.
                journal.applied(entry.seq)?;
            }
            return Err(JournalError::Restore {
                entry: entry.to_string(),
                source,
            });
        }
        journal.forget(entry.seq)?;
        done.push(Restored {
            seq: entry.seq,
            kind: entry.kind.clone(),
            subject: entry.subject.clone(),
            recovery: None,
        });
    }
    Ok(done)
}
