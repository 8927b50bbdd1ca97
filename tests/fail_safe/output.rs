//! Item 9: output behaves. A reader that closed its end (`| head -1`) gets no panic and
//! no exit 101; no ANSI colour in a log that is not a terminal; `--log-format json`
//! makes the fatal error JSON too; `plan` documents its exit code 1.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

/// Runs with stdout a pipe whose read end is already closed (every write: EPIPE).
fn with_closed_stdout(root: &std::path::Path, cfg: &std::path::Path, args: &[&str]) -> Run {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read);
    let mut c = cchost_cmd(root, cfg, args);
    c.stdout(Stdio::from(write)).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{args:?} hangs"))
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_closed_stdout_is_no_panic_for_any_command() {
    let root = copy_host(&fixture("host/gpus-on-vfio"));
    let cfg = config("");
    let commands: &[&[&str]] = &[
        &["gpu", "list"],
        &["gpu", "list", "--json"],
        &["plan"],
        &["plan", "--json"],
        &["apply", "--dry-run"],
        &["cdi", "generate", "--stdout"],
        &["cdi", "generate"],
        &["dcap", "status"],
        &["render", "machineconfig", "--platform", "tdx", "--gpu"],
        &["undo"],
        &["undo", "--dry-run"],
        &["check"],
        &["inventory"],
    ];
    for args in commands {
        let run = with_closed_stdout(root.path(), cfg.path(), args);
        assert_ne!(run.code, Some(101), "{args:?}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {run:?}");
        assert!(run.code.is_some(), "{args:?} was killed: {run:?}");
    }
}

#[test]
fn no_ansi_colour_when_stderr_is_not_a_terminal() {
    let root = copy_host(&fixture("host/tdx-module-failed"));
    let cfg = config("");
    let mut c = cchost_cmd(root.path(), cfg.path(), &["plan"]);
    c.env("CCHOST_LOG", "debug");
    let run = run_with_deadline(c, Duration::from_secs(30));
    assert!(!run.stderr.is_empty(), "nothing logged: {run:?}");
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
}

#[test]
fn json_log_format_makes_the_fatal_error_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("");
    let run = cchost_with(
        &dir.path().join("missing"),
        cfg.path(),
        &["--log-format", "json", "check"],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    let line = run.stderr.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {:?}", run.stderr));
    assert_eq!(v["level"], "ERROR");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("host root"),
        "{v}"
    );
}

#[test]
fn plan_documents_its_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let run = cchost(dir.path(), &["plan", "--help"]);
    assert_eq!(run.code, Some(0));
    let text = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("1: `apply` has work to do"), "{}", run.stdout);
}
