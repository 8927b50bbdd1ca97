//! `cchost run` finishes or rolls back a step an earlier, killed run left half done,
//! before it serves anything: the journal's promise holds for the daemon too.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cchost::host::HostRoot;
use cchost::journal::{FILE_KIND, FileChange, FileRestore, Journal};

#[test]
fn run_rolls_back_an_interrupted_file_write_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["sys/module", "proc/sys", "dev/cpu"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let host = HostRoot::new(dir.path()).unwrap();
    let path = "/etc/modules-load.d/cchost.conf";
    host.write_atomic(path, b"old\n", 0o644).unwrap();
    {
        // An earlier run journaled the write, made it, and was killed before marking
        // it applied.
        let mut journal = Journal::open(&host).unwrap();
        journal
            .begin(
                FILE_KIND,
                path,
                FileChange {
                    path: path.into(),
                    contents: "new\n".into(),
                    mode: 0o644,
                },
                FileRestore {
                    path: path.into(),
                    original: Some("old\n".into()),
                    mode: 0o644,
                },
            )
            .unwrap();
        host.write_atomic(path, b"new\n", 0o644).unwrap();
    }

    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[device_plugin]\nrescan_interval_s = 0\n[labels]\nbackend = \"off\"\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Wait for the whole recovery (file restored, then the entry dropped): a SIGTERM
    // before cchost installs its handler ends it at once, between the two steps.
    while (host.read_string(path).unwrap() != "old\n" || !Journal::peek(&host).unwrap().is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(host.read_string(path).unwrap(), "old\n", "{err}");
    // The rolled-back entry is gone: nothing is left for `undo` to do.
    assert!(Journal::peek(&host).unwrap().is_empty(), "{err}");
}
