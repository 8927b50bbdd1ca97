//! The binary: `render machineconfig` prints the committed files; `plan`/`apply`/`undo`
//! on a temp host tree (modules-load.d through the journal).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn cchost(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(root)
        .arg("--config")
        .arg(root.join("cchost.toml"))
        .args(args)
        .output()
        .unwrap()
}

fn host() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let w = |p: &str, t: &str| {
        let f = dir.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, t).unwrap();
    };
    w(
        "cchost.toml",
        "[kernel]\nprofile = \"none\"\nmechanism = \"none\"\n",
    );
    w("proc/cmdline", "BOOT_IMAGE=/vmlinuz ro quiet\n");
    // The rest of a whole host (cchost refuses a root without sys/, proc/, dev/).
    w("sys/kernel/osrelease", "6.8.0\n");
    w("dev/null", "");
    w(
        "proc/modules",
        "vhost_vsock 24576 0 - Live 0x0000000000000000\nvsock 57344 1 vhost_vsock, Live 0x0000000000000000\n",
    );
    w("dev/vhost-vsock", "");
    dir
}

#[test]
fn render_prints_the_committed_machineconfig() {
    let dir = host();
    let out = cchost(
        dir.path(),
        &[
            "render",
            "machineconfig",
            "--platform",
            "tdx",
            "--gpu",
            "--role",
            "master",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("machineconfigs/99-cchost-tdx-gpu-master.yaml"),
    )
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
    let bad = cchost(
        dir.path(),
        &["render", "machineconfig", "--platform", "sgx"],
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn plan_apply_undo_of_the_modules_file() {
    let dir = host();
    let plan = cchost(dir.path(), &["plan", "--json"]);
    assert_eq!(
        plan.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(v["actions"][0]["action"], "persist-modules", "{v:#}");
    assert_eq!(v["actions"].as_array().unwrap().len(), 1, "{v:#}");

    let dry = cchost(dir.path(), &["apply", "--dry-run"]);
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run: nothing changed"));
    let file = dir.path().join("etc/modules-load.d/cchost.conf");
    assert!(!file.exists());

    let apply = cchost(dir.path(), &["apply"]);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "vhost_vsock\n");
    let journal = std::fs::read_to_string(dir.path().join("var/lib/cchost/journal.json")).unwrap();
    assert!(
        journal.contains("/etc/modules-load.d/cchost.conf"),
        "{journal}"
    );

    let plan = cchost(dir.path(), &["plan"]);
    assert_eq!(plan.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&plan.stdout).contains("Nothing to change."));

    let undo = cchost(dir.path(), &["undo"]);
    assert!(
        undo.status.success(),
        "{}",
        String::from_utf8_lossy(&undo.stderr)
    );
    assert!(!file.exists());
}

#[test]
fn unknown_kernel_key_is_named() {
    let dir = host();
    std::fs::write(
        dir.path().join("cchost.toml"),
        "[kernel]\nprofil = \"tdx\"\n",
    )
    .unwrap();
    let out = cchost(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("profil") && err.contains("cchost.toml"),
        "{err}"
    );
}
