//! `[dcap]`: Intel DCAP helpers on TDX hosts (QGS, QCNL → PCCS).
//!
//! Secrets (a PCS API key) are never in this file: the config names a file or an
//! environment variable to read them from, and the value lives only in a redacting
//! wrapper ([`Secret`]) that prints as `<redacted>` and has no `Serialize`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether cchost manages DCAP on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DcapEnable {
    /// Only on hosts with TDX enabled (`kvm_intel.tdx = Y`).
    #[default]
    Auto,
    On,
    Off,
}

/// How QGS listens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QgsTransport {
    /// `/var/run/tdx-qgs/qgs.socket`; `port` is left out of qgs.conf (the only setting
    /// every QGS version reads as "unix socket").
    #[default]
    Unix,
    /// AF_VSOCK on `vsock_port`.
    Vsock,
}

/// Who runs QGS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuperviseMode {
    /// cchost only configures and probes.
    #[default]
    Off,
    /// cchost runs `qgs --no-daemon -n=N` as its child (DaemonSet / standalone).
    Child,
    /// cchost drives `qgsd.service` over D-Bus.
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DcapConfig {
    pub enable: DcapEnable,
    pub transport: QgsTransport,
    /// Unix socket host path.
    pub socket: PathBuf,
    pub vsock_port: u32,
    /// vsock CID cchost probes from the host (1 = VMADDR_CID_LOCAL).
    pub vsock_cid: u32,
    /// QGS worker threads (`-n=`, `number_threads`).
    pub threads: u32,
    /// Where QGS reads its config (hard-coded in QGS).
    pub qgs_conf_path: PathBuf,
    /// Where cchost writes the QCNL config (QGS gets it through `QCNL_CONF_PATH`).
    pub qcnl_conf_path: PathBuf,
    /// Timeout for one QGS request, milliseconds.
    pub probe_timeout_ms: u64,
    /// The platform's FMSPC (12 hex digits), for the deeper GET_COLLATERAL probe.
    pub fmspc: Option<String>,
    /// PCK CA for GET_COLLATERAL: `processor` or `platform`.
    pub pck_ca: String,
    /// WARN when TCB info / QE identity `nextUpdate` is closer than this many days.
    pub expiry_warn_days: u32,
    pub pccs: PccsConfig,
    pub supervise: SuperviseConfig,
}

impl Default for DcapConfig {
    fn default() -> Self {
        DcapConfig {
            enable: DcapEnable::Auto,
            transport: QgsTransport::Unix,
            socket: PathBuf::from("/var/run/tdx-qgs/qgs.socket"),
            vsock_port: 4050,
            vsock_cid: 1,
            threads: 4,
            qgs_conf_path: PathBuf::from("/etc/qgs.conf"),
            qcnl_conf_path: PathBuf::from("/etc/sgx_default_qcnl.conf"),
            probe_timeout_ms: 5000,
            fmspc: None,
            pck_ca: "processor".into(),
            expiry_warn_days: 7,
            pccs: PccsConfig::default(),
            supervise: SuperviseConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PccsConfig {
    /// QCNL `pccs_url` (ends in `/sgx/certification/v4/`).
    pub url: String,
    /// A PEM CA bundle (host path) that signs the PCCS certificate. Preferred over
    /// `use_secure_cert = false`.
    pub ca_bundle: Option<PathBuf>,
    /// QCNL `use_secure_cert`. `false` accepts any certificate (`check` WARNs).
    pub use_secure_cert: bool,
    /// QCNL `collateral_service` (e.g. Intel PCS for verification collateral).
    pub collateral_service: Option<String>,
    pub retry_times: u32,
    /// Seconds between retries; unset = QCNL's exponential backoff.
    pub retry_delay_s: Option<u32>,
    pub pck_cache_expire_hours: u32,
    pub verify_collateral_cache_expire_hours: u32,
    /// Only use pre-populated QPL cache files; never contact PCCS.
    pub local_cache_only: bool,
    /// File holding a PCS API key (a mounted Kubernetes secret). Sent by QCNL as
    /// `Ocp-Apim-Subscription-Key` when `url` is Intel PCS itself.
    pub api_key_file: Option<PathBuf>,
    /// Environment variable holding the PCS API key (used when `api_key_file` is unset).
    pub api_key_env: Option<String>,
    /// TCP + TLS connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Time to wait for the HTTP answer once the request is sent, milliseconds. A PCCS in
    /// LAZY mode without a route to Intel holds a request ~63 s; past this the probe says
    /// "PCCS up, upstream hang suspected" instead of waiting.
    pub answer_timeout_ms: u64,
}

impl Default for PccsConfig {
    fn default() -> Self {
        PccsConfig {
            url: "https://localhost:8081/sgx/certification/v4/".into(),
            ca_bundle: None,
            use_secure_cert: true,
            collateral_service: None,
            retry_times: 6,
            retry_delay_s: None,
            pck_cache_expire_hours: 168,
            verify_collateral_cache_expire_hours: 168,
            local_cache_only: false,
            api_key_file: None,
            api_key_env: None,
            connect_timeout_ms: 3000,
            answer_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuperviseConfig {
    pub mode: SuperviseMode,
    /// QGS program for `child` mode (looked up on PATH).
    pub program: String,
    /// Extra arguments after `--no-daemon -n=N` (e.g. `-l=info` on newer QGS; older
    /// builds reject more than three arguments).
    pub args: Vec<String>,
    /// `XDG_CACHE_HOME` for the child (where QPL keeps its `.dcap-qcnl` cache).
    pub cache_dir: Option<PathBuf>,
    /// Group that may use the socket directory (QEMU's group), by name; unset = unchanged.
    pub socket_group: Option<String>,
    /// systemd unit for `systemd` mode.
    pub unit: String,
    /// Seconds between liveness probes.
    pub probe_interval_s: u64,
    /// Consecutive failed probes before a restart.
    pub probe_failures: u32,
    /// Restart QGS every this many hours (0 = never): QGS is known to stop producing
    /// quotes after days.
    pub restart_every_h: u64,
    /// First restart delay, milliseconds (doubles up to `backoff_max_s`).
    pub backoff_initial_ms: u64,
    pub backoff_max_s: u64,
}

impl Default for SuperviseConfig {
    fn default() -> Self {
        SuperviseConfig {
            mode: SuperviseMode::Off,
            program: "qgs".into(),
            args: Vec::new(),
            cache_dir: None,
            socket_group: None,
            unit: "qgsd.service".into(),
            probe_interval_s: 30,
            probe_failures: 3,
            restart_every_h: 0,
            backoff_initial_ms: 1000,
            backoff_max_s: 60,
        }
    }
}

impl DcapConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.threads == 0 || self.threads > 256 {
            return Err(format!("dcap.threads = {}: must be 1..=256", self.threads));
        }
        // The socket's directory may be given to the socket group (supervisor.rs), so it
        // must be a runtime directory, not /etc.
        super::paths::under_one_of("dcap.socket", &self.socket, &["/run", "/var/run"])?;
        if self.socket.parent().is_some_and(|p| {
            p == std::path::Path::new("/run") || p == std::path::Path::new("/var/run")
        }) {
            return Err(format!(
                "dcap.socket = {:?}: must be in a directory of its own under /run or /var/run",
                self.socket.display()
            ));
        }
        // QGS reads /etc/qgs.conf (hard-coded in QGS); QCNL reads the file named by
        // QCNL_CONF_PATH, by convention /etc/sgx_default_qcnl.conf
        // (SGXDataCenterAttestationPrimitives, QuoteGeneration/qcnl).
        super::paths::normal_absolute("dcap.qgs_conf_path", &self.qgs_conf_path)?;
        if !self.qgs_conf_path.starts_with("/etc")
            || self.qgs_conf_path.file_name() != Some(std::ffi::OsStr::new("qgs.conf"))
        {
            return Err(format!(
                "dcap.qgs_conf_path = {:?}: must be a file named qgs.conf under /etc",
                self.qgs_conf_path.display()
            ));
        }
        super::paths::normal_absolute("dcap.qcnl_conf_path", &self.qcnl_conf_path)?;
        if !self.qcnl_conf_path.starts_with("/etc")
            || !self
                .qcnl_conf_path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("qcnl.conf"))
        {
            return Err(format!(
                "dcap.qcnl_conf_path = {:?}: must be a file under /etc whose name ends in qcnl.conf",
                self.qcnl_conf_path.display()
            ));
        }
        if let Some(p) = &self.pccs.ca_bundle {
            super::paths::normal_absolute("dcap.pccs.ca_bundle", p)?;
        }
        if let Some(p) = &self.supervise.cache_dir {
            super::paths::normal_absolute("dcap.supervise.cache_dir", p)?;
        }
        if let Some(f) = &self.fmspc
            && (f.len() != 12 || !f.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!("dcap.fmspc = {f:?}: must be 12 hex digits"));
        }
        if self.pck_ca != "processor" && self.pck_ca != "platform" {
            return Err(format!(
                "dcap.pck_ca = {:?}: must be \"processor\" or \"platform\"",
                self.pck_ca
            ));
        }
        if !(self.pccs.url.starts_with("https://") || self.pccs.url.starts_with("http://")) {
            return Err(format!(
                "dcap.pccs.url = {:?}: must start with https://",
                self.pccs.url
            ));
        }
        if self.supervise.probe_failures == 0 {
            return Err("dcap.supervise.probe_failures must be at least 1".into());
        }
        if self.supervise.program.is_empty() {
            return Err("dcap.supervise.program must not be empty".into());
        }
        Ok(())
    }
}

/// A secret value. Printing it (Debug or Display) shows `<redacted>`; it cannot be
/// serialized. Only [`Secret::expose`] gives the value, at the one place that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn defaults_are_unix_socket_and_secure() {
        let c = DcapConfig::default();
        assert_eq!(c.transport, QgsTransport::Unix);
        assert!(c.pccs.use_secure_cert);
        c.validate().unwrap();
    }

    #[test]
    fn parses_and_rejects() {
        let cfg = Config::from_toml(
            "[dcap]\ntransport = \"vsock\"\nfmspc = \"00806F050000\"\n[dcap.pccs]\nurl = \"https://pccs:8042/sgx/certification/v4/\"\napi_key_file = \"/run/secrets/pcs/api-key\"\n[dcap.supervise]\nmode = \"child\"\nrestart_every_h = 24\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(cfg.dcap.transport, QgsTransport::Vsock);
        assert_eq!(cfg.dcap.supervise.mode, SuperviseMode::Child);
        assert_eq!(cfg.dcap.supervise.restart_every_h, 24);
        let err = Config::from_toml("[dcap]\nfmspc = \"xyz\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dcap.fmspc"), "{err}");
        let err = Config::from_toml("[dcap.pccs]\napi_key = \"k\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_key"), "{err}");
    }

    #[test]
    fn file_paths_cannot_aim_at_other_host_files() {
        for (key, line) in [
            ("dcap.qgs_conf_path", "qgs_conf_path = \"/etc/shadow\""),
            (
                "dcap.qgs_conf_path",
                "qgs_conf_path = \"/etc/x/../qgs.conf\"",
            ),
            ("dcap.qcnl_conf_path", "qcnl_conf_path = \"/etc/shadow\""),
            (
                "dcap.qcnl_conf_path",
                "qcnl_conf_path = \"/root/sgx_default_qcnl.conf\"",
            ),
            ("dcap.socket", "socket = \"/etc/qgs.socket\""),
            ("dcap.socket", "socket = \"/run/qgs.socket\""),
        ] {
            let e = Config::from_toml(&format!("[dcap]\n{line}\n"), Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
        Config::from_toml(
            "[dcap]\nqcnl_conf_path = \"/etc/sgx/my_qcnl.conf\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2-key".into());
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2-key");
    }
}
