//! A ready-made journaled change: writing a whole (text) file, restoring its former
//! content or removing it. For actuators that own config files (modules-load.d,
//! modprobe.d, kernel arguments).

use serde::{Deserialize, Serialize};

use super::{Entry, Journal, JournalError, RestoreError, Restorer};
use crate::host::HostRoot;

/// The entry kind of [`write_file`].
pub const FILE_KIND: &str = "file";

/// The change: the new content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChange {
    pub path: String,
    pub contents: String,
    pub mode: u32,
}

/// How to restore: the former content, or `None` when the file did not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRestore {
    pub path: String,
    pub original: Option<String>,
    pub mode: u32,
}

/// Writes `contents` to the host file `path` (atomically), journaled. A file that
/// already has this content is left alone and nothing is journaled. Returns whether
/// it changed anything. Files cchost changed before keep their first original.
pub fn write_file(
    host: &HostRoot,
    journal: &mut Journal,
    path: &str,
    contents: &str,
    mode: u32,
) -> Result<bool, JournalError> {
    let current = match host.read_bytes(path) {
        Ok(b) => Some(
            String::from_utf8(b)
                .map_err(|_| JournalError::Host(crate::host::HostError::NotUtf8(path.into())))?,
        ),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    if current.as_deref() == Some(contents) {
        return Ok(false);
    }
    let already = journal.find(FILE_KIND, path).is_some();
    // An existing file keeps its mode; its former content goes into the journal.
    let existing_mode = host.mode_of(path);
    let mode = existing_mode.unwrap_or(mode);
    if current.is_some() && !already {
        tracing::warn!(
            path,
            "replacing a file cchost did not write; its former content is kept in the journal for `cchost undo`"
        );
    }
    let change = FileChange {
        path: path.to_string(),
        contents: contents.to_string(),
        mode,
    };
    let seq = if let Some(e) = journal.find(FILE_KIND, path) {
        // The first entry keeps the true original; it records the new content (what
        // undo expects to find, to tell an operator's later edit from cchost's own).
        let seq = e.seq;
        journal.reapplying_with(seq, &change)?;
        Some(seq)
    } else {
        let restore = FileRestore {
            path: path.to_string(),
            original: current,
            mode: existing_mode.unwrap_or(0o644),
        };
        Some(journal.begin(FILE_KIND, path, &change, &restore)?)
    };
    host.write_atomic(path, contents.as_bytes(), mode)?;
    if let Some(seq) = seq {
        journal.applied(seq)?;
    }
    Ok(true)
}

/// Restores files written by [`write_file`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FileRestorer;

impl Restorer for FileRestorer {
    fn kind(&self) -> &str {
        FILE_KIND
    }

    /// Refuses, naming the file, when the operator edited it after cchost's write in a
    /// way that cannot be kept (see [`take_back`](super::take_back)).
    fn restore(&self, host: &HostRoot, entry: &Entry) -> Result<(), RestoreError> {
        let r: FileRestore = entry.restore_as()?;
        let c: FileChange = entry.change_as()?;
        let current = match host.read_bytes(&r.path) {
            Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let edited = || {
            RestoreError::refused(format!(
                "{}: edited after cchost wrote it; undo will not overwrite those edits \
                 (nothing was changed). Put back what cchost changed by hand, or move the \
                 file away, then run `cchost undo` again",
                r.path
            ))
        };
        match (&r.original, current) {
            (None, None) => {}
            (None, Some(cur)) if cur == c.contents => host.remove_file(&r.path)?,
            (None, Some(_)) => return Err(edited()),
            (Some(text), None) => host.write_atomic(&r.path, text.as_bytes(), r.mode)?,
            (Some(text), Some(cur)) => {
                let back = super::take_back(text, &c.contents, &cur).ok_or_else(edited)?;
                host.write_atomic(&r.path, back.as_bytes(), r.mode)?;
            }
        }
        Ok(())
    }
}
