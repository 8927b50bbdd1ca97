//! `cchost dcap configure`: what to change in qgs.conf and the QCNL file, and only that.
//!
//! The operator's files win. A missing file is written whole from cchost's config. An
//! existing file is changed only where the `dcap status` check names a fault cchost can
//! fix: in qgs.conf the `port` line that selects the wrong transport; every other line
//! (their `number_threads`, their comments) stays. An existing QCNL file holds the
//! operator's PCCS URL and API-key header: cchost leaves it whole, and a QCNL file that
//! does not parse is an error, never replaced. Writes go through the journal, so `cchost
//! undo` restores what was there.

use std::path::{Path, PathBuf};

use super::DcapError;
use super::files::{QcnlConf, QgsConf, desired_files};
use crate::config::{DcapConfig, QgsTransport, Secret};
use crate::host::HostRoot;

/// One file's outcome.
#[derive(Debug, Clone)]
pub struct FilePlan {
    pub path: PathBuf,
    /// The content now (`None`: absent).
    pub before: Option<String>,
    /// The content to write (`None`: leave the file as it is).
    pub after: Option<String>,
    pub mode: u32,
    /// True when the content carries a secret (never printed).
    pub secret: bool,
    /// Why this is done (or not).
    pub why: String,
}

impl FilePlan {
    pub fn changes(&self) -> bool {
        self.after.is_some() && self.after != self.before
    }

    /// The change as a line diff (`-` old, `+` new, two lines of context); a file
    /// holding a secret shows only which lines change count.
    pub fn diff(&self) -> String {
        let Some(after) = &self.after else {
            return String::new();
        };
        let before = self.before.as_deref().unwrap_or("");
        if self.secret {
            return format!(
                "(holds a secret: {} bytes -> {} bytes, not shown)\n",
                before.len(),
                after.len()
            );
        }
        line_diff(before, after)
    }
}

/// Works out both files.
pub fn plan(
    host: &HostRoot,
    cfg: &DcapConfig,
    api_key: Option<&Secret>,
) -> Result<Vec<FilePlan>, DcapError> {
    let desired = desired_files(cfg, api_key);
    let mut out = Vec::new();
    for d in &desired {
        let before = host.read_string_opt(&d.path)?;
        let is_qgs = d.path == cfg.qgs_conf_path;
        let (after, why) = match &before {
            None => (
                Some(String::from_utf8_lossy(&d.contents).into_owned()),
                "missing: written from cchost's config".to_string(),
            ),
            Some(text) if is_qgs => qgs_fix(&d.path, text, cfg),
            Some(text) => {
                QcnlConf::parse(&d.path, text).map_err(|e| DcapError::Malformed {
                    path: d.path.clone(),
                    what: format!(
                        "{e}; cchost does not replace an unreadable QCNL file: fix it or move it away"
                    ),
                })?;
                (
                    None,
                    "present: the operator's PCCS settings are kept as they are".to_string(),
                )
            }
        };
        out.push(FilePlan {
            path: d.path.clone(),
            before,
            after,
            mode: d.mode,
            secret: d.secret,
            why,
        });
    }
    Ok(out)
}

/// qgs.conf: only the `port` line, and only when it selects the wrong transport.
fn qgs_fix(path: &Path, text: &str, cfg: &DcapConfig) -> (Option<String>, String) {
    let now = QgsConf::parse(path, text);
    let want = match cfg.transport {
        QgsTransport::Unix => None,
        QgsTransport::Vsock => Some(cfg.vsock_port),
    };
    if now.port == want {
        return (
            None,
            "its transport matches dcap.transport: left as it is".to_string(),
        );
    }
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        let code = line.split('#').next().unwrap_or("");
        let is_port = code
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == "port");
        if !is_port {
            out.push_str(line);
        }
    }
    if let Some(p) = want {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("port = {p}\n"));
    }
    let found = now
        .port
        .map_or_else(|| "no port line".to_string(), |p| format!("port = {p}"));
    let why = match want {
        None => format!("{found} selects vsock but dcap.transport = unix: that line removed"),
        Some(w) => format!("{found} but dcap.transport = vsock on port {w}: that line set"),
    };
    (Some(out), why)
}

/// A minimal line diff (longest common subsequence; the files are a few dozen lines).
pub(crate) fn line_diff(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push_str(&format!(" {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let f = dir.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, t).unwrap();
        }
        let host = HostRoot::new(dir.path()).unwrap();
        (dir, host)
    }

    const OPERATOR_QCNL: &str = "{\n  \"pccs_url\": \"https://pccs.corp.example:8042/sgx/certification/v4/\",\n  \"use_secure_cert\": true,\n  \"custom_request_options\": {\"get_cert\": {\"headers\": {\"Ocp-Apim-Subscription-Key\": \"k\"}}}\n}\n";

    #[test]
    fn the_operators_qcnl_file_is_kept_whole() {
        let (_d, host) = host_with(&[("/etc/sgx_default_qcnl.conf", OPERATOR_QCNL)]);
        let p = plan(&host, &DcapConfig::default(), None).unwrap();
        let qcnl = p
            .iter()
            .find(|f| f.path.ends_with("sgx_default_qcnl.conf"))
            .unwrap();
        assert!(!qcnl.changes(), "{qcnl:?}");
        assert!(qcnl.why.contains("kept"), "{}", qcnl.why);
    }

    #[test]
    fn only_the_wrong_port_line_of_qgs_conf_changes() {
        let text = "# site settings\nport = 0\nnumber_threads = 8\n";
        let (_d, host) = host_with(&[("/etc/qgs.conf", text)]);
        let p = plan(&host, &DcapConfig::default(), None).unwrap();
        let qgs = &p[0];
        assert_eq!(
            qgs.after.as_deref(),
            Some("# site settings\nnumber_threads = 8\n")
        );
        assert_eq!(
            qgs.diff(),
            " # site settings\n-port = 0\n number_threads = 8\n"
        );
        let ok = "number_threads = 2\n";
        let (_d, host) = host_with(&[("/etc/qgs.conf", ok)]);
        assert!(!plan(&host, &DcapConfig::default(), None).unwrap()[0].changes());
    }

    #[test]
    fn an_unreadable_qcnl_file_is_an_error_not_replaced() {
        let (_d, host) = host_with(&[("/etc/sgx_default_qcnl.conf", "{ broken")]);
        let e = plan(&host, &DcapConfig::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/sgx_default_qcnl.conf") && e.contains("move it away"),
            "{e}"
        );
    }
}
