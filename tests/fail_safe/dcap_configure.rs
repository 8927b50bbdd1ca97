//! Item 2: `dcap configure` never silently drops the operator's settings. Both files
//! are journaled, existing keys stay, `--dry-run` shows the diff, only what the failing
//! check names is touched, `undo` restores.

use crate::support::*;

const QCNL: &str = "{\n  \"pccs_url\": \"https://pccs.corp.example:8042/sgx/certification/v4/\",\n  \"use_secure_cert\": true,\n  \"custom_request_options\": {\"get_cert\": {\"headers\": {\"Ocp-Apim-Subscription-Key\": \"0123abcd\"}}}\n}\n";
const QGS: &str = "# tuned for this box\nport = 0\nnumber_threads = 16\n";

fn read(root: &std::path::Path, p: &str) -> Option<String> {
    std::fs::read_to_string(root.join(p)).ok()
}

#[test]
fn configure_keeps_the_operators_settings_and_undo_restores() {
    let root = copy_host(&fixture("host/tdx-8xh100-4nvswitch"));
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/sgx_default_qcnl.conf"), QCNL).unwrap();
    std::fs::write(r.join("etc/qgs.conf"), QGS).unwrap();

    let dry = cchost(r, &["dcap", "configure", "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{dry:?}");
    assert!(dry.stdout.contains("-port = 0"), "{}", dry.stdout);
    assert!(!dry.stdout.contains("localhost"), "{}", dry.stdout);
    assert_eq!(read(r, "etc/qgs.conf").as_deref(), Some(QGS));

    let run = cchost(r, &["dcap", "configure"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    // The remote PCCS URL and the API-key header are still there, byte for byte.
    assert_eq!(read(r, "etc/sgx_default_qcnl.conf").as_deref(), Some(QCNL));
    // Only the port line the check names went; the operator's threads and comment stay.
    assert_eq!(
        read(r, "etc/qgs.conf").as_deref(),
        Some("# tuned for this box\nnumber_threads = 16\n")
    );

    let undo = cchost(r, &["undo"]);
    assert_eq!(undo.code, Some(0), "{undo:?}");
    assert_eq!(read(r, "etc/qgs.conf").as_deref(), Some(QGS));
    assert_eq!(read(r, "etc/sgx_default_qcnl.conf").as_deref(), Some(QCNL));
}

#[test]
fn configure_writes_missing_files_journaled_and_undo_removes_them() {
    let root = copy_host(&fixture("host/tdx-8xh100-4nvswitch"));
    let r = root.path();
    let run = cchost(r, &["dcap", "configure"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(read(r, "etc/qgs.conf").is_some());
    assert!(read(r, "etc/sgx_default_qcnl.conf").is_some());
    let undo = cchost(r, &["undo"]);
    assert_eq!(undo.code, Some(0), "{undo:?}");
    assert!(read(r, "etc/qgs.conf").is_none());
    assert!(read(r, "etc/sgx_default_qcnl.conf").is_none());
}
