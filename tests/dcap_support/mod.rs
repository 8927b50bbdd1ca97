//! Shared helpers for the dcap_* integration tests: the stand-in QGS program and
//! polling without asserting on time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The stand-in QGS (examples/qgs_standin.rs). `cargo test` builds examples; a run
/// limited to one test target builds it here.
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
        if !bin.exists() {
            let st = Command::new(env!("CARGO"))
                .args(["build", "--example", "qgs_standin"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo build --example qgs_standin");
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
        let s = StandIn { child };
        wait_for(|| socket.exists(), "stand-in socket to appear");
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
