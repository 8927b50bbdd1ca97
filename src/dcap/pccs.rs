//! The PCCS probe: one HTTPS GET (hyper's HTTP/1 client connection over rustls with the
//! ring provider, one phase timed at a time) that tells apart what a real PCCS answers
//! (docs/facts/dcap.md#pccs-observed):
//! 404 "No cache data" (empty cache, OFFLINE/REQ), a wrong-URL 404 (Express's HTML page),
//! a LAZY-mode hang (~63 s then 502) when Intel PCS is unreachable, a closed connection,
//! and nothing listening. The hang is recognised without waiting for it: the TCP
//! connect and TLS handshake succeed, the request is sent, and no status line arrives
//! within `answer_timeout` — PCCS is up and waiting on its upstream.
//!
//! HTTP itself is hyper's (status line, headers, chunked bodies: RFC 9112); URLs are
//! read with the http crate's `Authority` and `PathAndQuery` plus the RFC 3986 rules
//! they leave open (a bracketed host must be an IPv6 address followed by `:port` or
//! nothing, a port is digits), and an error names the part that is wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::DcapError;
use crate::config::Secret;
use crate::host::HostRoot;

/// Largest HTTP answer read (headers + body). TCB info JSON is tens of KiB.
pub(crate) const MAX_ANSWER: usize = 1024 * 1024;

/// Trust bundles looked for on the host when no CA bundle is configured (Debian/Ubuntu,
/// then RHEL/Fedora): QCNL's libcurl uses the same system store.
pub(crate) const SYSTEM_CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// A parsed `http(s)://host:port/path` URL (enough for a PCCS base URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Url {
    pub tls: bool,
    /// A name or address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// Always starts with `/`.
    pub path: String,
}

impl Url {
    /// Parses `http(s)://host[:port][/path[?query]]` strictly: every part must be what
    /// RFC 3986 allows there (no blanks, control characters or stray brackets), no
    /// user info, no fragment. The error names the wrong part.
    pub fn parse(s: &str) -> Result<Self, String> {
        use std::str::FromStr;
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?}: not an http(s) URL (no scheme://)"))?;
        let tls = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(format!("{s:?}: scheme {scheme:?} is not http or https")),
        };
        let (auth, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if auth.contains('@') {
            return Err(format!("{s:?}: credentials in URLs are not supported"));
        }
        let bad_auth = |why: &str| format!("{s:?}: host and port {auth:?}: {why}");
        let authority =
            http::uri::Authority::from_str(auth).map_err(|e| bad_auth(&e.to_string()))?;
        let (host, port_text) = if let Some(v6) = auth.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad_auth("no ] after an IPv6 host"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad_auth("not an IPv6 address in [ ]"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad_auth("text after ] that is not :port"))?,
                ),
            };
            (h.to_string(), port)
        } else {
            match auth.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (auth.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad_auth("no host"));
        }
        // RFC 3986 §3.2.2 reg-name: unreserved, pct-encoded, sub-delims.
        if !auth.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
        {
            return Err(bad_auth("the host has a character no host name can hold"));
        }
        let port = match port_text {
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u16>()
                .map_err(|_| bad_auth(&format!("port {p:?} is above 65535")))?,
            Some(p) => return Err(bad_auth(&format!("port {p:?} is not a number"))),
            None if tls => 443,
            None => 80,
        };
        debug_assert_eq!(authority.port_u16().unwrap_or(port), port);
        if path.contains('#') {
            return Err(format!("{s:?}: a #fragment has no place in a PCCS URL"));
        }
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        http::uri::PathAndQuery::from_str(&path).map_err(|e| {
            format!("{s:?}: path {path:?}: {e} (blanks and control characters must be %-encoded)")
        })?;
        Ok(Url {
            tls,
            host,
            port,
            path,
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
    pub(crate) fn trust_for(
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
pub(crate) fn bundle_contains(bundle_pem: &[u8], ca_pem: &[u8]) -> Result<bool, String> {
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
    pub(crate) fn body_text(&self) -> String {
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

/// GET one URL on the probe's server. Phases and their limits: TCP connect and TLS
/// handshake (`connect_timeout` each), then the answer's status line and headers, then
/// its body (`answer_timeout` for both together).
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
    let key = settings.api_key.as_ref();
    if !url.tls {
        return exchange(tcp, url, key, settings.answer_timeout).await;
    }
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
        Err(_) => Fetch::ConnectTimeout,
        Ok(Err(e)) => classify_tls_error(e),
        Ok(Ok(tls)) => exchange(tls, url, key, settings.answer_timeout).await,
    }
}

/// Sends the GET for `url` over an established connection and reads the answer with
/// hyper's HTTP/1 client, within `answer_timeout` in all: no status line in time is
/// [`Fetch::NoAnswer`]; a body that does not finish in time, is over [`MAX_ANSWER`] or
/// breaks HTTP is [`Fetch::BadAnswer`]. Public so that the fuzz targets can feed it
/// any bytes as the server's answer.
pub async fn exchange<S>(
    io: S,
    url: &Url,
    api_key: Option<&Secret>,
    answer_timeout: Duration,
) -> Fetch
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use http::header;
    use http_body_util::BodyExt;
    let started = Instant::now();
    let req = {
        let mut b = http::Request::get(url.path.as_str())
            .header(header::HOST, url.authority())
            .header(header::USER_AGENT, "cchost-dcap-probe")
            .header(header::ACCEPT, "*/*")
            .header(header::CONNECTION, "close");
        if let Some(k) = api_key {
            match http::HeaderValue::from_str(k.expose()) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    b = b.header("Ocp-Apim-Subscription-Key", v);
                }
                Err(_) => {
                    return Fetch::Io("the API key cannot be sent as an HTTP header value".into());
                }
            }
        }
        match b.body(http_body_util::Empty::<hyper::body::Bytes>::new()) {
            Ok(r) => r,
            Err(e) => return Fetch::Io(format!("cannot request {:?}: {e}", url.path)),
        }
    };
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let io = hyper_util::rt::TokioIo::new(ProbeIo {
        inner: io,
        read: read.clone(),
    });
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(x) => x,
        Err(e) => return Fetch::Io(e.to_string()),
    };
    let conn = tokio::spawn(conn);
    let head = tokio::time::timeout(answer_timeout, sender.send_request(req)).await;
    let resp = match head {
        Err(_) => {
            conn.abort();
            return Fetch::NoAnswer(answer_timeout);
        }
        Ok(Err(e)) => {
            conn.abort();
            return classify_http_error(&e, read.load(std::sync::atomic::Ordering::Relaxed));
        }
        Ok(Ok(r)) => r,
    };
    let (parts, body) = resp.into_parts();
    let left = answer_timeout.saturating_sub(started.elapsed());
    let body = tokio::time::timeout(
        left,
        http_body_util::Limited::new(body, MAX_ANSWER).collect(),
    )
    .await;
    conn.abort();
    let body = match body {
        Err(_) => return Fetch::BadAnswer("the body did not arrive in time".into()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Fetch::BadAnswer(format!("answer larger than {MAX_ANSWER} bytes"));
        }
        Ok(Err(e)) => return Fetch::BadAnswer(format!("body: {e}")),
        Ok(Ok(b)) => b.to_bytes().to_vec(),
    };
    Fetch::Answer(Answer {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    })
}

/// What a failed request means for the verdicts: a peer that closed before sending a
/// byte, bytes that are not an HTTP answer, or an I/O failure.
fn classify_http_error(e: &hyper::Error, bytes_read: usize) -> Fetch {
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    if bytes_read == 0
        && (e.is_incomplete_message()
            || io.is_some_and(|i| i.kind() == std::io::ErrorKind::ConnectionReset))
    {
        return Fetch::ClosedWithoutAnswer;
    }
    if e.is_parse() || e.is_parse_status() || e.is_incomplete_message() {
        return Fetch::BadAnswer(format!("{e} (after {bytes_read} bytes)"));
    }
    Fetch::Io(match io {
        Some(i) => i.to_string(),
        None => e.to_string(),
    })
}

/// The connection as hyper sees it: counts the bytes that came back (to tell "closed
/// without a byte" from "closed in the middle") and takes a TLS peer's close without
/// close_notify for the end of data, as the probe always has (a PCCS answer carries its
/// length, so a cut body is still noticed).
struct ProbeIo<S> {
    inner: S,
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for ProbeIo<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProbeIo<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
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

    /// Issue 14.5: URLs the old parser took (control characters in the path, text
    /// after an IPv6 host) are refused, naming the part.
    #[test]
    fn url_parse_is_strict_and_names_the_part() {
        for (bad, part) in [
            (
                "http://127.0.0.1:8081/sgx/certification/v4/\r\nX-Injected: yes\r\nX-Pad: ",
                "path",
            ),
            ("https://[::1]junk:9/x", "host and port"),
            ("https://[::1/x", "host and port"),
            ("https://[zz]/x", "host and port"),
            ("https://p ccs:8081/", "host and port"),
            ("https://pccs:+81/", "host and port"),
            ("https://pccs:/", "host and port"),
            ("https://pccs:1:2/", "host and port"),
            ("https://pc\0cs/", "host and port"),
            ("https://pccs/a b", "path"),
            ("https://pccs/a\0b", "path"),
            ("https://pccs/a#b", "fragment"),
            ("https://u:p@pccs/", "credentials"),
            ("https:/pccs/", "scheme"),
            ("gopher://pccs/", "scheme"),
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert!(e.contains(part), "{bad:?}: {e}");
        }
        let u = Url::parse("https://[fe80::1]:8081?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("fe80::1", 8081, "/?x=1")
        );
        assert_eq!(
            Url::parse("http://pccs").unwrap().to_string(),
            "http://pccs:80/"
        );
    }

    /// Feeds `raw` as the server's whole answer through [`exchange`].
    fn answer_to(raw: &[u8]) -> Fetch {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let raw = raw.to_vec();
        rt.block_on(async move {
            let (client, mut server) = tokio::io::duplex(1 << 16);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut req = [0u8; 4096];
                let _ = server.read(&mut req).await;
                let _ = server.write_all(&raw).await;
                let _ = server.shutdown().await;
            });
            let u = Url::parse("https://p:8081/sgx/certification/v4/rootcacrl").unwrap();
            exchange(client, &u, None, Duration::from_secs(5)).await
        })
    }

    #[test]
    fn http_answers() {
        let Fetch::Answer(a) = answer_to(b"HTTP/1.1 404 Not Found\r\nContent-Length: 32\r\nETag: x\r\n\r\nNo cache data for this platform.") else {
            panic!()
        };
        assert_eq!(a.status, 404);
        assert_eq!(a.body, b"No cache data for this platform.");
        assert_eq!(a.header("etag"), Some("x"));
        let Fetch::Answer(c) = answer_to(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n") else {
            panic!()
        };
        assert_eq!(c.body, b"abcde");
        assert!(matches!(
            answer_to(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Fetch::BadAnswer(_)
        ));
        assert!(matches!(
            answer_to(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort"),
            Fetch::BadAnswer(_)
        ));
        assert!(matches!(
            answer_to(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\nab"),
            Fetch::BadAnswer(_)
        ));
        assert_eq!(answer_to(b""), Fetch::ClosedWithoutAnswer);
    }

    /// Issue 14.7: a sign in the status code or a chunk size, and a chunk not followed
    /// by CRLF, were accepted by the hand-written parser.
    #[test]
    fn signs_and_missing_crlf_are_not_http() {
        for raw in [
            &b"HTTP/1.1 +200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        ] {
            let f = answer_to(raw);
            assert!(
                matches!(f, Fetch::BadAnswer(_)),
                "{:?}: {f:?}",
                String::from_utf8_lossy(raw)
            );
        }
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
