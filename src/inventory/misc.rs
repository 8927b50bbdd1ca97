//! The misc cgroup controller's `misc.capacity`: how many TDX KeyIDs and SEV/SEV-ES
//! ASIDs the host has in total (there is no "available" count;
//! docs/facts/cpu-tee.md#misc-capacity). Keys are matched exactly: NFD's prefix match would read
//! `sev_es` for `sev` if the lines came in another order.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::{HostError, HostRoot};

/// misc.capacity as read: the file it came from and resource -> total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiscCapacity {
    pub path: String,
    pub resources: BTreeMap<String, u64>,
}

impl MiscCapacity {
    /// Exact key lookup (`sev` never matches `sev_es`).
    pub fn get(&self, key: &str) -> Option<u64> {
        self.resources.get(key).copied()
    }
}

/// cgroup v2 first, then the v1 misc hierarchy.
pub(crate) const MISC_CAPACITY_PATHS: [&str; 2] = [
    "/sys/fs/cgroup/misc.capacity",
    "/sys/fs/cgroup/misc/misc.capacity",
];

/// Parses `key value` lines. A line that is not `key <u64>` is an error naming the file.
pub fn parse_misc_capacity(path: &Path, text: &str) -> Result<BTreeMap<String, u64>, HostError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        match (it.next(), it.next().map(str::parse::<u64>), it.next()) {
            (Some(k), Some(Ok(v)), None) => {
                out.insert(k.to_string(), v);
            }
            _ => {
                return Err(HostError::malformed(
                    path,
                    format!(
                        "line {}: expected `<resource> <count>`, got {line:?}",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The capacities and the file they came from; `Ok(None)` when neither file exists.
pub(crate) fn read_misc_capacity(host: &HostRoot) -> Result<Option<MiscCapacity>, HostError> {
    for p in MISC_CAPACITY_PATHS {
        if let Some(text) = host.read_string_opt(p)? {
            return parse_misc_capacity(Path::new(p), &text).map(|resources| {
                Some(MiscCapacity {
                    path: p.to_string(),
                    resources,
                })
            });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_keys() {
        let m = parse_misc_capacity(Path::new("/x"), "sev_es 410\nsev 99\n").unwrap();
        assert_eq!(m.get("sev"), Some(&99));
        assert_eq!(m.get("sev_es"), Some(&410));
        let m = parse_misc_capacity(Path::new("/x"), "tdx 63\n\n").unwrap();
        assert_eq!(m.get("tdx"), Some(&63));
        assert!(parse_misc_capacity(Path::new("/x"), "").unwrap().is_empty());
    }

    #[test]
    fn malformed_lines_name_the_file() {
        for t in ["tdx\n", "tdx max\n", "tdx 1 2\n", "tdx -1\n"] {
            let e = parse_misc_capacity(Path::new("/sys/fs/cgroup/misc.capacity"), t).unwrap_err();
            assert!(e.to_string().contains("misc.capacity"), "{e}");
        }
    }

    #[test]
    fn v1_path_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/fs/cgroup/misc")).unwrap();
        std::fs::write(
            dir.path().join("sys/fs/cgroup/misc/misc.capacity"),
            "sev 10\n",
        )
        .unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let m = read_misc_capacity(&host).unwrap().unwrap();
        assert_eq!(m.path, MISC_CAPACITY_PATHS[1]);
        assert_eq!(m.get("sev"), Some(10));
        assert_eq!(m.get("sev_es"), None);
        let empty = tempfile::tempdir().unwrap();
        assert!(
            read_misc_capacity(&HostRoot::new(empty.path()).unwrap())
                .unwrap()
                .is_none()
        );
    }
}
