//! `cchost dcap status` and `configure` end to end: the binary on a host without TDX,
//! and on the TDX fixture host with the stand-in QGS and a fake PCCS (a readable chain).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use crate::support::check_json::find_check;
use crate::support::dcap::*;

fn cchost() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cchost"));
    c.env_remove("CCHOST_CONFIG").env_remove("CCHOST_HOST_ROOT");
    c
}

fn run(c: &mut Command) -> (i32, String) {
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn no_tdx_host_says_so_plainly() {
    let root = tempfile::tempdir().unwrap();
    // A whole host without TDX (an empty root is refused as not a host).
    for d in ["sys/module", "proc/sys", "dev/cpu"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    let cfg = root.path().join("c.toml");
    std::fs::write(&cfg, "").unwrap();
    let (code, out) = run(cchost()
        .arg("--host-root")
        .arg(root.path())
        .arg("--config")
        .arg(&cfg)
        .args(["dcap", "status"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not applicable"), "{out}");
    assert!(out.contains("no TDX on this host"), "{out}");
    assert!(out.contains("no QGS here"), "{out}");
    let (code, out) = run(cchost()
        .arg("--host-root")
        .arg(root.path())
        .arg("--config")
        .arg(&cfg)
        .args(["dcap", "status", "--json"]));
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["applicable"], false);
    assert_eq!(v["tdx"], false);
}

/// An OFFLINE PCCS that has this platform registered and collateral cached.
fn registered(path: &str) -> Reply {
    let p = path.split('?').next().unwrap_or("");
    let json = |body: String| Reply::Answer {
        status: 200,
        reason: "OK",
        content_type: "application/json; charset=utf-8",
        headers: vec![],
        body,
    };
    match p {
        "/sgx/certification/v4/rootcacrl" => answer(200, "308201"),
        "/tdx/certification/v4/qe/identity" => json(
            r#"{"enclaveIdentity":{"id":"TD_QE","nextUpdate":"2099-01-01T00:00:00Z"},"signature":"00"}"#.into(),
        ),
        "/tdx/certification/v4/tcb" => json(
            r#"{"tcbInfo":{"id":"TDX","nextUpdate":"2099-01-01T00:00:00Z"},"signature":"00"}"#.into(),
        ),
        "/sgx/certification/v4/pckcert" if path.contains(&"5e".repeat(16)) => Reply::Answer {
            status: 200,
            reason: "OK",
            content_type: "application/x-pem-file",
            headers: vec![("SGX-FMSPC".into(), "00806F050000".into())],
            body: "-----BEGIN CERTIFICATE-----\n".into(),
        },
        "/sgx/certification/v4/pckcert" => answer(461, NOT_FOUND_PLATFORM),
        _ => express_404(p),
    }
}

#[test]
fn tdx_host_shows_the_chain_qgs_to_pccs() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pki = test_pki();
    let addr = rt.block_on(fake_pccs(&pki, registered));
    let root = tdx_fixture_root();
    std::fs::write(root.path().join("pccs-ca.pem"), &pki.ca_pem).unwrap();
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[dcap.pccs]\nurl = \"https://localhost:{}/sgx/certification/v4/\"\nca_bundle = \"/pccs-ca.pem\"\n",
            addr.port()
        ),
    )
    .unwrap();
    let base = || {
        let mut c = cchost();
        c.arg("--host-root")
            .arg(root.path())
            .arg("--config")
            .arg(&cfg);
        c
    };
    // Before configure / QGS: not ready, and the output says why.
    let (code, out) = run(base().args(["dcap", "status"]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] qgs"), "{out}");
    assert!(out.contains("no socket there"), "{out}");

    let (code, out) = run(base().args(["dcap", "configure"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("wrote"), "{out}");
    let qgs_conf = std::fs::read_to_string(root.path().join("etc/qgs.conf")).unwrap();
    assert!(
        !qgs_conf.lines().any(|l| l.starts_with("port")),
        "{qgs_conf}"
    );
    let (_, out) = run(base().args(["dcap", "configure"]));
    assert!(out.contains("unchanged"), "{out}");

    let _qgs = StandIn::start(&root.path().join("var/run/tdx-qgs/qgs.socket"), &[]);
    // QCNL trusts only the host store: a CA given to cchost alone is a WARN.
    let (_, out) = run(base().args(["dcap", "status"]));
    assert!(out.contains("[WARN] qcnl.trust"), "{out}");
    std::fs::create_dir_all(root.path().join("etc/ssl/certs")).unwrap();
    std::fs::write(
        root.path().join("etc/ssl/certs/ca-certificates.crt"),
        format!("{}{}", test_pki().ca_pem, pki.ca_pem),
    )
    .unwrap();
    let (code, out) = run(base().args(["dcap", "status"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[PASS] qcnl.trust"), "{out}");
    for want in [
        "[PASS] tdx",
        "[PASS] qgs.conf",
        "[PASS] qgs ",
        &format!("QE ID {}", "5e".repeat(16)),
        "[PASS] qcnl",
        "[PASS] pccs ",
        "[PASS] pccs.pckcert",
        "SGX-FMSPC: 00806F050000",
        "[PASS] pccs.tcb_info",
        "[PASS] qgs.collateral",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Shown with --nocapture (the example in docs/dcap.md).
    println!("{out}");
    // The chain reads in order: QGS before PCCS.
    assert!(out.find("[PASS] qgs ").unwrap() < out.find("[PASS] pccs ").unwrap());

    // QGS answering 0x12001 while PCCS is fine: the collateral line says where to look.
    drop(_qgs);
    // A killed QGS leaves its socket file behind.
    std::fs::remove_file(root.path().join("var/run/tdx-qgs/qgs.socket")).unwrap();
    let _qgs = StandIn::start(
        &root.path().join("var/run/tdx-qgs/qgs.socket"),
        &["--mode=error"],
    );
    let (code, out) = run(base().args(["dcap", "status", "--json"]));
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["applicable"], true);
    let items = v["items"].as_array().unwrap();
    let qgs = items.iter().find(|i| i["id"] == "qgs").unwrap();
    assert_eq!(qgs["level"], "FAIL");
    assert!(
        qgs["summary"].as_str().unwrap().contains("0x12001"),
        "{qgs}"
    );
}

#[test]
fn check_has_a_dcap_subtree_on_tdx_hosts() {
    let root = tdx_fixture_root();
    let cfg = root.path().join("c.toml");
    // A PCCS port nobody listens on (just freed): a known, fast answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &cfg,
        format!("[dcap.pccs]\nurl = \"https://127.0.0.1:{port}/sgx/certification/v4/\"\n"),
    )
    .unwrap();
    let _qgs = StandIn::start(&root.path().join("var/run/tdx-qgs/qgs.socket"), &[]);
    let (_, out) = run(cchost()
        .arg("--host-root")
        .arg(root.path())
        .arg("--config")
        .arg(&cfg)
        .args(["check", "--profile", "tdx", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let qgs =
        find_check(&v["checks"], "dcap.qgs").unwrap_or_else(|| panic!("no dcap.qgs in {out}"));
    assert_eq!(qgs["status"], "pass", "{qgs}");
    let pccs = find_check(&v["checks"], "dcap.pccs").unwrap();
    assert_eq!(pccs["status"], "fail", "{pccs}");
    assert!(
        pccs["message"]
            .as_str()
            .unwrap()
            .contains("nothing listening"),
        "{pccs}"
    );
    assert_eq!(v["ready"], false);
}
