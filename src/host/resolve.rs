//! Path resolution inside a root, the way `openat2(RESOLVE_IN_ROOT)` does it, but in
//! user space so it works on every kernel and inside seccomp-filtered containers:
//! absolute symlink targets restart at the root and `..` stops at the root.

use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use super::HostError;

/// Linux gives up after 40 links (MAXSYMLINKS); so do we.
const MAX_SYMLINKS: usize = 40;

/// Joins a host path to the root without touching the filesystem; `..` is clamped.
pub(super) fn lexical_join(root: &Path, host_path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    let depth0 = out.components().count();
    for comp in host_path.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                if out.components().count() > depth0 {
                    out.pop();
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Resolves `host_path` inside `root`. With `follow_last`, a symlink in the last
/// component is followed too. Missing components are kept as they are (so that callers
/// can create them); the error for those comes from the later open.
pub(super) fn resolve_in_root(
    root: &Path,
    host_path: &Path,
    follow_last: bool,
) -> Result<PathBuf, HostError> {
    // Work list of components still to walk, front first.
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, host_path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0usize;
    let mut missing = false;

    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        let is_last = pending.is_empty();
        let mut candidate = root.to_path_buf();
        candidate.extend(resolved.iter());
        candidate.push(&comp);
        if missing {
            resolved.push(comp);
            continue;
        }
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(HostError::SymlinkLoop(host_path.to_path_buf()));
                }
                let target = fs::read_link(&candidate).map_err(|e| HostError::io(host_path, e))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                push_components(&mut pending, &target);
            }
            Ok(_) => resolved.push(comp),
            Err(_) => {
                missing = true;
                resolved.push(comp);
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(resolved.iter());
    Ok(out)
}

/// Pushes the components of `p` onto the stack so that the first one is popped first.
fn push_components(stack: &mut Vec<OsString>, p: &Path) {
    let comps: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(c) => Some(c.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    stack.extend(comps.into_iter().rev());
}
