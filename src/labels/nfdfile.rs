//! The NFD local feature file: labels for nfd-worker's `local` source when there is no
//! cluster access (docs/facts/cpu-tee.md#nfd-labels): `<name>=<value>` lines in
//! /etc/kubernetes/node-feature-discovery/features.d/, `#` comments, at most 64 kB,
//! written as a dot-file and renamed (nfd-worker skips dot-files).

use std::path::{Path, PathBuf};

use super::NodeLabels;
use crate::host::{HostError, HostRoot};

/// nfd-worker refuses larger files.
pub(crate) const MAX_FILE_BYTES: usize = 64 * 1024;

const HEADER: &str =
    "# Written by cchost from the host inventory; cchost rewrites it, do not edit.\n";

/// The file's text for a label set.
pub fn render(labels: &NodeLabels) -> String {
    let mut s = String::from(HEADER);
    for (k, v) in &labels.labels {
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push('\n');
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{path}: {size} bytes is over nfd-worker's 64 kB limit for a feature file")]
    TooBig { path: String, size: usize },
    #[error(
        "{path}: this file was not written by cchost (it lacks cchost's header line); \
         leaving it as it is: remove it, or set labels.feature_file to another name"
    )]
    NotOurs { path: String },
}

/// True when `text` is a file cchost wrote (it starts with cchost's header line).
pub(crate) fn is_ours(text: &str) -> bool {
    text.starts_with(HEADER)
}

/// Keeps the file equal to the wanted labels, writing only on change.
pub(crate) struct FileLabeler {
    host: HostRoot,
    path: PathBuf,
    last: Option<String>,
}

impl FileLabeler {
    pub fn new(host: HostRoot, path: impl AsRef<Path>) -> Self {
        FileLabeler {
            host,
            path: path.as_ref().to_path_buf(),
            last: None,
        }
    }

    /// Returns whether the file was written.
    pub fn sync(&mut self, want: &NodeLabels) -> Result<bool, FileError> {
        let text = render(want);
        if text.len() > MAX_FILE_BYTES {
            return Err(FileError::TooBig {
                path: self.path.display().to_string(),
                size: text.len(),
            });
        }
        if self.last.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let on_disk = self.host.read_string_opt(&self.path)?;
        if on_disk.as_deref() != Some(text.as_str()) {
            // Another tool's file (or any host file the config was pointed at) is never
            // replaced: only one cchost wrote, recognised by its header.
            if on_disk.as_deref().is_some_and(|t| !is_ours(t)) {
                return Err(FileError::NotOurs {
                    path: self.path.display().to_string(),
                });
            }
            // An existing file keeps the mode the operator gave it.
            let mode = self.host.mode_of(&self.path).unwrap_or(0o644);
            self.host.write_atomic(&self.path, text.as_bytes(), mode)?;
            tracing::info!(path = %self.path.display(), count = want.labels.len(), "NFD feature file written");
            self.last = Some(text);
            return Ok(true);
        }
        self.last = Some(text);
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> NodeLabels {
        NodeLabels {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn writes_under_the_root_only_on_change_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let p = crate::config::LabelsConfig::default().feature_file;
        let mut f = FileLabeler::new(host.clone(), &p);
        let w = labels(&[
            ("intel.feature.node.kubernetes.io/tdx", "true"),
            ("cchost.io/tee", "tdx"),
        ]);
        assert!(f.sync(&w).unwrap());
        let local = dir
            .path()
            .join("etc/kubernetes/node-feature-discovery/features.d");
        let text = std::fs::read_to_string(local.join("cchost")).unwrap();
        assert_eq!(
            text,
            format!("{HEADER}cchost.io/tee=tdx\nintel.feature.node.kubernetes.io/tdx=true\n")
        );
        let names: Vec<_> = std::fs::read_dir(&local)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cchost"]);
        assert!(!f.sync(&w).unwrap());
        // A fresh labeler (restart) finds the file right and does not rewrite it.
        let mut g = FileLabeler::new(host, &p);
        assert!(!g.sync(&w).unwrap());
        // A removed fact drops its line.
        assert!(g.sync(&labels(&[("cchost.io/tee", "none")])).unwrap());
        let text = std::fs::read_to_string(local.join("cchost")).unwrap();
        assert!(!text.contains("intel.feature"));
    }

    #[test]
    fn a_file_cchost_did_not_write_is_never_replaced_and_a_mode_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let p = "/etc/kubernetes/node-feature-discovery/features.d/cchost";
        let local = dir.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, "vendor.example/feature=true\n").unwrap();
        let mut f = FileLabeler::new(host.clone(), p);
        let e = f.sync(&labels(&[("cchost.io/tee", "tdx")])).unwrap_err();
        assert!(matches!(e, FileError::NotOurs { .. }), "{e}");
        assert!(e.to_string().contains(p), "{e}");
        assert_eq!(
            std::fs::read_to_string(&local).unwrap(),
            "vendor.example/feature=true\n"
        );
        // cchost's own file with a mode the operator chose: rewritten, mode kept.
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&local, format!("{HEADER}cchost.io/tee=none\n")).unwrap();
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(f.sync(&labels(&[("cchost.io/tee", "tdx")])).unwrap());
        let meta = std::fs::metadata(&local).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    }

    #[test]
    fn oversize_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let big: Vec<(String, String)> = (0..2000)
            .map(|i| (format!("cchost.io/k{i}"), "x".repeat(40)))
            .collect();
        let w = NodeLabels {
            labels: big.into_iter().collect(),
            ..Default::default()
        };
        let mut f = FileLabeler::new(host, "/etc/x/features.d/cchost");
        assert!(matches!(f.sync(&w), Err(FileError::TooBig { .. })));
        assert!(!dir.path().join("etc/x/features.d/cchost").exists());
    }
}
