//! Running the real binary on a copy of a fixture host, with a deadline.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The fixture hosts of the repository (tests/host/*, tests/host-captured/*).
pub fn fixture_hosts() -> Vec<PathBuf> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut out = Vec::new();
    for dir in ["host", "host-captured"] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(base.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        out.extend(v);
    }
    assert!(out.len() >= 8, "fixture hosts: {out:?}");
    out
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// A private copy of a fixture tree (symlinks kept as they are).
pub fn copy_host(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

/// Replaces a host file with a FIFO.
pub fn plant_fifo(root: &Path, host_path: &str) {
    let p = root.join(host_path.trim_start_matches('/'));
    let _ = std::fs::remove_file(&p);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A config file outside the host tree.
pub fn config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// The binary with `--host-root root --config cfg`, environment cleared of cchost's
/// variables.
pub fn cchost_cmd(root: &Path, cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cchost"));
    c.arg("--host-root")
        .arg(root)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("CCHOST_CONFIG")
        .env_remove("CCHOST_HOST_ROOT")
        .env_remove("CCHOST_LOG")
        .stdin(Stdio::null());
    c
}

/// Runs the command and kills it after `limit` (then the test fails, naming it).
pub fn run_with_deadline(mut c: Command, limit: Duration) -> Run {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!("{c:?}");
    let child = c.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let start = Instant::now();
    match rx.recv_timeout(limit) {
        Ok(out) => Run::from(out.unwrap()),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} still running after {:?}: it hangs", start.elapsed());
        }
    }
}

/// `cchost <args>` on `root` with an empty config, 20 s at most.
pub fn cchost(root: &Path, args: &[&str]) -> Run {
    let cfg = config("");
    cchost_with(root, cfg.path(), args)
}

pub fn cchost_with(root: &Path, cfg: &Path, args: &[&str]) -> Run {
    run_with_deadline(cchost_cmd(root, cfg, args), Duration::from_secs(20))
}
