//! The PCCS probe: a small HTTPS GET of our own (rustls with the ring provider) that
//! tells apart what a real PCCS answers (docs/facts/dcap.md#pccs-observed):
//! 404 "No cache data" (empty cache, OFFLINE/REQ), a wrong-URL 404 (Express's HTML page),
//! a LAZY-mode hang (~63 s then 502) when Intel PCS is unreachable, a closed connection,
//! and nothing listening. The hang is recognised without waiting for it: the TCP
//! connect and TLS handshake succeed, the request is sent, and no status line arrives
//! within `answer_timeout` — PCCS is up and waiting on its upstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DcapError;
use crate::config::Secret;
use crate::host::HostRoot;

/// Largest HTTP answer read (headers + body). TCB info JSON is tens of KiB.
pub const MAX_ANSWER: usize = 1024 * 1024;

/// Trust bundles looked for on the host when no CA bundle is configured (Debian/Ubuntu,
/// then RHEL/Fedora): QCNL's libcurl uses the same system store.
pub const SYSTEM_CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// A parsed `http(s)://host:port/path` URL (enough for a PCCS base URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Always starts with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{s:?}: not an http(s) URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!("{s:?}: credentials in URLs are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: bad IPv6 host"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{s:?}: bad port {p:?}"))?,
            None if tls => 443,
            None => 80,
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        Ok(Url {
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The same server with another path (query allowed).
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_string(),
            ..self.clone()
        }
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

/// How the probe trusts the PCCS certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// PEM certificates (a configured CA bundle or the host's system bundle).
    Roots { source: String, pem: Vec<u8> },
    /// `use_secure_cert = false`: any certificate (signatures still checked).
    Insecure,
}

/// Settings for one probe run.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub base: Url,
    pub trust: Trust,
    pub connect_timeout: Duration,
    pub answer_timeout: Duration,
    /// Sent as `Ocp-Apim-Subscription-Key` (Intel PCS accepts it; PCCS ignores it).
    pub api_key: Option<Secret>,
}

impl ProbeSettings {
    /// Builds the trust anchor the way QCNL would: the configured CA bundle, else the
    /// host's system bundle, else (use_secure_cert = false) none.
    pub fn trust_for(
        host: &HostRoot,
        ca_bundle: Option<&std::path::Path>,
        use_secure_cert: bool,
    ) -> Result<Trust, DcapError> {
        if let Some(p) = ca_bundle {
            return Ok(Trust::Roots {
                source: p.display().to_string(),
                pem: host.read_bytes(p)?,
            });
        }
        if !use_secure_cert {
            return Ok(Trust::Insecure);
        }
        for p in SYSTEM_CA_BUNDLES {
            if let Some(pem) = host.read_string_opt(p)? {
                return Ok(Trust::Roots {
                    source: p.to_string(),
                    pem: pem.into_bytes(),
                });
            }
        }
        Ok(Trust::Roots {
            source: "no system CA bundle on the host".into(),
            pem: Vec::new(),
        })
    }
}

/// Are all certificates of `ca_pem` in `bundle_pem`? (QCNL's libcurl trusts only the
/// host's system store, so a CA given to cchost alone does not help QGS.)
pub fn bundle_contains(bundle_pem: &[u8], ca_pem: &[u8]) -> Result<bool, String> {
    let certs = |pem: &[u8]| -> Result<Vec<Vec<u8>>, String> {
        CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(|c| c.as_ref().to_vec()).map_err(|e| e.to_string()))
            .collect()
    };
    let wanted = certs(ca_pem)?;
    if wanted.is_empty() {
        return Err("no certificate in it".into());
    }
    let have = certs(bundle_pem)?;
    Ok(wanted.iter().all(|w| have.contains(w)))
}

/// A parsed HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        let s = s.trim();
        if s.len() > 120 {
            format!("{}…", s.chars().take(120).collect::<String>())
        } else {
            s.to_string()
        }
    }
}

/// What one GET met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    Answer(Answer),
    /// Name resolution failed.
    Dns(String),
    /// TCP connection refused: nothing listening.
    Refused,
    /// No TCP answer within the connect timeout.
    ConnectTimeout,
    /// The peer closed during the TLS handshake.
    ClosedInHandshake,
    /// The peer answered the handshake with something that is not TLS.
    NotTls(String),
    /// Certificate verification failed.
    Untrusted(String),
    /// Any other TLS failure.
    Tls(String),
    /// The request was sent and the peer closed with no bytes.
    ClosedWithoutAnswer,
    /// The request was sent over an established connection and no status line came
    /// within the answer timeout.
    NoAnswer(Duration),
    /// Bytes came back but not an HTTP answer.
    BadAnswer(String),
    Io(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// GET one URL on the probe's server.
pub async fn get(settings: &ProbeSettings, url: &Url) -> Fetch {
    let addr = url.authority();
    let tcp = match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(&addr)).await
    {
        Err(_) => return Fetch::ConnectTimeout,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Fetch::Refused,
        Ok(Err(e)) => {
            // tokio reports resolver failures as io::Error with a "failed to lookup" text.
            let msg = e.to_string();
            if msg.contains("lookup") || msg.contains("resolve") || msg.contains("Name or service")
            {
                return Fetch::Dns(msg);
            }
            return Fetch::Io(msg);
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Stream> = if url.tls {
        let config = match client_config(&settings.trust) {
            Ok(c) => c,
            Err(e) => return Fetch::Tls(e),
        };
        let name = match ServerName::try_from(url.host.clone()) {
            Ok(n) => n,
            Err(e) => return Fetch::Tls(format!("bad server name {:?}: {e}", url.host)),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        match tokio::time::timeout(settings.connect_timeout, connector.connect(name, tcp)).await {
            Err(_) => return Fetch::ConnectTimeout,
            Ok(Err(e)) => return classify_tls_error(e),
            Ok(Ok(s)) => Box::new(s),
        }
    } else {
        Box::new(tcp)
    };
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cchost-dcap-probe\r\nAccept: */*\r\nConnection: close\r\n",
        url.path,
        url.authority()
    );
    if let Some(k) = &settings.api_key {
        req.push_str(&format!("Ocp-Apim-Subscription-Key: {}\r\n", k.expose()));
    }
    req.push_str("\r\n");
    if let Err(e) = stream.write_all(req.as_bytes()).await {
        return Fetch::Io(format!("sending the request: {e}"));
    }
    drop(req);
    read_answer(&mut stream, settings.answer_timeout).await
}

async fn read_answer(stream: &mut Box<dyn Stream>, timeout: Duration) -> Fetch {
    let started = Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let mut head_end: Option<usize> = None;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let n = match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => {
                if head_end.is_none() {
                    return Fetch::NoAnswer(timeout);
                }
                return Fetch::BadAnswer("the body did not arrive in time".into());
            }
            Ok(Ok(n)) => n,
            // A server that closes without close_notify: treat as end of data.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset && buf.is_empty() => {
                return Fetch::ClosedWithoutAnswer;
            }
            Ok(Err(e)) => return Fetch::Io(e.to_string()),
        };
        if n == 0 {
            if buf.is_empty() {
                return Fetch::ClosedWithoutAnswer;
            }
            break;
        }
        if buf.len() + n > MAX_ANSWER {
            return Fetch::BadAnswer(format!("answer larger than {MAX_ANSWER} bytes"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if head_end.is_none() {
            head_end = find(&buf, b"\r\n\r\n").map(|i| i + 4);
        }
        if let Some(h) = head_end
            && let Ok(Some(len)) = content_length(&buf[..h])
            && buf.len() >= h + len
        {
            break;
        }
    }
    match parse_answer(&buf) {
        Ok(a) => Fetch::Answer(a),
        Err(e) => Fetch::BadAnswer(e),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> Result<Option<usize>, String> {
    let text = String::from_utf8_lossy(head);
    for line in text.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            return v
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| format!("bad Content-Length {v:?}"));
        }
    }
    Ok(None)
}

/// Parses an HTTP/1.x answer held in memory (status line, headers, body; chunked or not).
pub fn parse_answer(buf: &[u8]) -> Result<Answer, String> {
    let h = find(buf, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "no HTTP header in {} bytes: {:?}",
            buf.len(),
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        )
    })?;
    let head = std::str::from_utf8(&buf[..h]).map_err(|_| "header is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or("");
    if !proto.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let raw = &buf[h + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(raw)?
    } else {
        match content_length(&buf[..h + 2])? {
            Some(n) if n <= raw.len() => raw[..n].to_vec(),
            Some(n) => return Err(format!("body truncated: {} of {n} bytes", raw.len())),
            None => raw.to_vec(),
        }
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = find(raw, b"\r\n").ok_or("chunked body truncated")?;
        let size_text = std::str::from_utf8(&raw[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size {
            return Err("chunked body truncated".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).ok_or("chunked body truncated")?;
    }
}

fn classify_tls_error(e: std::io::Error) -> Fetch {
    if e.kind() == std::io::ErrorKind::UnexpectedEof
        || e.kind() == std::io::ErrorKind::ConnectionReset
    {
        return Fetch::ClosedInHandshake;
    }
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match inner {
            rustls::Error::InvalidCertificate(c) => Fetch::Untrusted(format!("{c:?}")),
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::InappropriateMessage { .. } => Fetch::NotTls(inner.to_string()),
            other => Fetch::Tls(other.to_string()),
        };
    }
    Fetch::Tls(e.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(trust: &Trust) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut cfg = match trust {
        Trust::Roots { source, pem } => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("{source}: bad PEM: {e}"))?;
                // One odd certificate in a system bundle must not break the probe.
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// `use_secure_cert = false`: the certificate is not checked against any root (as QCNL
/// does then), but handshake signatures still are.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The verdict on one PCCS answer, in a user's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Verdict {
    /// 200: served from cache (or fetched).
    Ok,
    /// 404 with PCCS's "No cache data" text: PCCS is up and the URL is right; the cache
    /// has no entry (OFFLINE/REQ mode with nothing imported).
    NoCacheData,
    /// 461: the platform is not in PCCS's cache (not registered).
    PlatformUnknown,
    /// 404 that is not PCCS's "no cache" text: no such route (wrong pccs_url path).
    WrongUrl,
    /// 502 "Unable to retrieve the collateral from the Intel SGX PCS".
    UpstreamUnreachable,
    /// Connected and TLS done, but no answer in time: LAZY mode waiting on Intel PCS.
    UpstreamHangSuspected,
    AuthFailed,
    BadRequest,
    ServerError,
    NothingListening,
    Unreachable,
    NameNotResolved,
    /// The peer closed at once: a TLS port spoken to in plain HTTP, or the reverse.
    Closed,
    NotTls,
    Untrusted,
    TlsFailed,
    Garbled,
}

impl Verdict {
    /// Is PCCS itself up (a process answered at that address)?
    pub fn pccs_up(&self) -> bool {
        matches!(
            self,
            Verdict::Ok
                | Verdict::NoCacheData
                | Verdict::PlatformUnknown
                | Verdict::WrongUrl
                | Verdict::UpstreamUnreachable
                | Verdict::UpstreamHangSuspected
                | Verdict::AuthFailed
                | Verdict::BadRequest
                | Verdict::ServerError
        )
    }
}

/// PCCS's own text for an empty cache.
const NO_CACHE_TEXT: &str = "No cache data";
/// PCCS's text for a LAZY-mode upstream failure.
const UPSTREAM_TEXT: &str = "Unable to retrieve the collateral";

/// Maps what a GET met to a verdict and a sentence.
pub fn judge(fetch: &Fetch, url: &Url) -> (Verdict, String) {
    match fetch {
        Fetch::Answer(a) => {
            let body = a.body_text();
            match a.status {
                200..=299 => (Verdict::Ok, format!("{} answered {}", url.path, a.status)),
                404 if body.contains(NO_CACHE_TEXT) => (
                    Verdict::NoCacheData,
                    format!(
                        "PCCS up, cache empty: 404 \"{body}\" (OFFLINE/REQ mode with nothing imported or registered)"
                    ),
                ),
                404 => (
                    Verdict::WrongUrl,
                    format!(
                        "404 without PCCS's cache text (\"{body}\"): no such route — the URL path is wrong (pccs_url must end in /sgx/certification/v4/)"
                    ),
                ),
                461 => (
                    Verdict::PlatformUnknown,
                    format!("461 \"{body}\": this platform is not in PCCS (not registered)"),
                ),
                502 if body.contains(UPSTREAM_TEXT) => (
                    Verdict::UpstreamUnreachable,
                    format!(
                        "PCCS up, upstream unreachable: 502 \"{body}\" (LAZY mode cannot reach Intel PCS)"
                    ),
                ),
                401 => (Verdict::AuthFailed, format!("401 \"{body}\"")),
                400 => (Verdict::BadRequest, format!("400 \"{body}\"")),
                s => (Verdict::ServerError, format!("HTTP {s} \"{body}\"")),
            }
        }
        Fetch::Dns(e) => (
            Verdict::NameNotResolved,
            format!("cannot resolve {}: {e}", url.host),
        ),
        Fetch::Refused => (
            Verdict::NothingListening,
            format!(
                "nothing listening on {} (PCCS not running; note PCCS exits with status 0 when libPCKCertSelection.so is missing, and stays up without a listener when its port is taken)",
                url.authority()
            ),
        ),
        Fetch::ConnectTimeout => (
            Verdict::Unreachable,
            format!(
                "no TCP/TLS answer from {} in time (host down or filtered)",
                url.authority()
            ),
        ),
        Fetch::ClosedInHandshake => (
            Verdict::Closed,
            format!(
                "{} closed the connection during the TLS handshake (not a TLS port?)",
                url.authority()
            ),
        ),
        Fetch::ClosedWithoutAnswer if !url.tls => (
            Verdict::Closed,
            format!(
                "{} closed the connection with 0 bytes: plain HTTP sent to a TLS port? (PCCS serves HTTPS only: use https://)",
                url.authority()
            ),
        ),
        Fetch::ClosedWithoutAnswer => (
            Verdict::Closed,
            format!(
                "{} closed the connection without answering",
                url.authority()
            ),
        ),
        Fetch::NotTls(e) => (
            Verdict::NotTls,
            format!(
                "{} does not speak TLS ({e}); PCCS serves HTTPS",
                url.authority()
            ),
        ),
        Fetch::Untrusted(e) => (
            Verdict::Untrusted,
            format!(
                "certificate not trusted ({e}): set dcap.pccs.ca_bundle to the CA that signed it (preferred) or use_secure_cert = false"
            ),
        ),
        Fetch::Tls(e) => (Verdict::TlsFailed, format!("TLS failed: {e}")),
        Fetch::NoAnswer(t) => (
            Verdict::UpstreamHangSuspected,
            format!(
                "PCCS up (connected{}), but no answer within {:.1}s: upstream unreachable suspected — a LAZY-mode PCCS holds a request ~63 s while it retries Intel PCS, then answers 502",
                if url.tls { ", TLS handshake done" } else { "" },
                t.as_secs_f32()
            ),
        ),
        Fetch::BadAnswer(e) => (Verdict::Garbled, format!("not an HTTP answer: {e}")),
        Fetch::Io(e) => (Verdict::Unreachable, e.clone()),
    }
}

/// One probed URL.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub url: String,
    pub verdict: Verdict,
    pub message: String,
    /// Status code when an HTTP answer came.
    pub status: Option<u16>,
    #[serde(skip)]
    pub answer: Option<Answer>,
}

/// GETs `path` (relative to the server of `base`) and judges the result.
pub async fn probe(settings: &ProbeSettings, url: &Url) -> Probe {
    let fetch = get(settings, url).await;
    let (verdict, message) = judge(&fetch, url);
    let (status, answer) = match fetch {
        Fetch::Answer(a) => (Some(a.status), Some(a)),
        _ => (None, None),
    };
    tracing::debug!(url = %url, ?verdict, "PCCS probe");
    Probe {
        url: url.to_string(),
        verdict,
        message,
        status,
        answer,
    }
}

/// The TDX flavour of an SGX collateral URL: QCNL replaces `/sgx/` with `/tdx/`.
pub fn tdx_url(base: &Url, rel: &str) -> Url {
    let sgx = join(&base.path, rel);
    base.with_path(&sgx.replacen("/sgx/", "/tdx/", 1))
}

/// `base` + `rel` with exactly one `/` between them.
pub fn join(base: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parse() {
        let u = Url::parse("https://pccs-service:8042/sgx/certification/v4/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "pccs-service", 8042)
        );
        assert_eq!(u.path, "/sgx/certification/v4/");
        assert_eq!(Url::parse("https://[::1]/x").unwrap().port, 443);
        assert_eq!(
            Url::parse("https://[::1]:9/x").unwrap().authority(),
            "[::1]:9"
        );
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("https://x:99999/").is_err());
        assert_eq!(
            tdx_url(&u, "qe/identity").path,
            "/tdx/certification/v4/qe/identity"
        );
    }

    #[test]
    fn http_answers() {
        let a = parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 32\r\nETag: x\r\n\r\nNo cache data for this platform.").unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.body, b"No cache data for this platform.");
        let c = parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(c.body, b"abcde");
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort").is_err());
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\nab")
                .is_err()
        );
    }

    #[test]
    fn verdicts_tell_the_404s_apart() {
        let u = Url::parse("https://p:8081/sgx/certification/v4/rootcacrl").unwrap();
        let ans = |status, body: &str| {
            Fetch::Answer(Answer {
                status,
                headers: vec![],
                body: body.as_bytes().to_vec(),
            })
        };
        assert_eq!(
            judge(&ans(404, "No cache data for this platform."), &u).0,
            Verdict::NoCacheData
        );
        assert_eq!(
            judge(&ans(404, "<!DOCTYPE html><pre>Cannot GET /x</pre>"), &u).0,
            Verdict::WrongUrl
        );
        assert_eq!(
            judge(
                &ans(
                    502,
                    "Unable to retrieve the collateral from the Intel SGX PCS."
                ),
                &u
            )
            .0,
            Verdict::UpstreamUnreachable
        );
        assert_eq!(
            judge(&ans(461, "The platform was not found in the cache."), &u).0,
            Verdict::PlatformUnknown
        );
        let (v, m) = judge(&Fetch::NoAnswer(Duration::from_secs(2)), &u);
        assert_eq!(v, Verdict::UpstreamHangSuspected);
        assert!(m.contains("PCCS up"), "{m}");
    }
}
