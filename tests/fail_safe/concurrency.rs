//! Item 7: concurrency is explicit. One `cchost run` per host root; a journal lock wait
//! says so and gives up; a failed unbind leaves no half-done journal entry.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

fn journal_entries(root: &std::path::Path) -> Vec<serde_json::Value> {
    match std::fs::read(root.join("var/lib/cchost/journal.json")) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b).unwrap()["entries"]
            .as_array()
            .unwrap()
            .clone(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_second_run_is_refused_and_leaves_the_first_ones_status_file() {
    let root = copy_host(&fixture("host/gpus-on-vfio"));
    let cfg = config("[labels]\nbackend = \"off\"\n[device_plugin]\nrescan_interval_s = 0\n");
    let mut first = cchost_cmd(root.path(), cfg.path(), &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = root.path().join("run/cchost/passthrough.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(status.exists(), "the first run wrote no status file");
    let second = cchost_with(root.path(), cfg.path(), &["run"]);
    let pid = nix::unistd::Pid::from_raw(first.id() as i32);
    let still_there = status.exists();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = first.wait();
    assert_eq!(second.code, Some(2), "{second:?}");
    assert!(second.stderr.contains("already running"), "{second:?}");
    assert!(
        still_there,
        "the second run removed the first one's status file"
    );
}

#[test]
fn a_journal_lock_wait_says_so_and_gives_up() {
    let root = copy_host(&fixture("host/gpus-on-vfio"));
    let host = cchost::host::HostRoot::new(root.path()).unwrap();
    let held = cchost::journal::Journal::open(&host).unwrap();
    let cfg = config("");
    let start = Instant::now();
    let run = cchost_with(
        root.path(),
        cfg.path(),
        &["--lock-wait", "1", "gpu", "unbind", "--all"],
    );
    let took = start.elapsed();
    drop(held);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("waiting"),
        "it did not say it waits: {run:?}"
    );
    assert!(
        run.stderr.contains("another cchost process holds"),
        "{run:?}"
    );
    assert!(took < Duration::from_secs(15), "gave up after {took:?}");
}

#[test]
fn a_failed_unbind_leaves_no_half_done_entry_and_names_the_driver() {
    // In a fixture tree a write to driver/unbind changes nothing: the unbind fails.
    let root = copy_host(&fixture("host/gpus-on-vfio"));
    let run = cchost(root.path(), &["gpu", "unbind", "--all"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(!run.stderr.contains("(none)"), "{run:?}");
    assert!(
        run.stderr.contains("still on") && run.stderr.contains("vfio-pci"),
        "{run:?}"
    );
    assert_eq!(
        journal_entries(root.path()),
        Vec::<serde_json::Value>::new()
    );
}
