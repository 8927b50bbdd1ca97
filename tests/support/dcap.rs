//! Shared helpers for the dcap_* integration tests: the stand-in QGS program and
//! polling without asserting on time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The stand-in QGS (examples/qgs_standin.rs). `cargo test --test X` does not build
/// examples, so it is built here once per test process (a no-op when up to date).
pub fn standin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/qgs_standin
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf();
    let bin = profile_dir.join("examples").join("qgs_standin");
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "--example", "qgs_standin"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // Cargo gives test processes CARGO_PKG_* and friends; build scripts (ring's)
            // track those variables, so passing them on would rebuild half the tree.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy().into_owned();
                let keep = ["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&k.as_str())
                    || [
                        "CARGO_BUILD_",
                        "CARGO_NET_",
                        "CARGO_REGISTR",
                        "CARGO_PROFILE_",
                        "CARGO_TERM_",
                    ]
                    .iter()
                    .any(|p| k.starts_with(p));
                if (k.starts_with("CARGO_") && !keep) || k == "OUT_DIR" {
                    cmd.env_remove(&k);
                }
            }
            let st = cmd.status().expect("cargo build --example qgs_standin");
            assert!(st.success(), "building the stand-in QGS failed");
        }
    });
    assert!(bin.exists(), "stand-in QGS not found at {}", bin.display());
    bin
}

/// A stand-in QGS process listening on `socket` (killed on drop).
pub struct StandIn {
    pub child: Child,
}

impl StandIn {
    pub fn start(socket: &Path, extra: &[&str]) -> Self {
        let child = Command::new(standin())
            .arg("--no-daemon")
            .arg("-n=2")
            .arg(format!("--socket={}", socket.display()))
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn stand-in");
        let mut s = StandIn { child };
        // Bound is not yet listening: wait until a connection is accepted.
        wait_for(
            || {
                if let Ok(Some(st)) = s.child.try_wait() {
                    panic!("stand-in QGS exited at start: {st}");
                }
                std::os::unix::net::UnixStream::connect(socket).is_ok()
            },
            "stand-in socket to accept",
        );
        s
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms; panics with `what` after a generous 30 s (a hang guard,
/// not a timing assertion).
pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// A host root in a temp dir with TDX on and the QGS socket directory.
pub fn tdx_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::create_dir_all(p.join("sys/module/kvm_intel/parameters")).unwrap();
    std::fs::write(p.join("sys/module/kvm_intel/parameters/tdx"), "Y\n").unwrap();
    std::fs::create_dir_all(p.join("var/run/tdx-qgs")).unwrap();
    std::fs::create_dir_all(p.join("etc")).unwrap();
    dir
}

/// A test CA and a server certificate for localhost / 127.0.0.1 signed by it.
pub struct TestPki {
    pub ca_pem: String,
    pub server_config: std::sync::Arc<rustls::ServerConfig>,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cchost test PCCS CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = KeyPair::generate().unwrap();
    let srv_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let srv_cert = srv_params.signed_by(&srv_key, &issuer).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(srv_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![srv_cert.der().clone()], key_der)
    .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        server_config: std::sync::Arc::new(config),
    }
}

/// What the fake PCCS does for one request path.
#[derive(Debug, Clone)]
pub enum Reply {
    Answer {
        status: u16,
        reason: &'static str,
        content_type: &'static str,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Hold the request (LAZY mode retrying an unreachable Intel PCS).
    Hang,
}

pub fn answer(status: u16, body: &str) -> Reply {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        461 => "unknown",
        502 => "Bad Gateway",
        _ => "Status",
    };
    Reply::Answer {
        status,
        reason,
        content_type: "text/html; charset=utf-8",
        headers: Vec::new(),
        body: body.to_string(),
    }
}

/// PCCS's literal strings (docs/facts/dcap.md#pccs-observed).
pub const NO_CACHE: &str = "No cache data for this platform.";
pub const UPSTREAM_FAIL: &str = "Unable to retrieve the collateral from the Intel SGX PCS.";
pub const NOT_FOUND_PLATFORM: &str = "The platform was not found in the cache.";

pub fn express_404(path: &str) -> Reply {
    answer(
        404,
        &format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot GET {path}</pre>\n</body>\n</html>\n"
        ),
    )
}

/// A fake PCCS over TLS on 127.0.0.1 (a random port). `route` maps a request path
/// (with query) to a reply. Like Node, it closes at once with 0 bytes when a
/// connection does not start with a TLS handshake.
pub async fn fake_pccs(
    pki: &TestPki,
    route: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
    let route = std::sync::Arc::new(route);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let route = route.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if tcp.peek(&mut first).await.ok() != Some(1) || first[0] != 0x16 {
                    drop(tcp);
                    return;
                }
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                let path = text.split(' ').nth(1).unwrap_or("/").to_string();
                match route(&path) {
                    Reply::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Reply::Answer {
                        status,
                        reason,
                        content_type,
                        headers,
                        body,
                    } => {
                        let mut head = format!(
                            "HTTP/1.1 {status} {reason}\r\nX-Powered-By: Express\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = tls.write_all(head.as_bytes()).await;
                        let _ = tls.write_all(body.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });
    addr
}

/// The committed TDX fixture host (8×H100, 4 NVSwitch) copied to a temp dir, with the
/// QGS socket directory added; a minimal TDX root when the fixture is not in this tree.
pub fn tdx_fixture_root() -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/tdx-8xh100-4nvswitch");
    if !fixture.is_dir() {
        return tdx_root();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // cp -a keeps the kernel-style symlinks exactly.
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", fixture.display()))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(st.success(), "copying the fixture failed");
    std::fs::create_dir_all(dir.path().join("var/run/tdx-qgs")).unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    dir
}
