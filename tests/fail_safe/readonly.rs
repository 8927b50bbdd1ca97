//! Item 14: read-only commands write nothing. Each runs on a copy of every fixture host
//! whose every file (content, mode, symlink target, modification time) is recorded
//! before and compared after, byte for byte. The modification time catches a write
//! that puts the same bytes back (waking a GPU through `power/control` and restoring
//! it): on a real host that write is the change (the GPU woke).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::support::*;

/// What is recorded of one node: mode, modification time (s, ns), content or link
/// target.
type Node = (u32, (i64, i64), Vec<u8>);

/// Everything under `root`: path -> (mode, mtime, content or link target).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let mode = (meta.permissions().mode(), (meta.mtime(), meta.mtime_nsec()));
            if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(
                    rel,
                    (mode.0, mode.1, t.into_os_string().into_encoded_bytes()),
                );
            } else if meta.is_dir() {
                out.insert(rel, (mode.0, mode.1, b"<dir>".to_vec()));
                walk(root, &p, out);
            } else if meta.is_file() {
                out.insert(rel, (mode.0, mode.1, std::fs::read(&p).unwrap()));
            } else {
                out.insert(rel, (mode.0, mode.1, b"<special>".to_vec()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn differences(a: &BTreeMap<PathBuf, Node>, b: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let mut d = Vec::new();
    for (p, v) in a {
        match b.get(p) {
            None => d.push(format!("removed {}", p.display())),
            Some(w) if w.2 != v.2 || w.0 != v.0 => d.push(format!(
                "changed {}: {:?} -> {:?}",
                p.display(),
                String::from_utf8_lossy(&v.2),
                String::from_utf8_lossy(&w.2)
            )),
            Some(w) if w.1 != v.1 => d.push(format!(
                "written {} (same content, new modification time)",
                p.display()
            )),
            Some(_) => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        d.push(format!("created {}", p.display()));
    }
    d
}

/// Gives every NVIDIA function runtime-PM files as an idle GPU on vfio-pci has them:
/// runtime-suspended, `control` = `auto`. Returns how many.
fn suspend_nvidia_functions(root: &Path) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(root.join("sys/bus/pci/devices")) else {
        return 0;
    };
    for e in rd {
        let d = e.unwrap().path();
        let nvidia = std::fs::read_to_string(d.join("vendor")).is_ok_and(|v| v.trim() == "0x10de");
        if nvidia && !d.join("power/control").exists() {
            std::fs::create_dir_all(d.join("power")).unwrap();
            std::fs::write(d.join("power/runtime_status"), "suspended\n").unwrap();
            std::fs::write(d.join("power/control"), "auto\n").unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn read_only_commands_leave_every_fixture_host_byte_for_byte() {
    let out_dir = tempfile::tempdir().unwrap();
    let cfg = config("");
    let mut failures = Vec::new();
    for src in fixture_hosts() {
        let root = copy_host(&src);
        suspend_nvidia_functions(root.path());
        let capture_to = out_dir.path().join(src.file_name().unwrap());
        let capture_arg = capture_to.to_string_lossy().into_owned();
        let commands: Vec<Vec<&str>> = vec![
            vec!["check"],
            vec!["check", "--json"],
            vec!["inventory", "--json"],
            vec!["plan"],
            vec!["gpu", "list"],
            vec!["gpu", "cc", "query"],
            vec!["cdi", "generate", "--stdout"],
            vec!["dcap", "status"],
            vec!["render", "machineconfig", "--platform", "tdx", "--gpu"],
            vec!["capture", &capture_arg],
        ];
        for args in &commands {
            // Against the state right before this command: each one answers for itself.
            let before = snapshot(root.path());
            let run = cchost_with(root.path(), cfg.path(), args);
            assert_ne!(run.code, Some(101), "{args:?}: {run:?}");
            let after = snapshot(root.path());
            let diff = differences(&before, &after);
            if !diff.is_empty() {
                failures.push(format!(
                    "{} `cchost {}`: {diff:?}",
                    src.display(),
                    args.join(" ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `plan` never wakes a runtime-suspended GPU (a write of power/control): it says the
/// CC mode was not read, and why.
#[test]
fn plan_says_it_did_not_wake_a_suspended_gpu() {
    let root = copy_host(&fixture("host/gpus-on-vfio"));
    assert!(
        suspend_nvidia_functions(root.path()) > 0,
        "no NVIDIA function in the fixture"
    );
    let before = snapshot(root.path());
    let run = cchost(root.path(), &["plan"]);
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
    assert!(run.stderr.contains("runtime-suspended"), "{run:?}");
}

/// `gpu cc query` does not wake a runtime-suspended GPU unless told to: without `--wake`
/// it names each one as not read and writes nothing; with `--wake` it writes
/// `power/control` and puts back exactly what was there.
#[test]
fn gpu_cc_query_wakes_only_when_asked_and_restores_power_control() {
    let root = copy_host(&fixture("host/gpus-on-vfio"));
    assert!(
        suspend_nvidia_functions(root.path()) > 0,
        "no NVIDIA function in the fixture"
    );
    let before = snapshot(root.path());
    let run = cchost(root.path(), &["gpu", "cc", "query"]);
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
    assert!(
        run.stdout
            .contains("not read: GPU is runtime-suspended (pass --wake to wake it)"),
        "{run:?}"
    );
    let run = cchost(root.path(), &["gpu", "cc", "query", "--wake"]);
    assert_ne!(run.code, Some(101), "{run:?}");
    let after = snapshot(root.path());
    let diff = differences(&before, &after);
    assert!(!diff.is_empty(), "--wake wrote nothing: {run:?}");
    for d in &diff {
        assert!(
            d.starts_with("written ") && d.contains("power/control"),
            "--wake changed more than the timestamps of power/control: {d}"
        );
    }
    assert!(
        !run.stdout.contains("runtime-suspended"),
        "--wake did not wake: {run:?}"
    );
}
