//! `/etc/qgs.conf` and the QCNL config: render from cchost's config, read back what the
//! host has, write atomically through the host door.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::DcapError;
use crate::config::{DcapConfig, QgsTransport, Secret};
use crate::host::HostRoot;

/// A config file cchost wants on the host.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct DesiredFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// True when `contents` carries a secret: never print it.
    pub secret: bool,
}

impl fmt::Debug for DesiredFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DesiredFile");
        d.field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode));
        if self.secret {
            d.field("contents", &"<redacted: holds a secret>");
        } else {
            d.field("contents", &String::from_utf8_lossy(&self.contents));
        }
        d.finish()
    }
}

/// `/etc/qgs.conf`. QGS reads only `port` and `number_threads`. For the unix socket the
/// `port` line is left out: DCAP ≤1.23 reads a missing port (or 0) as unix socket, newer
/// QGS reads *any* explicit port, even 0, as vsock — leaving it out is the only setting
/// both agree on (docs/facts/dcap.md#qgs-transport).
pub fn render_qgs_conf(cfg: &DcapConfig) -> String {
    let mut s = String::from(
        "# Written by cchost (cchost dcap configure); it later changes only a port line\n\
         # that selects the wrong transport, and `cchost undo` removes this file.\n\
         # QGS reads two keys: port and number_threads.\n",
    );
    match cfg.transport {
        QgsTransport::Unix => s.push_str(
            "# No port line: every QGS version then listens on the unix socket\n\
             # /var/run/tdx-qgs/qgs.socket (Kata: tdx_quote_generation_service_socket_port = 0).\n",
        ),
        QgsTransport::Vsock => s.push_str(&format!(
            "# vsock mode (Kata: tdx_quote_generation_service_socket_port = {0}).\nport = {0}\n",
            cfg.vsock_port
        )),
    }
    s.push_str(&format!("number_threads = {}\n", cfg.threads));
    s
}

/// The QCNL config as strict JSON (QCNL also accepts `//` comments; we write none so any
/// JSON tool can read it).
pub fn render_qcnl(cfg: &DcapConfig, api_key: Option<&Secret>) -> String {
    let p = &cfg.pccs;
    let mut m = Map::new();
    m.insert("pccs_url".into(), json!(p.url));
    m.insert("use_secure_cert".into(), json!(p.use_secure_cert));
    if let Some(c) = &p.collateral_service {
        m.insert("collateral_service".into(), json!(c));
    }
    m.insert("retry_times".into(), json!(p.retry_times));
    if let Some(d) = p.retry_delay_s {
        m.insert("retry_delay".into(), json!(d));
    }
    m.insert(
        "pck_cache_expire_hours".into(),
        json!(p.pck_cache_expire_hours),
    );
    m.insert(
        "verify_collateral_cache_expire_hours".into(),
        json!(p.verify_collateral_cache_expire_hours),
    );
    m.insert("local_cache_only".into(), json!(p.local_cache_only));
    if let Some(k) = api_key {
        m.insert(
            "custom_request_options".into(),
            json!({"get_cert": {"headers": {"Ocp-Apim-Subscription-Key": k.expose()}}}),
        );
    }
    let mut s = serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default();
    s.push('\n');
    s
}

/// Reads the PCS API key from the configured file or environment variable. The file is
/// in cchost's own filesystem (a mounted Kubernetes secret), not a host path.
pub fn load_api_key(cfg: &DcapConfig) -> Result<Option<Secret>, DcapError> {
    if let Some(path) = &cfg.pccs.api_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| DcapError::Secret {
            what: format!("dcap.pccs.api_key_file {}: {e}", path.display()),
        })?;
        let key = text.trim();
        if key.is_empty() {
            return Err(DcapError::Secret {
                what: format!("dcap.pccs.api_key_file {}: empty", path.display()),
            });
        }
        return checked_key(key, &format!("dcap.pccs.api_key_file {}", path.display()));
    }
    if let Some(var) = &cfg.pccs.api_key_env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => {
                checked_key(v.trim(), &format!("dcap.pccs.api_key_env ${var}"))
            }
            _ => Err(DcapError::Secret {
                what: format!("dcap.pccs.api_key_env: ${var} is unset or empty"),
            }),
        };
    }
    Ok(None)
}

/// A key goes into an HTTP header and a JSON string: visible ASCII only, so it cannot
/// inject a header line. The message names the source, never the value.
fn checked_key(key: &str, source: &str) -> Result<Option<Secret>, DcapError> {
    if key.len() > 512 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DcapError::Secret {
            what: format!("{source}: not a key (must be up to 512 visible ASCII characters)"),
        });
    }
    Ok(Some(Secret::new(key.to_string())))
}

/// The files `cchost dcap configure` (and `apply`) want on the host.
pub(crate) fn desired_files(cfg: &DcapConfig, api_key: Option<&Secret>) -> Vec<DesiredFile> {
    vec![
        DesiredFile {
            path: cfg.qgs_conf_path.clone(),
            contents: render_qgs_conf(cfg).into_bytes(),
            mode: 0o644,
            secret: false,
        },
        DesiredFile {
            path: cfg.qcnl_conf_path.clone(),
            contents: render_qcnl(cfg, api_key).into_bytes(),
            // With a key inside, readable by root only; QGS in child mode runs as root.
            mode: if api_key.is_some() { 0o600 } else { 0o644 },
            secret: api_key.is_some(),
        },
    ]
}

/// What `/etc/qgs.conf` on the host says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QgsConf {
    pub path: PathBuf,
    pub port: Option<u32>,
    pub number_threads: Option<u32>,
}

impl QgsConf {
    /// Parses `key = value` lines; `#` starts a comment; unknown keys are ignored (as QGS does).
    pub fn parse(path: &Path, text: &str) -> Self {
        let mut c = QgsConf {
            path: path.to_path_buf(),
            port: None,
            number_threads: None,
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().parse::<u32>().ok();
            match k.trim() {
                "port" => c.port = v,
                "number_threads" => c.number_threads = v,
                _ => {}
            }
        }
        c
    }

    /// Human summary of the transport this file selects.
    pub(crate) fn transport_summary(&self) -> String {
        match self.port {
            None => "unix socket (no port line)".into(),
            Some(0) => {
                "port = 0: unix socket on DCAP ≤1.23 but vsock on newer QGS — remove the line"
                    .into()
            }
            Some(p) => format!("vsock port {p}"),
        }
    }
}

/// What the QCNL config on the host says (only what a probe needs; secrets are skipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QcnlConf {
    pub path: PathBuf,
    pub pccs_url: Option<String>,
    pub use_secure_cert: Option<bool>,
    pub collateral_service: Option<String>,
    pub local_cache_only: Option<bool>,
    /// `legacy` (KEY=VALUE) or `json`.
    pub format: &'static str,
}

impl QcnlConf {
    pub fn parse(path: &Path, text: &str) -> Result<Self, DcapError> {
        let stripped = strip_line_comments(text);
        if stripped.trim_start().starts_with('{') {
            let v: Value = serde_json::from_str(&stripped).map_err(|e| DcapError::Malformed {
                path: path.to_path_buf(),
                what: format!("not valid JSON: {e}"),
            })?;
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            let b = |k: &str| v.get(k).and_then(Value::as_bool);
            return Ok(QcnlConf {
                path: path.to_path_buf(),
                pccs_url: s("pccs_url"),
                use_secure_cert: b("use_secure_cert"),
                collateral_service: s("collateral_service"),
                local_cache_only: b("local_cache_only"),
                format: "json",
            });
        }
        let mut kv = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                kv.insert(k.trim().to_ascii_uppercase(), v.trim().to_string());
            }
        }
        let b = |k: &str| kv.get(k).map(|v| v.eq_ignore_ascii_case("true"));
        Ok(QcnlConf {
            path: path.to_path_buf(),
            pccs_url: kv.get("PCCS_URL").cloned(),
            use_secure_cert: b("USE_SECURE_CERT"),
            collateral_service: kv.get("COLLATERAL_SERVICE").cloned(),
            local_cache_only: b("LOCAL_CACHE_ONLY"),
            format: "legacy",
        })
    }
}

/// Removes `//` comments outside JSON strings.
fn strip_line_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut escaped) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if c == '/' && chars.peek() == Some(&'/') {
            for n in chars.by_ref() {
                if n == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads the host's qgs.conf (None when absent).
pub(crate) fn read_qgs_conf(host: &HostRoot, path: &Path) -> Result<Option<QgsConf>, DcapError> {
    Ok(host
        .read_string_opt(path)?
        .map(|t| QgsConf::parse(path, &t)))
}

/// Reads the host's QCNL config (None when absent).
pub(crate) fn read_qcnl(host: &HostRoot, path: &Path) -> Result<Option<QcnlConf>, DcapError> {
    match host.read_string_opt(path)? {
        Some(t) => Ok(Some(QcnlConf::parse(path, &t)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_mode_has_no_port_line() {
        let c = DcapConfig::default();
        let s = render_qgs_conf(&c);
        let parsed = QgsConf::parse(Path::new("/etc/qgs.conf"), &s);
        assert_eq!(parsed.port, None);
        assert_eq!(parsed.number_threads, Some(4));
        let v = DcapConfig {
            transport: QgsTransport::Vsock,
            ..Default::default()
        };
        assert_eq!(
            QgsConf::parse(Path::new("q"), &render_qgs_conf(&v)).port,
            Some(4050)
        );
    }

    #[test]
    fn qcnl_is_strict_json_and_round_trips() {
        let mut c = DcapConfig::default();
        c.pccs.use_secure_cert = false;
        c.pccs.collateral_service =
            Some("https://api.trustedservices.intel.com/sgx/certification/v4/".into());
        let s = render_qcnl(&c, None);
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["use_secure_cert"], json!(false));
        assert!(v.get("custom_request_options").is_none());
        let back = QcnlConf::parse(Path::new("q"), &s).unwrap();
        assert_eq!(back.pccs_url.as_deref(), Some(c.pccs.url.as_str()));
        assert_eq!(back.use_secure_cert, Some(false));
    }

    #[test]
    fn secret_only_in_file_contents_never_in_debug() {
        let key = Secret::new("SUPERSECRET".into());
        let files = desired_files(&DcapConfig::default(), Some(&key));
        let qcnl = &files[1];
        assert!(String::from_utf8_lossy(&qcnl.contents).contains("SUPERSECRET"));
        assert_eq!(qcnl.mode, 0o600);
        assert!(!format!("{files:?}").contains("SUPERSECRET"));
    }

    #[test]
    fn reads_commented_json_and_legacy() {
        let j = "// comment\n{ \"pccs_url\": \"https://p:8081/sgx/certification/v4/\", // trailing\n \"use_secure_cert\": true }\n";
        let c = QcnlConf::parse(Path::new("q"), j).unwrap();
        assert_eq!(
            c.pccs_url.as_deref(),
            Some("https://p:8081/sgx/certification/v4/")
        );
        let l = "PCCS_URL=https://pccs-service:8042/sgx/certification/v4/\nUSE_SECURE_CERT=FALSE\n";
        let c = QcnlConf::parse(Path::new("q"), l).unwrap();
        assert_eq!(c.format, "legacy");
        assert_eq!(c.use_secure_cert, Some(false));
        let err = QcnlConf::parse(Path::new("/etc/sgx_default_qcnl.conf"), "{ broken")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/sgx_default_qcnl.conf"), "{err}");
    }

    #[test]
    fn api_key_from_file_is_checked_and_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("api-key");
        let mut cfg = DcapConfig::default();
        cfg.pccs.api_key_file = Some(f.clone());
        std::fs::write(&f, "abc123\n").unwrap();
        assert_eq!(load_api_key(&cfg).unwrap().unwrap().expose(), "abc123");
        std::fs::write(&f, "abc\r\nX-Evil: 1").unwrap();
        let err = load_api_key(&cfg).unwrap_err().to_string();
        assert!(err.contains("not a key") && !err.contains("Evil"), "{err}");
        std::fs::write(&f, "  \n").unwrap();
        assert!(
            load_api_key(&cfg)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        std::fs::remove_file(&f).unwrap();
        assert!(
            load_api_key(&cfg)
                .unwrap_err()
                .to_string()
                .contains("api_key_file")
        );
    }
}
