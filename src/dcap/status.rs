//! The DCAP chain as verdicts: TDX → qgs.conf → QGS → QCNL → PCCS → collateral.
//!
//! Each item carries its evidence and, when not passing, a remedy. `cchost dcap status`
//! prints these; `check` shows them as its DCAP subtree on TDX hosts.

use std::time::Duration;

use serde::Serialize;

use super::collateral::{self, Expiry};
use super::files::{self, QcnlConf};
use super::pccs::{self, ProbeSettings, Url, Verdict};
use super::proto::{self, PlatformInfo};
use super::qgs::{self, Endpoint, QgsError};
use crate::config::{DcapConfig, DcapEnable, QgsTransport, Secret};
use crate::host::{HostRoot, NodeKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Pass,
    Info,
    Skip,
    Warn,
    Fail,
}

impl Level {
    pub fn tag(&self) -> &'static str {
        match self {
            Level::Pass => "PASS",
            Level::Info => "INFO",
            Level::Skip => "SKIP",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One verdict in the chain.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Short stable id (`tdx`, `qgs`, `pccs.rootcacrl`...).
    pub id: String,
    pub level: Level,
    pub summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Item {
    fn new(id: &str, level: Level, summary: impl Into<String>) -> Self {
        Item {
            id: id.into(),
            level,
            summary: summary.into(),
            evidence: Vec::new(),
            remedy: None,
        }
    }
    fn evidence(mut self, e: impl Into<String>) -> Self {
        self.evidence.push(e.into());
        self
    }
    fn remedy(mut self, r: impl Into<String>) -> Self {
        self.remedy = Some(r.into());
        self
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// False when DCAP does not apply here (no TDX and `enable = auto`, or `off`).
    pub applicable: bool,
    pub tdx: bool,
    pub qgs_endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pccs_url: Option<String>,
    pub items: Vec<Item>,
}

impl Report {
    /// The worst level in the report.
    pub(crate) fn worst(&self) -> Level {
        self.items
            .iter()
            .map(|i| i.level)
            .max()
            .unwrap_or(Level::Pass)
    }
    /// Ready = nothing failed.
    pub fn ready(&self) -> bool {
        self.worst() < Level::Fail
    }

    /// A readable chain for the terminal.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        if self.applicable {
            s.push_str(
                "DCAP attestation chain on this host (TD → QGS → QCNL → PCCS → Intel PCS)\n",
            );
        } else {
            s.push_str("DCAP: not applicable on this host\n");
        }
        for i in &self.items {
            s.push_str(&format!(
                "  [{}] {:<24} {}\n",
                i.level.tag(),
                i.id,
                i.summary
            ));
            for e in &i.evidence {
                s.push_str(&format!("         {:<24} evidence: {e}\n", ""));
            }
            if let Some(r) = &i.remedy {
                s.push_str(&format!("         {:<24} remedy:   {r}\n", ""));
            }
        }
        s
    }
}

/// The QGS endpoint cchost's config selects.
pub fn endpoint(cfg: &DcapConfig) -> Endpoint {
    match cfg.transport {
        QgsTransport::Unix => Endpoint::Unix {
            path: cfg.socket.clone(),
        },
        QgsTransport::Vsock => Endpoint::Vsock {
            cid: cfg.vsock_cid,
            port: cfg.vsock_port,
        },
    }
}

/// Builds the report. `now` is Unix seconds (for collateral expiry).
pub async fn report(
    host: &HostRoot,
    cfg: &DcapConfig,
    api_key: Option<Secret>,
    now: i64,
) -> Report {
    let (tdx, tdx_evidence) = super::tdx_enabled(host);
    let ep = endpoint(cfg);
    let mut items = Vec::new();
    let applicable = match cfg.enable {
        DcapEnable::Off => false,
        DcapEnable::On => true,
        DcapEnable::Auto => tdx,
    };
    if tdx {
        items.push(Item::new("tdx", Level::Pass, "TDX is enabled").evidence(tdx_evidence));
    } else {
        items.push(
            Item::new(
                "tdx",
                if applicable { Level::Fail } else { Level::Skip },
                "no TDX on this host: TDX guests cannot run here, so no quotes are needed",
            )
            .evidence(tdx_evidence)
            .remedy("on a TDX machine: enable TDX in the BIOS and boot with kvm_intel.tdx=1"),
        );
    }
    if !applicable {
        // Still say plainly whether any QGS is here.
        let socket_there = matches!(ep, Endpoint::Unix { ref path } if host.kind_followed(path) == Some(NodeKind::Socket));
        let conf_there = host.exists(&cfg.qgs_conf_path);
        let summary = if socket_there || conf_there {
            format!(
                "QGS traces found ({}{}) but DCAP is not managed here (dcap.enable = {:?})",
                if socket_there { "socket" } else { "" },
                if conf_there { " qgs.conf" } else { "" },
                cfg.enable
            )
        } else {
            format!(
                "no QGS here: no socket at {} and no {}",
                cfg.socket.display(),
                cfg.qgs_conf_path.display()
            )
        };
        items.push(Item::new("qgs", Level::Skip, summary));
        return Report {
            applicable,
            tdx,
            qgs_endpoint: ep,
            platform: None,
            pccs_url: None,
            items,
        };
    }

    // qgs.conf
    match files::read_qgs_conf(host, &cfg.qgs_conf_path) {
        Ok(Some(c)) => {
            let mismatch = match (cfg.transport, c.port) {
                (QgsTransport::Unix, None) => None,
                (QgsTransport::Unix, Some(p)) => Some(format!(
                    "port = {p} selects vsock but dcap.transport = unix"
                )),
                (QgsTransport::Vsock, Some(p)) if p == cfg.vsock_port => None,
                (QgsTransport::Vsock, p) => Some(format!(
                    "port = {p:?} but dcap.transport = vsock on port {}",
                    cfg.vsock_port
                )),
            };
            let ev = format!(
                "{}: {}, number_threads = {}",
                c.path.display(),
                c.transport_summary(),
                c.number_threads
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "(unset)".into())
            );
            items.push(match mismatch {
                None => Item::new("qgs.conf", Level::Pass, c.transport_summary()).evidence(ev),
                Some(m) => Item::new("qgs.conf", Level::Warn, m)
                    .evidence(ev)
                    .remedy("run `cchost dcap configure` and restart QGS"),
            });
        }
        Ok(None) => items.push(
            Item::new(
                "qgs.conf",
                Level::Warn,
                format!("{} is missing", cfg.qgs_conf_path.display()),
            )
            .remedy("run `cchost dcap configure`"),
        ),
        Err(e) => items.push(Item::new("qgs.conf", Level::Fail, e.to_string())),
    }

    // QGS liveness
    let timeout = Duration::from_millis(cfg.probe_timeout_ms);
    let platform = match qgs::platform_info(host, &ep, timeout).await {
        Ok(p) => {
            items.push(
                Item::new(
                    "qgs",
                    Level::Pass,
                    format!("{ep} answers GET_PLATFORM_INFO"),
                )
                .evidence(format!(
                    "QE ID {}, CPU SVN {}, TDQE SVN {}, PCE SVN {}",
                    p.qe_id, p.cpu_svn, p.tdqe_isvsvn, p.pce_isvsvn
                )),
            );
            Some(p)
        }
        Err(e) => {
            items.push(Item::new("qgs", Level::Fail, e.to_string()).remedy(qgs_remedy(&e, cfg)));
            None
        }
    };

    // QCNL
    let qcnl = match files::read_qcnl(host, &cfg.qcnl_conf_path) {
        Ok(Some(q)) => {
            items.push(qcnl_item(&q, cfg));
            Some(q)
        }
        Ok(None) => {
            items.push(
                Item::new(
                    "qcnl",
                    Level::Warn,
                    format!(
                        "{} is missing: QGS cannot find a PCCS",
                        cfg.qcnl_conf_path.display()
                    ),
                )
                .remedy("run `cchost dcap configure`"),
            );
            None
        }
        Err(e) => {
            items.push(
                Item::new("qcnl", Level::Fail, e.to_string()).remedy("run `cchost dcap configure`"),
            );
            None
        }
    };
    if let Some(it) = trust_store_item(host, cfg, qcnl.as_ref()) {
        items.push(it);
    }
    // Probe the PCCS QGS really uses (the QCNL file), falling back to cchost's config.
    let pccs_url = qcnl
        .as_ref()
        .and_then(|q| q.pccs_url.clone())
        .unwrap_or_else(|| cfg.pccs.url.clone());
    let use_secure = qcnl
        .as_ref()
        .and_then(|q| q.use_secure_cert)
        .unwrap_or(cfg.pccs.use_secure_cert);
    let local_only = qcnl
        .as_ref()
        .and_then(|q| q.local_cache_only)
        .unwrap_or(false);

    let mut fmspc = cfg.fmspc.clone();
    let mut pccs_state: Option<(Verdict, String)> = None;
    let base = match Url::parse(&pccs_url) {
        Ok(u) => Some(u),
        Err(e) => {
            items.push(Item::new("pccs", Level::Fail, format!("pccs_url: {e}")));
            None
        }
    };
    if let Some(base) = base {
        match ProbeSettings::trust_for(host, cfg.pccs.ca_bundle.as_deref(), use_secure) {
            Err(e) => items.push(
                Item::new("pccs", Level::Fail, format!("CA bundle: {e}"))
                    .remedy("fix dcap.pccs.ca_bundle"),
            ),
            Ok(trust) => {
                let settings = ProbeSettings {
                    base: base.clone(),
                    trust,
                    connect_timeout: Duration::from_millis(cfg.pccs.connect_timeout_ms),
                    answer_timeout: Duration::from_millis(cfg.pccs.answer_timeout_ms),
                    api_key,
                };
                pccs_state = Some(
                    probe_pccs(
                        &settings,
                        platform.as_ref(),
                        &mut fmspc,
                        local_only,
                        cfg,
                        now,
                        &mut items,
                    )
                    .await,
                );
            }
        }
    }

    // Deeper: QGS GET_COLLATERAL exercises QGS → QPL → PCCS.
    match (&platform, fmspc.as_deref().and_then(proto::unhex)) {
        (None, _) => items.push(Item::new(
            "qgs.collateral",
            Level::Skip,
            "QGS is not answering; GET_COLLATERAL not tried",
        )),
        (Some(_), None) => items.push(
            Item::new(
                "qgs.collateral",
                Level::Skip,
                "FMSPC unknown (not in config and PCCS gave none): GET_COLLATERAL not tried",
            )
            .remedy("set dcap.fmspc (12 hex digits) to run the deeper probe"),
        ),
        (Some(_), Some(f)) => {
            match qgs::collateral(host, &ep, &f, &cfg.pck_ca, timeout).await {
                Ok(c) => {
                    items.push(
                        Item::new(
                            "qgs.collateral",
                            Level::Pass,
                            format!(
                                "QGS returned collateral {}.{} for FMSPC {}",
                                c.major,
                                c.minor,
                                proto::hex(&f).to_uppercase()
                            ),
                        )
                        .evidence(format!("{c:?}")),
                    );
                    for (what, blob) in [
                        ("QGS TCB info", &c.tcb_info),
                        ("QGS QE identity", &c.qe_identity),
                    ] {
                        items.push(expiry_item(
                            what,
                            collateral::next_update(trim_nul(blob), now),
                            cfg,
                        ));
                    }
                }
                Err(e) => {
                    let mut it = Item::new("qgs.collateral", Level::Fail, e.to_string());
                    if e.qgs_code() == Some(proto::code::UNEXPECTED) {
                        // 0x12001 hides the cause; the PCCS probe above usually shows it.
                        let cause = match &pccs_state {
                            Some((v, m)) if *v != Verdict::Ok => format!("likely cause, from the PCCS probe: {m}"),
                            _ if local_only => "local_cache_only is set: the QPL cache files may be missing or stale".into(),
                            _ => "PCCS answered the probe; see the QGS log for the QPL error (e.g. 0xe011 = platform not registered)".into(),
                        };
                        it = it.evidence(cause);
                    }
                    items.push(it.remedy("fix the PCCS line above; QGS logs the QPL error code"));
                }
            }
        }
    }

    Report {
        applicable,
        tdx,
        qgs_endpoint: ep,
        platform,
        pccs_url: Some(pccs_url),
        items,
    }
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map(|i| i + 1).unwrap_or(0);
    &b[..end]
}

fn qcnl_item(q: &QcnlConf, cfg: &DcapConfig) -> Item {
    let ev = format!(
        "{} ({}): pccs_url = {}, use_secure_cert = {}, local_cache_only = {}",
        q.path.display(),
        q.format,
        q.pccs_url
            .as_deref()
            .unwrap_or("(unset: QCNL default https://localhost:8081/sgx/certification/v4/)"),
        q.use_secure_cert
            .map(|b| b.to_string())
            .unwrap_or("(unset: true)".into()),
        q.local_cache_only
            .map(|b| b.to_string())
            .unwrap_or("(unset: false)".into()),
    );
    if q.use_secure_cert == Some(false) {
        let mut it = Item::new(
            "qcnl",
            Level::Warn,
            "use_secure_cert = false: QGS accepts any PCCS certificate",
        )
        .evidence(ev);
        it = it.remedy(if cfg.pccs.ca_bundle.is_some() {
            "install the CA from dcap.pccs.ca_bundle into the host trust store and set use_secure_cert = true"
        } else {
            "give PCCS a certificate from a CA the host trusts (dcap.pccs.ca_bundle) and set use_secure_cert = true"
        });
        return it;
    }
    if q.pccs_url
        .as_deref()
        .is_some_and(|u| u.contains("localhost") || u.contains("127.0.0.1"))
        && cfg.supervise.mode == crate::config::SuperviseMode::Child
    {
        return Item::new("qcnl", Level::Warn, "pccs_url points at localhost")
            .evidence(ev)
            .remedy("inside a pod localhost is the pod itself; use the PCCS Service name");
    }
    Item::new(
        "qcnl",
        Level::Pass,
        format!(
            "QGS reaches PCCS at {}",
            q.pccs_url.as_deref().unwrap_or("(default)")
        ),
    )
    .evidence(ev)
}

fn qgs_remedy(e: &QgsError, cfg: &DcapConfig) -> String {
    match e {
        QgsError::NoSocket { .. } => format!(
            "start QGS (systemctl start qgsd, or dcap.supervise.mode = \"child\"); if it runs in vsock mode, remove `port` from {} or set dcap.transport = \"vsock\"",
            cfg.qgs_conf_path.display()
        ),
        QgsError::Refused { .. } => "a stale socket: QGS died without removing it; restart QGS (cchost removes the stale socket before starting it in child mode)".into(),
        QgsError::Denied { .. } => "run cchost as root, or add it to the socket's group".into(),
        QgsError::Timeout { .. } => "QGS accepted but did not answer: restart it (dcap.supervise.restart_every_h covers the known multi-day stall)".into(),
        QgsError::Closed { .. } => "QGS dropped the request: check its log (journalctl -u qgsd)".into(),
        QgsError::Proto { .. } => "something other than QGS (or an incompatible version) answers on this socket".into(),
        _ => "check that QGS is installed and running".into(),
    }
}

fn expiry_item(what: &str, e: Result<Expiry, collateral::ExpiryError>, cfg: &DcapConfig) -> Item {
    let id = format!(
        "expiry.{}",
        what.replace(" TDX", "").replace(' ', "_").to_lowercase()
    );
    match e {
        Err(err) => Item::new(
            &id,
            Level::Warn,
            format!("{what}: cannot read nextUpdate: {err}"),
        ),
        Ok(x) => {
            let days = x.days_left();
            let ev = format!(
                "{} {} nextUpdate {}",
                x.kind,
                x.id.as_deref().unwrap_or(""),
                x.next_update
            );
            if x.seconds_left <= 0 {
                Item::new(&id, Level::Fail, format!("{what} expired {:.1} days ago", -days))
                    .evidence(ev)
                    .remedy("refresh PCCS collateral (PCCS `refresh`, or re-import with PccsAdminTool in OFFLINE mode)")
            } else if days < cfg.expiry_warn_days as f64 {
                Item::new(
                    &id,
                    Level::Warn,
                    format!("{what} expires in {days:.1} days"),
                )
                .evidence(ev)
                .remedy(
                    "refresh PCCS collateral before it lapses; verifiers reject stale collateral",
                )
            } else {
                Item::new(
                    &id,
                    Level::Pass,
                    format!("{what} valid for {days:.0} more days"),
                )
                .evidence(ev)
            }
        }
    }
}

async fn probe_pccs(
    settings: &ProbeSettings,
    platform: Option<&PlatformInfo>,
    fmspc: &mut Option<String>,
    local_only: bool,
    cfg: &DcapConfig,
    now: i64,
    items: &mut Vec<Item>,
) -> (Verdict, String) {
    let base = &settings.base;
    let level_of = |v: &Verdict| match v {
        Verdict::Ok => Level::Pass,
        Verdict::NoCacheData => Level::Warn,
        _ if local_only => Level::Warn,
        _ => Level::Fail,
    };
    let root = base.with_path(&pccs::join(&base.path, "rootcacrl"));
    let p = pccs::probe(settings, &root).await;
    let mut it = Item::new("pccs", level_of(&p.verdict), p.message.clone())
        .evidence(format!("GET {}", p.url));
    if matches!(settings.trust, pccs::Trust::Insecure) {
        it = it.evidence("TLS verification off (use_secure_cert = false)");
    }
    if let Some(r) = pccs_remedy(&p.verdict) {
        it = it.remedy(r);
    }
    if local_only {
        it = it.evidence("local_cache_only = true: QGS does not use PCCS for quotes");
    }
    items.push(it);
    let first = (p.verdict.clone(), p.message.clone());
    if !p.verdict.pccs_up()
        || p.verdict == Verdict::UpstreamHangSuspected
        || p.verdict == Verdict::WrongUrl
    {
        // Every further request would meet the same thing (or wait as long).
        return first;
    }

    // TDX QE identity (and its expiry).
    let qe = pccs::tdx_url(base, "qe/identity");
    let p = pccs::probe(settings, &qe).await;
    let mut it = Item::new("pccs.qe_identity", level_of(&p.verdict), p.message.clone())
        .evidence(format!("GET {}", p.url));
    if let Some(r) = pccs_remedy(&p.verdict) {
        it = it.remedy(r);
    }
    items.push(it);
    if let (Verdict::Ok, Some(a)) = (&p.verdict, &p.answer) {
        items.push(expiry_item(
            "PCCS TDX QE identity",
            collateral::next_update(&a.body, now),
            cfg,
        ));
    }

    // Registration: does PCCS know this platform's PCK certificate? (REQ/OFFLINE: 461 =
    // not registered; 200 carries SGX-FMSPC.)
    if let Some(pi) = platform {
        let pcesvn = proto::hex(&pi.pce_isvsvn.to_le_bytes());
        let path = pccs::join(
            &base.path,
            &format!(
                "pckcert?qeid={}&cpusvn={}&pcesvn={pcesvn}&pceid=0000",
                pi.qe_id, pi.cpu_svn
            ),
        );
        let p = pccs::probe(settings, &base.with_path(&path)).await;
        let (level, summary) = match &p.verdict {
            Verdict::Ok => (Level::Pass, "PCCS has this platform's PCK certificate".to_string()),
            Verdict::PlatformUnknown => (
                if local_only { Level::Warn } else { Level::Fail },
                "platform not registered: PCCS has no PCK certificate for this QE ID (QGS fails with 0x12001, QPL 0xe011)".to_string(),
            ),
            Verdict::BadRequest => (
                Level::Info,
                "PCCS wants encrypted_ppid for this lookup (LAZY mode): registration not checked".to_string(),
            ),
            v => (level_of(v), p.message.clone()),
        };
        let mut it = Item::new("pccs.pckcert", level, summary).evidence(format!("GET {}", p.url));
        if p.verdict == Verdict::PlatformUnknown {
            it = it.remedy("register the platform: PCKIDRetrievalTool -url <pccs>/sgx/certification/v4/platforms (multi-socket: MPA / BIOS 'SGX Auto MP Registration')");
        }
        if let Some(a) = &p.answer
            && let Some(f) = a.header("SGX-FMSPC")
        {
            it = it.evidence(format!("SGX-FMSPC: {f}"));
            if fmspc.is_none() && f.len() == 12 {
                *fmspc = Some(f.to_string());
            }
        }
        items.push(it);
    }

    // TDX TCB info for the FMSPC (and its expiry).
    if let Some(f) = fmspc.clone() {
        let tcb = pccs::tdx_url(base, &format!("tcb?fmspc={f}"));
        let p = pccs::probe(settings, &tcb).await;
        items.push(
            Item::new("pccs.tcb_info", level_of(&p.verdict), p.message.clone())
                .evidence(format!("GET {}", p.url)),
        );
        if let (Verdict::Ok, Some(a)) = (&p.verdict, &p.answer) {
            items.push(expiry_item(
                "PCCS TDX TCB info",
                collateral::next_update(&a.body, now),
                cfg,
            ));
        }
    }
    first
}

fn pccs_remedy(v: &Verdict) -> Option<&'static str> {
    Some(match v {
        Verdict::Ok => return None,
        Verdict::NoCacheData => {
            "import collateral (PccsAdminTool in OFFLINE mode) or register the platform (REQ mode); or use LAZY mode with a route to Intel PCS"
        }
        Verdict::PlatformUnknown => "register the platform with PCCS (PCKIDRetrievalTool)",
        Verdict::WrongUrl => "set dcap.pccs.url to https://<pccs>:<port>/sgx/certification/v4/",
        Verdict::UpstreamUnreachable | Verdict::UpstreamHangSuspected => {
            "give PCCS a route to api.trustedservices.intel.com (proxy in PCCS config), or switch to OFFLINE/REQ and import collateral"
        }
        Verdict::AuthFailed => "check the PCCS tokens",
        Verdict::BadRequest | Verdict::ServerError | Verdict::Garbled => "check the PCCS log",
        Verdict::NothingListening => {
            "start PCCS (systemctl status pccs; its log shows why it exited)"
        }
        Verdict::Unreachable | Verdict::NameNotResolved => {
            "check the PCCS host name, Service and network policy"
        }
        Verdict::Closed | Verdict::NotTls => {
            "PCCS serves HTTPS only: use https:// and the PCCS HTTPS port (8081, or 8042 on OpenShift)"
        }
        Verdict::Untrusted => "set dcap.pccs.ca_bundle to the CA that signed the PCCS certificate",
        Verdict::TlsFailed => "check the PCCS certificate and TLS settings",
    })
}

/// With a CA bundle configured and verification on, QGS trusts PCCS only if that CA is
/// in the host's system store (QCNL uses libcurl's default store).
fn trust_store_item(host: &HostRoot, cfg: &DcapConfig, qcnl: Option<&QcnlConf>) -> Option<Item> {
    let ca = cfg.pccs.ca_bundle.as_ref()?;
    if qcnl.and_then(|q| q.use_secure_cert) == Some(false) {
        return None;
    }
    let ca_pem = match host.read_bytes(ca) {
        Ok(b) => b,
        Err(e) => {
            return Some(Item::new(
                "qcnl.trust",
                Level::Fail,
                format!("dcap.pccs.ca_bundle: {e}"),
            ));
        }
    };
    let mut system = None;
    for p in pccs::SYSTEM_CA_BUNDLES {
        if let Ok(Some(b)) = host.read_string_opt(p) {
            system = Some((p, b));
            break;
        }
    }
    let remedy = format!(
        "install {} into the host trust store (Debian: /usr/local/share/ca-certificates/*.crt + update-ca-certificates; RHEL: /etc/pki/ca-trust/source/anchors + update-ca-trust)",
        ca.display()
    );
    let Some((path, bundle)) = system else {
        return Some(
            Item::new(
                "qcnl.trust",
                Level::Warn,
                "no system CA bundle on the host: QGS cannot verify PCCS",
            )
            .remedy(remedy),
        );
    };
    Some(match pccs::bundle_contains(bundle.as_bytes(), &ca_pem) {
        Ok(true) => Item::new("qcnl.trust", Level::Pass, "the PCCS CA is in the host trust store")
            .evidence(format!("{} found in {path}", ca.display())),
        Ok(false) => Item::new(
            "qcnl.trust",
            Level::Warn,
            "the PCCS CA is not in the host trust store: QGS (QCNL) will reject the PCCS certificate",
        )
        .evidence(format!("{} not found in {path}", ca.display()))
        .remedy(remedy),
        Err(e) => Item::new("qcnl.trust", Level::Fail, format!("{}: {e}", ca.display())),
    })
}
