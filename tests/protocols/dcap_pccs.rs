//! The PCCS probe against local servers that behave as a real PCCS was observed to
//! (docs/facts/dcap.md#pccs-observed): TLS with a self-signed CA, plain TCP that closes, a server
//! that hangs, a plain-HTTP server, nothing listening.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::dcap::*;
use cchost::config::Secret;
use cchost::dcap::pccs::{self, ProbeSettings, Trust, Url, Verdict};

fn settings(pki: &TestPki, base: &str) -> ProbeSettings {
    ProbeSettings {
        base: Url::parse(base).unwrap(),
        trust: Trust::Roots {
            source: "test CA".into(),
            pem: pki.ca_pem.clone().into_bytes(),
        },
        connect_timeout: Duration::from_secs(5),
        answer_timeout: Duration::from_millis(700),
        api_key: None,
    }
}

async fn verdict(s: &ProbeSettings, path: &str) -> (Verdict, String) {
    let p = pccs::probe(s, &s.base.with_path(path)).await;
    (p.verdict, p.message)
}

/// An OFFLINE/REQ PCCS with an empty cache.
fn offline_empty(path: &str) -> Reply {
    let p = path.split('?').next().unwrap_or("");
    match p {
        "/sgx/certification/v4/rootcacrl"
        | "/tdx/certification/v4/qe/identity"
        | "/sgx/certification/v4/pckcrl"
        | "/tdx/certification/v4/tcb" => answer(404, NO_CACHE),
        "/sgx/certification/v4/pckcert" => answer(461, NOT_FOUND_PLATFORM),
        _ => express_404(p),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_cache_and_wrong_url_are_told_apart() {
    let pki = test_pki();
    let addr = fake_pccs(&pki, offline_empty).await;
    let s = settings(
        &pki,
        &format!("https://127.0.0.1:{}/sgx/certification/v4/", addr.port()),
    );
    let (v, m) = verdict(&s, "/sgx/certification/v4/rootcacrl").await;
    assert_eq!(v, Verdict::NoCacheData, "{m}");
    assert!(m.contains("PCCS up, cache empty"), "{m}");
    let (v, m) = verdict(&s, "/sgx/certification/v3/rootcacrlx").await;
    assert_eq!(v, Verdict::WrongUrl, "{m}");
    let (v, _) = verdict(&s, "/sgx/certification/v4/pckcert?qeid=00").await;
    assert_eq!(v, Verdict::PlatformUnknown);
    // The name in the certificate works too.
    let s = settings(
        &pki,
        &format!("https://localhost:{}/sgx/certification/v4/", addr.port()),
    );
    assert_eq!(
        verdict(&s, "/sgx/certification/v4/rootcacrl").await.0,
        Verdict::NoCacheData
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_mode_hang_is_reported_without_waiting_for_it() {
    let pki = test_pki();
    let addr = fake_pccs(&pki, |p| {
        if p.ends_with("rootcacrl") {
            Reply::Hang
        } else {
            answer(502, UPSTREAM_FAIL)
        }
    })
    .await;
    let s = settings(
        &pki,
        &format!("https://127.0.0.1:{}/sgx/certification/v4/", addr.port()),
    );
    let (v, m) = verdict(&s, "/sgx/certification/v4/rootcacrl").await;
    assert_eq!(v, Verdict::UpstreamHangSuspected, "{m}");
    assert!(
        m.contains("PCCS up") && m.contains("TLS handshake done"),
        "{m}"
    );
    assert!(v.pccs_up());
    // The 502 a LAZY PCCS finally sends.
    let (v, m) = verdict(&s, "/tdx/certification/v4/qe/identity").await;
    assert_eq!(v, Verdict::UpstreamUnreachable, "{m}");
    assert!(m.contains("PCCS up, upstream unreachable"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trust_is_enforced_unless_turned_off() {
    let pki = test_pki();
    let addr = fake_pccs(&pki, offline_empty).await;
    let base = format!("https://127.0.0.1:{}/sgx/certification/v4/", addr.port());
    let mut s = settings(&pki, &base);
    // A CA that did not sign the server certificate.
    s.trust = Trust::Roots {
        source: "other".into(),
        pem: test_pki().ca_pem.into_bytes(),
    };
    let (v, m) = verdict(&s, "/sgx/certification/v4/rootcacrl").await;
    assert_eq!(v, Verdict::Untrusted, "{m}");
    assert!(m.contains("ca_bundle"), "{m}");
    // use_secure_cert = false: accepted.
    s.trust = Trust::Insecure;
    assert_eq!(
        verdict(&s, "/sgx/certification/v4/rootcacrl").await.0,
        Verdict::NoCacheData
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_and_nothing_listening() {
    let pki = test_pki();
    // Plain HTTP to the TLS port: the server closes with 0 bytes (as Node does).
    let addr = fake_pccs(&pki, offline_empty).await;
    let s = settings(
        &pki,
        &format!("http://127.0.0.1:{}/sgx/certification/v4/", addr.port()),
    );
    let (v, m) = verdict(&s, "/sgx/certification/v4/rootcacrl").await;
    assert_eq!(v, Verdict::Closed, "{m}");
    assert!(m.contains("plain HTTP sent to a TLS port"), "{m}");

    // A TCP server that accepts and closes: TLS sees the peer close in the handshake.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            drop(c);
        }
    });
    let s = settings(
        &pki,
        &format!("https://127.0.0.1:{port}/sgx/certification/v4/"),
    );
    let (v, m) = verdict(&s, "/sgx/certification/v4/rootcacrl").await;
    assert_eq!(v, Verdict::Closed, "{m}");

    // A plain-HTTP server on the URL's port: not TLS.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut c, _)) = l.accept().await {
            let mut b = [0u8; 512];
            let _ = c.read(&mut b).await;
            let _ = c
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let s = settings(
        &pki,
        &format!("https://127.0.0.1:{port}/sgx/certification/v4/"),
    );
    let (v, m) = verdict(&s, "/sgx/certification/v4/rootcacrl").await;
    assert_eq!(v, Verdict::NotTls, "{m}");

    // Nothing listening: a port that was just freed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = settings(
        &pki,
        &format!("https://127.0.0.1:{port}/sgx/certification/v4/"),
    );
    let (v, m) = verdict(&s, "/sgx/certification/v4/rootcacrl").await;
    assert_eq!(v, Verdict::NothingListening, "{m}");
    assert!(!v.pccs_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filled_cache_answers_and_the_key_is_not_shown() {
    let pki = test_pki();
    let addr = fake_pccs(&pki, |p| {
        if p.ends_with("qe/identity") {
            Reply::Answer {
                status: 200,
                reason: "OK",
                content_type: "application/json; charset=utf-8",
                headers: vec![("SGX-Enclave-Identity-Issuer-Chain".into(), "-----BEGIN%20CERTIFICATE-----".into())],
                body: r#"{"enclaveIdentity":{"id":"TD_QE","nextUpdate":"2030-01-01T00:00:00Z"},"signature":"ab"}"#.into(),
            }
        } else {
            answer(200, "3082")
        }
    })
    .await;
    let mut s = settings(
        &pki,
        &format!("https://127.0.0.1:{}/sgx/certification/v4/", addr.port()),
    );
    s.api_key = Some(Secret::new("k-123".into()));
    let qe = pccs::tdx_url(&s.base, "qe/identity");
    let p = pccs::probe(&s, &qe).await;
    assert_eq!(p.verdict, Verdict::Ok, "{}", p.message);
    let a = p.answer.unwrap();
    assert!(a.header("sgx-enclave-identity-issuer-chain").is_some());
    let e = cchost::dcap::collateral::next_update(&a.body, 0).unwrap();
    assert_eq!(e.next_update, "2030-01-01T00:00:00Z");
    assert!(!format!("{s:?}").contains("k-123"));
}
