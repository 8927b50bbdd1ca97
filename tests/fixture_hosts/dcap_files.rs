//! The files under dcap/: examples equal what cchost writes, and every manifest is valid
//! YAML with the shape the DCAP layout needs.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cchost::config::{DcapConfig, QgsTransport};
use cchost::dcap::files::{self, QcnlConf, QgsConf};
use serde_norway::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dcap")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(dir().join(rel)).unwrap_or_else(|e| panic!("dcap/{rel}: {e}"))
}

#[test]
fn examples_are_what_configure_writes() {
    let cfg = DcapConfig::default();
    assert_eq!(read("qgs.conf"), files::render_qgs_conf(&cfg));
    assert_eq!(
        QgsConf::parse(Path::new("qgs.conf"), &read("qgs.conf")).port,
        None
    );
    let vsock = DcapConfig {
        transport: QgsTransport::Vsock,
        ..Default::default()
    };
    assert_eq!(read("qgs.vsock.conf"), files::render_qgs_conf(&vsock));
    let qcnl = read("sgx_default_qcnl.conf");
    assert_eq!(qcnl, files::render_qcnl(&cfg, None));
    serde_json::from_str::<serde_json::Value>(&qcnl).expect("strict JSON");
    let parsed = QcnlConf::parse(Path::new("q"), &qcnl).unwrap();
    assert_eq!(parsed.use_secure_cert, Some(true));
}

#[test]
fn systemd_drop_in_removes_the_stale_socket_as_root() {
    let d = read("systemd/qgsd.service.d/10-cchost.conf");
    assert!(d.contains("[Service]"));
    assert!(d.contains("ExecStartPre=+/bin/rm -f /var/run/tdx-qgs/qgs.socket"));
    assert!(d.contains("Restart=always"));
}

fn docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    let mut out = Vec::new();
    for de in serde_norway::Deserializer::from_str(&text) {
        let v = Value::deserialize(de).unwrap_or_else(|e| panic!("dcap/{rel}: {e}"));
        for key in ["apiVersion", "kind"] {
            assert!(
                v[key].as_str().is_some(),
                "dcap/{rel}: a document without {key}"
            );
        }
        assert!(
            v["metadata"]["name"].as_str().is_some(),
            "dcap/{rel}: no metadata.name"
        );
        out.push(v);
    }
    assert!(!out.is_empty(), "dcap/{rel}: no documents");
    out
}

use serde::Deserialize;

fn kind<'a>(docs: &'a [Value], k: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(k) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {k} {name}"))
}

#[test]
fn pccs_manifest_service_reaches_the_deployment() {
    let d = docs("kubernetes/pccs.yaml");
    let dep = kind(&d, "Deployment", "pccs");
    let svc = kind(&d, "Service", "pccs-service");
    assert_eq!(
        svc["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"],
        "Service selector must match the pod labels"
    );
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["name"], svc["spec"]["ports"][0]["targetPort"]);
    // The TLS secret is mounted where PCCS looks for ssl_key/.
    assert_eq!(
        c["volumeMounts"][0]["mountPath"].as_str(),
        Some("/opt/intel/pccs/ssl_key")
    );
    kind(&d, "Secret", "pccs-secrets");
    kind(&d, "Secret", "pccs-tls");
}

#[test]
fn qgs_daemonset_runs_on_tdx_nodes_with_the_socket_dir() {
    let d = docs("kubernetes/cchost-qgs.yaml");
    let ds = kind(&d, "DaemonSet", "cchost-qgs");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"]["intel.feature.node.kubernetes.io/tdx"].as_str(),
        Some("true")
    );
    let vols = pod["volumes"].as_sequence().unwrap();
    assert!(
        vols.iter()
            .any(|v| v["hostPath"]["path"].as_str() == Some("/var/run/tdx-qgs"))
    );
    let c = &pod["containers"][0];
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"].as_str() == Some("/var/run/tdx-qgs"))
    );
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"].as_str() == Some("/host"))
    );
    // The embedded cchost config is valid and selects child supervision.
    let cm = kind(&d, "ConfigMap", "cchost-dcap");
    let toml_text = cm["data"]["config.toml"].as_str().unwrap();
    let cfg = cchost::config::Config::from_toml(toml_text, Path::new("config.toml")).unwrap();
    assert_eq!(
        cfg.dcap.supervise.mode,
        cchost::config::SuperviseMode::Child
    );
    assert_eq!(
        cfg.dcap.pccs.ca_bundle.as_deref(),
        Some(Path::new("/etc/cchost/pccs-ca.pem"))
    );
    kind(&d, "Secret", "pccs-ca");
}
