//! Real-kernel test harness: boots the host's Debian kernel in QEMU (q35, emulated
//! intel-iommu, the `edu` and `pci-testdev` PCI devices) with a busybox initramfs that
//! holds the cchost binary, the real kmod `modprobe` and the vfio / vhost / vsock
//! modules, runs shell steps in the guest and hands their stdout, stderr and exit codes
//! back to the test.
//!
//! Use from a module of the real-kernel test crate (`tests/real_kernel/<topic>.rs`; its
//! `main.rs` declares this file as `harness`):
//!
//! ```ignore
//! use crate::harness::Vm;
//!
//! let run = Vm::new().kernel_args("intel_iommu=on").cmd("cchost --version").run();
//! run.step(0).assert_success();
//! ```
//!
//! See tests/vm/README.md for what the guest contains and how results travel back.
#![allow(dead_code)] // the test crate and benches/vfio_bind.rs each use a part of the API

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `[match]` config that makes the guest's two emulated test devices stand in for
/// GPUs: `edu` (1234:11e8) and `pci-testdev` (1b36:0005).
pub const STAND_IN_MATCH: &str = "[[match.gpu]]\nvendor = 0x1234\ndevices = [0x11e8]\n\n[[match.gpu]]\nvendor = 0x1b36\ndevices = [0x0005]\n";

/// Guest shell lines that set `EDU` and `TD` to the stand-ins' addresses and define
/// `grp BDF` (the device's IOMMU group number).
pub const FIND_STAND_INS: &str = r#"
bdf_of() {
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat $d/vendor)" = "$1" ] && [ "$(cat $d/device)" = "$2" ]; then echo ${d##*/}; return; fi
  done
}
EDU=$(bdf_of 0x1234 0x11e8)
TD=$(bdf_of 0x1b36 0x0005)
grp() { g=$(readlink /sys/bus/pci/devices/$1/iommu_group); echo ${g##*/}; }
"#;

/// Kernel modules placed in the guest, with everything they depend on (from the
/// kernel's own modules.dep). Adding a name here rebuilds the cached base layer.
pub const GUEST_MODULES: &[&str] = &[
    "vfio",
    "vfio_iommu_type1",
    "vfio_virqfd",
    "vfio_pci_core",
    "vfio_pci",
    // An "original driver" for the test devices, so that undo has one to restore.
    "pci_stub",
    "irqbypass",
    "vhost",
    "vhost_iotlb",
    "vhost_vsock",
    "vhost_net",
    "vsock",
    "vsock_loopback",
    "vsock_diag",
    "vmw_vsock_virtio_transport",
];

/// Names the guest gets from kmod rather than from busybox: tests prove the real
/// `modprobe`, the same tool a production host runs.
const KMOD_TOOLS: &[&str] = &["modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod"];

/// Bump when the layout of the base layer changes, so stale caches are rebuilt.
const BASE_LAYOUT_VERSION: &str = "ccvm-base-2";

/// Always on the guest kernel command line; tests add theirs with `kernel_args`.
/// `no_timer_check`: under TCG on a loaded host the kernel's early test of the timer
/// through the interrupt-remapped IO-APIC can miss its window and panic ("timer
/// doesn't work through Interrupt-remapped IO-APIC"); the timer itself works.
const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 printk.time=1 no_timer_check";

const INIT_SCRIPT: &str = r#"#!/bin/sh
# cchost VM harness init (written by tests/vm/harness.rs). Runs /ccvm/steps/N in
# order and reports each one on the second serial port (/dev/ttyS1), which carries
# nothing but these records; kernel messages stay on ttyS0.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /sys/fs/cgroup /run /tmp /root /var/lib /etc
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t tmpfs tmpfs /run
# The kernel runs this helper to load modules on demand (vfio_iommu_type1 when a vfio
# container picks its IOMMU model); point it at kmod's modprobe explicitly.
echo /sbin/modprobe > /proc/sys/kernel/modprobe
. /ccvm/run.conf
stty -F /dev/ttyS1 raw -echo
exec 3>/dev/ttyS1
echo "CCVM BEGIN $(uname -r) $(cut -d" " -f1 /proc/uptime)" >&3
mkdir -p /ccvm/out
set -o pipefail
i=0
while [ -f /ccvm/steps/$i ]; do
  echo "CCVM STEP $i START" >&3
  (cd / && exec timeout -s KILL "$CCVM_STEP_TIMEOUT" sh /ccvm/steps/$i) </dev/null >/ccvm/out/$i.stdout 2>/ccvm/out/$i.stderr
  rc=$?
  echo "CCVM STEP $i STDOUT" >&3
  base64 /ccvm/out/$i.stdout >&3
  echo "CCVM STEP $i STDERR" >&3
  base64 /ccvm/out/$i.stderr >&3
  echo "CCVM STEP $i EXIT $rc" >&3
  i=$((i+1))
done
n=0
while [ -f /ccvm/fetch/$n ]; do
  p=$(cat /ccvm/fetch/$n)
  echo "CCVM FETCH $n BEGIN" >&3
  if [ -d "$p" ]; then
    tar -C "$p" -cf - . | base64 >&3
  else
    base64 "$p" >&3
  fi
  rc=$?
  echo "CCVM FETCH $n END $rc" >&3
  n=$((n+1))
done
echo "CCVM DONE" >&3
exec 3>&-
sync
poweroff -f
"#;

// ---------------------------------------------------------------------------------
// The builder

/// One guest boot: devices, kernel arguments, files and the steps to run.
#[derive(Debug, Clone)]
pub struct Vm {
    kernel_args: String,
    devices: Vec<String>,
    qemu_args: Vec<String>,
    files: Vec<(String, Vec<u8>, u32)>,
    steps: Vec<String>,
    fetch: Vec<String>,
    timeout: Duration,
    step_timeout: Duration,
    memory: String,
}

impl Default for Vm {
    fn default() -> Self {
        Self::new()
    }
}

impl Vm {
    /// A guest with `intel_iommu=on`, the `edu` (1234:11e8) and `pci-testdev`
    /// (1b36:0005) devices, 1 GiB of memory, no steps yet.
    pub fn new() -> Self {
        Vm {
            kernel_args: "intel_iommu=on".to_string(),
            devices: vec!["edu".to_string(), "pci-testdev".to_string()],
            qemu_args: Vec::new(),
            files: Vec::new(),
            steps: Vec::new(),
            fetch: Vec::new(),
            timeout: Duration::from_secs(env_secs("CCHOST_VM_TIMEOUT", 300)),
            step_timeout: Duration::from_secs(120),
            memory: "1G".to_string(),
        }
    }

    /// The test's part of the kernel command line (replaces the default
    /// `intel_iommu=on`; console and panic settings are always added).
    pub fn kernel_args(mut self, args: &str) -> Self {
        self.kernel_args = args.to_string();
        self
    }

    /// Add a QEMU `-device` (e.g. `"edu"`, `"pci-testdev"`, `"edu,addr=0x10"`).
    pub fn device(mut self, spec: &str) -> Self {
        self.devices.push(spec.to_string());
        self
    }

    /// Remove the default test devices (then add the ones wanted with `device`).
    pub fn no_devices(mut self) -> Self {
        self.devices.clear();
        self
    }

    /// Extra raw QEMU arguments.
    pub fn qemu_arg(mut self, arg: &str) -> Self {
        self.qemu_args.push(arg.to_string());
        self
    }

    /// Place a file in the guest (mode 0644); parent directories are created.
    pub fn file(self, path: &str, contents: impl AsRef<[u8]>) -> Self {
        self.file_mode(path, contents, 0o644)
    }

    /// Place a file in the guest with the given permission bits.
    pub fn file_mode(mut self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        self.files
            .push((path.to_string(), contents.as_ref().to_vec(), mode));
        self
    }

    /// Write cchost's default configuration file, /etc/cchost/config.toml.
    pub fn config(self, toml: &str) -> Self {
        self.file("/etc/cchost/config.toml", toml)
    }

    /// Add one step: a shell script run by busybox `sh` in its own process, cwd `/`,
    /// stdin `/dev/null`. Its stdout, stderr and exit code come back separately.
    pub fn cmd(mut self, script: &str) -> Self {
        self.steps.push(script.to_string());
        self
    }

    /// After all steps, copy this guest path out: a directory comes back as a tree
    /// (through tar, symlinks kept), a file as a file. See [`VmRun::fetched`].
    pub fn fetch(mut self, guest_path: &str) -> Self {
        self.fetch.push(guest_path.to_string());
        self
    }

    /// Whole-boot limit (default 300 s, env `CCHOST_VM_TIMEOUT`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Per-step limit inside the guest (default 120 s); a step over it is killed
    /// and reports exit code 137.
    pub fn step_timeout(mut self, t: Duration) -> Self {
        self.step_timeout = t;
        self
    }

    /// Guest memory (QEMU `-m`, default `1G`).
    pub fn memory(mut self, m: &str) -> Self {
        self.memory = m.to_string();
        self
    }

    /// Run one script as the only step and return its result.
    pub fn run_script(self, script: &str) -> StepResult {
        let run = self.cmd(script).run();
        run.steps[0].clone()
    }

    /// Boot, run every step, fetch, power off. Panics with the console log when the
    /// guest does not finish (timeout, kernel panic, lost results).
    pub fn run(self) -> VmRun {
        match self.try_run() {
            Ok(run) => run,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Vm::run`], returning infrastructure failures as an error.
    pub fn try_run(self) -> Result<VmRun, VmError> {
        let env = guest_env().map_err(VmError::setup)?;
        let _slot = vm_slot();
        let dir = tempfile::Builder::new()
            .prefix("cchost-vm-")
            .tempdir()
            .map_err(|e| VmError::setup(format!("temp dir: {e}")))?;
        let initrd = dir.path().join("initrd.cpio");
        let run_layer = self.run_layer();
        {
            let mut f = fs::File::create(&initrd)
                .map_err(|e| VmError::setup(format!("{}: {e}", initrd.display())))?;
            for layer in [&env.base_cpio, &env.cchost_cpio] {
                let bytes = fs::read(layer)
                    .map_err(|e| VmError::setup(format!("{}: {e}", layer.display())))?;
                f.write_all(&bytes)
                    .map_err(|e| VmError::setup(format!("{}: {e}", initrd.display())))?;
            }
            f.write_all(&run_layer)
                .map_err(|e| VmError::setup(format!("{}: {e}", initrd.display())))?;
        }
        let console = dir.path().join("console.log");
        let results = dir.path().join("results.log");
        let qemu_log = dir.path().join("qemu.log");
        let cmdline = format!("{BASE_CMDLINE} {}", self.kernel_args);
        let mut args: Vec<String> = vec![
            "-machine".into(),
            "q35,kernel-irqchip=split".into(),
            "-accel".into(),
            env.accel.clone(),
            "-cpu".into(),
            "max".into(),
            "-smp".into(),
            "1".into(),
            "-m".into(),
            self.memory.clone(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            // The IOMMU must come before the devices it translates for.
            "-device".into(),
            "intel-iommu,intremap=on".into(),
        ];
        for d in &self.devices {
            args.push("-device".into());
            args.push(d.clone());
        }
        args.extend([
            "-kernel".into(),
            env.kernel.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            cmdline.clone(),
            "-serial".into(),
            format!("file:{}", console.display()),
            "-serial".into(),
            format!("file:{}", results.display()),
        ]);
        args.extend(self.qemu_args.iter().cloned());

        let log = fs::File::create(&qemu_log)
            .map_err(|e| VmError::setup(format!("{}: {e}", qemu_log.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| VmError::setup(format!("{}: {e}", qemu_log.display())))?;
        let started = Instant::now();
        let mut child = Command::new(&env.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| VmError::setup(format!("cannot start {}: {e}", env.qemu.display())))?;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => {}
                Err(e) => return Err(VmError::setup(format!("waiting for qemu: {e}"))),
            }
            if started.elapsed() > self.timeout {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let elapsed = started.elapsed();
        let console_text =
            String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).replace('\r', "");
        let qemu_text =
            String::from_utf8_lossy(&fs::read(&qemu_log).unwrap_or_default()).into_owned();
        let raw = fs::read(&results).unwrap_or_default();
        let parsed = parse_results(&raw, self.steps.len(), self.fetch.len());

        let fail = |what: String, parsed: &Parsed| -> VmError {
            VmError {
                message: format!(
                    "VM run failed: {what}\nqemu: {} {}\nelapsed: {:.1}s\nsteps reported: {}/{}{}\n\
                     --- qemu output ---\n{}\n--- guest console (last 200 lines) ---\n{}",
                    env.qemu.display(),
                    args.join(" "),
                    elapsed.as_secs_f64(),
                    parsed.steps.len(),
                    self.steps.len(),
                    parsed.describe_steps(&self.steps),
                    qemu_text.trim_end(),
                    tail_lines(&console_text, 200)
                ),
            }
        };
        if timed_out {
            let running = parsed
                .started
                .map(|i| format!(" (step {i} was running: {:?})", self.steps.get(i)))
                .unwrap_or_default();
            return Err(fail(
                format!("guest did not finish within {:?}{running}", self.timeout),
                &parsed,
            ));
        }
        if let Some(e) = &parsed.error {
            return Err(fail(format!("result channel: {e}"), &parsed));
        }
        if !parsed.done {
            return Err(fail(
                format!(
                    "guest stopped before reporting all results (qemu exit: {:?})",
                    status
                ),
                &parsed,
            ));
        }
        if parsed.steps.len() != self.steps.len() {
            return Err(fail("step count mismatch".into(), &parsed));
        }

        let mut fetched = HashMap::new();
        for (i, guest_path) in self.fetch.iter().enumerate() {
            let Some((rc, data)) = parsed.fetched.get(&i) else {
                return Err(fail(format!("fetch of {guest_path} missing"), &parsed));
            };
            if *rc != 0 {
                return Err(fail(
                    format!("fetch of {guest_path} failed in the guest (exit {rc})"),
                    &parsed,
                ));
            }
            let dest = dir.path().join(format!("fetch-{i}"));
            if is_tar(data) {
                fs::create_dir_all(&dest)
                    .map_err(|e| VmError::setup(format!("{}: {e}", dest.display())))?;
                untar(data, &dest).map_err(|e| fail(e, &parsed))?;
            } else {
                fs::write(&dest, data)
                    .map_err(|e| VmError::setup(format!("{}: {e}", dest.display())))?;
            }
            fetched.insert(guest_path.clone(), dest);
        }

        let steps = parsed
            .steps
            .iter()
            .zip(&self.steps)
            .map(|(s, cmd)| StepResult {
                cmd: cmd.clone(),
                stdout: s.stdout.clone(),
                stderr: s.stderr.clone(),
                code: s.code,
            })
            .collect();
        Ok(VmRun {
            steps,
            console: console_text,
            guest_kernel: parsed.kernel,
            cmdline,
            elapsed,
            boot_secs: parsed.uptime_at_init.unwrap_or(f64::NAN),
            fetched,
            _dir: dir,
        })
    }

    /// The per-run initramfs layer: steps, fetch list, files.
    fn run_layer(&self) -> Vec<u8> {
        let mut c = Cpio::new();
        c.dir("ccvm", 0o755);
        c.file(
            "ccvm/run.conf",
            format!("CCVM_STEP_TIMEOUT={}\n", self.step_timeout.as_secs().max(1)).as_bytes(),
            0o644,
        );
        c.dir("ccvm/steps", 0o755);
        c.dir("ccvm/fetch", 0o755);
        for (i, s) in self.steps.iter().enumerate() {
            c.file(&format!("ccvm/steps/{i}"), s.as_bytes(), 0o755);
        }
        for (i, p) in self.fetch.iter().enumerate() {
            c.file(&format!("ccvm/fetch/{i}"), p.as_bytes(), 0o644);
        }
        for (path, data, mode) in &self.files {
            c.file(path.trim_start_matches('/'), data, *mode);
        }
        c.finish()
    }
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An infrastructure failure: the guest could not be built, booted or heard from.
#[derive(Debug)]
pub struct VmError {
    pub message: String,
}

impl VmError {
    fn setup(msg: impl Into<String>) -> Self {
        VmError {
            message: format!("VM setup failed: {}", msg.into()),
        }
    }
}

impl std::fmt::Display for VmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

// ---------------------------------------------------------------------------------
// Results

/// What one guest step produced.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub cmd: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The step's exit status (137 when killed by the step timeout).
    pub code: i32,
}

impl StepResult {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics (showing the step) unless it exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.code, 0, "guest step failed:\n{self}");
        self
    }

    /// Panics (showing the step) unless it exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "guest step exit code:\n{self}");
        self
    }

    /// stdout parsed as JSON; panics with the step shown when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.stdout) {
            Ok(v) => v,
            Err(e) => panic!("guest step stdout is not JSON ({e}):\n{self}"),
        }
    }

    /// stdout lines, trimmed, empty ones dropped.
    pub fn lines(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl std::fmt::Display for StepResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}", self.cmd.trim_end())?;
        writeln!(f, "exit: {}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout().trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr().trim_end())
    }
}

/// A finished guest boot.
#[derive(Debug)]
pub struct VmRun {
    pub steps: Vec<StepResult>,
    /// The guest's kernel console (ttyS0), carriage returns removed.
    pub console: String,
    /// `uname -r` in the guest.
    pub guest_kernel: String,
    /// The full kernel command line the guest was booted with.
    pub cmdline: String,
    /// Wall time from QEMU start to power-off.
    pub elapsed: Duration,
    /// The guest's uptime (s) when /init started: kernel boot time under TCG.
    pub boot_secs: f64,
    fetched: HashMap<String, PathBuf>,
    _dir: tempfile::TempDir,
}

impl VmRun {
    #[track_caller]
    pub fn step(&self, i: usize) -> &StepResult {
        &self.steps[i]
    }

    /// Host path of what `Vm::fetch(guest_path)` copied out (a directory for a
    /// directory). Lives as long as this `VmRun`.
    #[track_caller]
    pub fn fetched(&self, guest_path: &str) -> &Path {
        match self.fetched.get(guest_path) {
            Some(p) => p,
            None => panic!("{guest_path} was not fetched (use Vm::fetch)"),
        }
    }
}

#[derive(Debug, Default)]
struct ParsedStep {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: i32,
}

#[derive(Debug, Default)]
struct Parsed {
    kernel: String,
    uptime_at_init: Option<f64>,
    steps: Vec<ParsedStep>,
    started: Option<usize>,
    fetched: HashMap<usize, (i32, Vec<u8>)>,
    done: bool,
    error: Option<String>,
}

impl Parsed {
    fn describe_steps(&self, cmds: &[String]) -> String {
        let mut s = String::new();
        for (st, cmd) in self.steps.iter().zip(cmds) {
            let _ = write!(
                s,
                "\n--- step: {} (exit {})\nstdout: {}\nstderr: {}",
                cmd.trim_end(),
                st.code,
                String::from_utf8_lossy(&st.stdout).trim_end(),
                String::from_utf8_lossy(&st.stderr).trim_end()
            );
        }
        s
    }
}

/// Parse the ttyS1 record stream (see INIT_SCRIPT). Tolerates a truncated stream so a
/// failure report can show what did arrive.
fn parse_results(raw: &[u8], _nsteps: usize, _nfetch: usize) -> Parsed {
    enum Sink {
        None,
        Stdout,
        Stderr,
        Fetch(usize),
    }
    let text = String::from_utf8_lossy(raw).replace('\r', "");
    let mut p = Parsed::default();
    let mut sink = Sink::None;
    let mut b64 = String::new();
    let mut cur = ParsedStep::default();
    let flush = |sink: &Sink, b64: &mut String, cur: &mut ParsedStep, p: &mut Parsed| {
        let data = match base64_decode(b64) {
            Ok(d) => d,
            Err(e) => {
                p.error.get_or_insert(e);
                Vec::new()
            }
        };
        b64.clear();
        match sink {
            Sink::Stdout => cur.stdout = data,
            Sink::Stderr => cur.stderr = data,
            Sink::Fetch(n) => {
                p.fetched.insert(*n, (-1, data));
            }
            Sink::None => {}
        }
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("CCVM ") else {
            if !matches!(sink, Sink::None) {
                b64.push_str(line.trim());
            }
            continue;
        };
        flush(&sink, &mut b64, &mut cur, &mut p);
        sink = Sink::None;
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["BEGIN", kernel, uptime] => {
                p.kernel = kernel.to_string();
                p.uptime_at_init = uptime.parse().ok();
            }
            ["STEP", i, "START"] => p.started = i.parse().ok(),
            ["STEP", _, "STDOUT"] => sink = Sink::Stdout,
            ["STEP", _, "STDERR"] => sink = Sink::Stderr,
            ["STEP", _, "EXIT", code] => {
                cur.code = code.parse().unwrap_or(-1);
                p.steps.push(std::mem::take(&mut cur));
                p.started = None;
            }
            ["FETCH", n, "BEGIN"] => {
                if let Ok(n) = n.parse() {
                    sink = Sink::Fetch(n);
                }
            }
            ["FETCH", n, "END", rc] => {
                if let (Ok(n), Ok(rc)) = (n.parse::<usize>(), rc.parse::<i32>()) {
                    if let Some(entry) = p.fetched.get_mut(&n) {
                        entry.0 = rc;
                    } else {
                        p.fetched.insert(n, (rc, Vec::new()));
                    }
                }
            }
            ["DONE"] => p.done = true,
            _ => {
                p.error.get_or_insert(format!("unexpected record {line:?}"));
            }
        }
    }
    flush(&sink, &mut b64, &mut cur, &mut p);
    p
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a') as u32 + 26),
            b'0'..=b'9' => Some((c - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "base64 length {} is not a multiple of 4",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        let mut n: u32 = 0;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c).ok_or_else(|| format!("bad base64 byte {c:#x}"))?;
        }
        n <<= 6 * pad as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Ok(out)
}

fn is_tar(data: &[u8]) -> bool {
    data.len() >= 512 && &data[257..262] == b"ustar"
}

fn untar(data: &[u8], dest: &Path) -> Result<(), String> {
    let mut child = Command::new("tar")
        .arg("-x")
        .arg("-f")
        .arg("-")
        .arg("-C")
        .arg(dest)
        .arg("--no-same-owner")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(data)
            .map_err(|e| format!("writing to tar: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tar -x into {} failed: {}",
            dest.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Concurrency: at most one VM per CPU core in this process (TCG is CPU-bound).

struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

pub struct SlotGuard;

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let s = slots();
        let mut used = s.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        s.freed.notify_one();
    }
}

fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| Slots {
        used: Mutex::new(0),
        freed: Condvar::new(),
    })
}

fn vm_slot() -> SlotGuard {
    let max = std::env::var("CCHOST_VM_PARALLEL")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let s = slots();
    let mut used = s.used.lock().unwrap_or_else(|e| e.into_inner());
    while *used >= max {
        used = s.freed.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += 1;
    SlotGuard
}

// ---------------------------------------------------------------------------------
// The guest image: kernel, cached base layer, cchost layer.

struct GuestEnv {
    qemu: PathBuf,
    accel: String,
    kernel: PathBuf,
    base_cpio: PathBuf,
    cchost_cpio: PathBuf,
}

fn guest_env() -> Result<&'static GuestEnv, String> {
    static ENV: OnceLock<Result<GuestEnv, String>> = OnceLock::new();
    ENV.get_or_init(build_guest_env)
        .as_ref()
        .map_err(|e| e.clone())
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("CCHOST_VM_CACHE") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/.cache"),
    }
}

fn build_guest_env() -> Result<GuestEnv, String> {
    let qemu = which("qemu-system-x86_64").ok_or(
        "qemu-system-x86_64 not found: install the qemu-system-x86 package (see README.md)",
    )?;
    let (kver, kernel) = pick_kernel()?;
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let base_cpio = base_layer(&cache, &kver)?;
    let cchost_cpio = cchost_layer(&cache)?;
    let accel = std::env::var("CCHOST_VM_ACCEL").unwrap_or_else(|_| "tcg".to_string());
    Ok(GuestEnv {
        qemu,
        accel,
        kernel,
        base_cpio,
        cchost_cpio,
    })
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The kernel to boot: `CCHOST_VM_KERNEL` (a vmlinuz whose modules are in
/// /lib/modules/<version>, the version taken from the file name), else the newest
/// /boot/vmlinuz-* with modules installed.
fn pick_kernel() -> Result<(String, PathBuf), String> {
    let version_of = |p: &Path| -> Option<String> {
        p.file_name()?
            .to_str()?
            .strip_prefix("vmlinuz-")
            .map(str::to_string)
    };
    if let Some(k) = std::env::var_os("CCHOST_VM_KERNEL") {
        let k = PathBuf::from(k);
        let v = version_of(&k).ok_or_else(|| {
            format!(
                "CCHOST_VM_KERNEL={}: expected vmlinuz-<version>",
                k.display()
            )
        })?;
        return Ok((v, k));
    }
    let mut found: Vec<(String, PathBuf)> = fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter_map(|p| version_of(&p).map(|v| (v, p)))
        .collect();
    found.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    // Newest first, skipping kernels without the modules the guest needs (a Debian
    // `-cloud-amd64` kernel, say, next to the generic one).
    let mut skipped = Vec::new();
    while let Some((v, p)) = found.pop() {
        let dep = Path::new("/lib/modules").join(&v).join("modules.dep");
        match fs::read_to_string(&dep)
            .map_err(|e| format!("{}: {e}", dep.display()))
            .and_then(|d| module_closure(&d, GUEST_MODULES))
        {
            Ok(_) => return Ok((v, p)),
            Err(e) => skipped.push(format!("{v}: {e}")),
        }
    }
    Err(format!(
        "no usable /boot/vmlinuz-<version> (needs /lib/modules/<version> with {GUEST_MODULES:?}): \
         install linux-image-amd64 (see README.md); skipped: {skipped:?}"
    ))
}

fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| -> Vec<(u64, String)> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|part| (part.parse::<u64>().unwrap_or(0), part.to_string()))
            .collect()
    };
    key(a).cmp(&key(b))
}

/// A fingerprint of a file for cache keys: path, size, modification time.
fn fingerprint(p: &Path) -> Result<String, String> {
    let md = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{} {} {}", p.display(), md.len(), mtime))
}

/// Write `bytes` to `dest` atomically (temp file + rename), so concurrent test
/// processes never see half a cache file.
fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dest.with_extension(format!("tmp.{}.{nanos}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))
}

/// Reuse `cache/name` when `cache/name.key` equals `key`; otherwise build it.
fn cached(
    cache: &Path,
    name: &str,
    key: &str,
    build: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<PathBuf, String> {
    let path = cache.join(name);
    let key_path = cache.join(format!("{name}.key"));
    if path.is_file() && fs::read_to_string(&key_path).ok().as_deref() == Some(key) {
        return Ok(path);
    }
    let bytes = build()?;
    write_atomic(&path, &bytes)?;
    write_atomic(&key_path, key.as_bytes())?;
    Ok(path)
}

/// busybox with its applet links, kmod with its tools, the shared libraries they
/// need, the kernel modules (indexes rebuilt by depmod for exactly this subset) and
/// /init. Cached: it changes only with the kernel, busybox, kmod or this file's lists.
fn base_layer(cache: &Path, kver: &str) -> Result<PathBuf, String> {
    let busybox = which("busybox").ok_or("busybox not found: install busybox-static")?;
    let kmod = which("kmod").ok_or("kmod not found: install kmod")?;
    let depmod = which("depmod").ok_or("depmod not found: install kmod")?;
    let moddir = Path::new("/lib/modules").join(kver);
    let key = format!(
        "{BASE_LAYOUT_VERSION}\nkernel {kver}\n{}\n{}\n{}\nmodules {:?}\ninit {}\n",
        fingerprint(&busybox)?,
        fingerprint(&kmod)?,
        fingerprint(&moddir.join("modules.dep"))?,
        GUEST_MODULES,
        INIT_SCRIPT.len()
    );
    let key = format!("{key}init-hash {:x}\n", simple_hash(INIT_SCRIPT.as_bytes()));
    cached(cache, &format!("base-{kver}.cpio"), &key, || {
        let mut c = Cpio::new();
        for d in [
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "lib",
            "lib64",
            "proc",
            "sys",
            "dev",
            "run",
            "root",
            "etc",
            "var/lib",
            "lib/modules",
        ] {
            c.dir(d, 0o755);
        }
        c.dir("tmp", 0o1777);
        c.node_console();
        c.file("init", INIT_SCRIPT.as_bytes(), 0o755);
        c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644);
        c.file("etc/group", b"root:x:0:\n", 0o644);

        // busybox and its applets (kmod's tools win over busybox's).
        c.file("bin/busybox", &read(&busybox)?, 0o755);
        let list = run_capture(Command::new(&busybox).arg("--list-full"))?;
        for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let name = applet.rsplit('/').next().unwrap_or(applet);
            if KMOD_TOOLS.contains(&name) || applet == "bin/busybox" {
                continue;
            }
            c.symlink(applet, "/bin/busybox");
        }
        // kmod: one binary, dispatching on argv[0].
        c.file("bin/kmod", &read(&kmod)?, 0o755);
        for tool in KMOD_TOOLS {
            c.symlink(&format!("sbin/{tool}"), "/bin/kmod");
        }
        add_shared_libs(&mut c, &kmod)?;

        // Kernel modules: the closure of GUEST_MODULES over modules.dep, indexes
        // regenerated by depmod for this subset so `modprobe` sees a coherent tree.
        let stage = tempfile::Builder::new()
            .prefix("cchost-vm-mods-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let staged_moddir = stage.path().join("lib/modules").join(kver);
        fs::create_dir_all(&staged_moddir).map_err(|e| format!("{e}"))?;
        let deps = fs::read_to_string(moddir.join("modules.dep"))
            .map_err(|e| format!("{}: {e}", moddir.join("modules.dep").display()))?;
        let wanted = module_closure(&deps, GUEST_MODULES)?;
        for rel in &wanted {
            let src = moddir.join(rel);
            let dst = staged_moddir.join(rel);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
        }
        for f in [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ] {
            let src = moddir.join(f);
            if src.is_file() {
                fs::copy(&src, staged_moddir.join(f))
                    .map_err(|e| format!("{}: {e}", src.display()))?;
            }
        }
        run_capture(Command::new(&depmod).arg("-b").arg(stage.path()).arg(kver))?;
        c.add_tree(stage.path(), Path::new(""))?;
        Ok(c.finish())
    })
}

/// cchost (stripped when `strip` is available) and the libraries it links.
/// `CCHOST_VM_BIN` overrides the binary (e.g. a static build).
fn cchost_layer(cache: &Path) -> Result<PathBuf, String> {
    let bin = std::env::var_os("CCHOST_VM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cchost")));
    let key = format!("cchost-layer-1\n{}\n", fingerprint(&bin)?);
    cached(cache, "cchost.cpio", &key, || {
        let mut c = Cpio::new();
        let stripped = cache.join("cchost.stripped");
        let data = match which("strip")
            .map(|s| Command::new(s).arg("-o").arg(&stripped).arg(&bin).status())
        {
            Some(Ok(st)) if st.success() => read(&stripped)?,
            _ => read(&bin)?,
        };
        let _ = fs::remove_file(&stripped);
        c.file("bin/cchost", &data, 0o755);
        add_shared_libs(&mut c, &bin)?;
        Ok(c.finish())
    })
}

fn simple_hash(data: &[u8]) -> u64 {
    // FNV-1a: enough to notice an edited init script in a cache key.
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn run_capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Copy the shared libraries `ldd` lists for `bin` to the same paths in the guest.
fn add_shared_libs(c: &mut Cpio, bin: &Path) -> Result<(), String> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || !out.status.success() {
        return Ok(()); // static binary
    }
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            c.file(p.trim_start_matches('/'), &read(Path::new(p))?, 0o755);
        }
    }
    Ok(())
}

/// The relative paths (as in modules.dep) of `names` and all their dependencies.
fn module_closure(modules_dep: &str, names: &[&str]) -> Result<BTreeSet<String>, String> {
    let norm = |s: &str| s.replace('-', "_");
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let name = path
            .rsplit('/')
            .next()
            .unwrap_or(path)
            .split(".ko")
            .next()
            .unwrap_or(path);
        deps.insert(
            norm(name),
            (
                path.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    let mut out = BTreeSet::new();
    for n in names {
        let (path, d) = deps
            .get(&norm(n))
            .ok_or_else(|| format!("module {n} is not in this kernel's modules.dep"))?;
        out.insert(path.clone());
        out.extend(d.iter().cloned());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// A minimal writer of the "newc" cpio format the kernel unpacks as initramfs.
// Layers are separate archives concatenated into one file; the kernel unpacks them
// in order, so later layers add to (and overwrite files of) earlier ones.

struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn new() -> Self {
        Cpio {
            out: Vec::new(),
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn parents(&mut self, path: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if !self.dirs.contains(&acc) {
                let a = acc.clone();
                self.dir(&a, 0o755);
            }
        }
    }

    fn dir(&mut self, path: &str, perm: u32) {
        self.parents(path);
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040000 | perm, &[], (0, 0));
    }

    fn file(&mut self, path: &str, data: &[u8], perm: u32) {
        self.parents(path);
        self.entry(path, 0o100000 | perm, data, (0, 0));
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entry(path, 0o120777, target.as_bytes(), (0, 0));
    }

    /// /dev/console must exist before devtmpfs is mounted, or init has no stdio.
    fn node_console(&mut self) {
        self.parents("dev/console");
        self.entry("dev/console", 0o020600, &[], (5, 1));
    }

    /// Add the files, directories and symlinks under `src` at `dest`.
    fn add_tree(&mut self, src: &Path, dest: &Path) -> Result<(), String> {
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(|e| format!("{}: {e}", src.display()))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = dest.join(e.file_name());
            let rel_s = rel.to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if md.is_dir() {
                self.dir(&rel_s, 0o755);
                self.add_tree(&p, &rel)?;
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                self.symlink(&rel_s, &t.to_string_lossy());
            } else {
                self.file(&rel_s, &read(&p)?, 0o644);
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

#[cfg(test)]
mod harness_tests {
    use super::*;

    #[test]
    fn base64_round_trip_of_known_values() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h\naGk=").unwrap(), b"hello!hi");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("abc").is_err());
    }

    #[test]
    fn result_stream_is_parsed_per_step() {
        let raw = b"CCVM BEGIN 6.1.0 3.25\r\nCCVM STEP 0 START\nCCVM STEP 0 STDOUT\naGk=\nCCVM STEP 0 STDERR\nCCVM STEP 0 EXIT 3\nCCVM DONE\n";
        let p = parse_results(raw, 1, 0);
        assert!(p.done);
        assert_eq!(p.kernel, "6.1.0");
        assert_eq!(p.uptime_at_init, Some(3.25));
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].stdout, b"hi");
        assert_eq!(p.steps[0].code, 3);
        assert!(p.error.is_none());
    }

    #[test]
    fn truncated_stream_is_not_done() {
        let p = parse_results(b"CCVM BEGIN x 1.0\nCCVM STEP 0 START\n", 1, 0);
        assert!(!p.done);
        assert_eq!(p.started, Some(0));
    }

    #[test]
    fn module_closure_follows_modules_dep() {
        let dep =
            "kernel/a/vfio.ko:\nkernel/a/vfio-pci.ko: kernel/a/vfio.ko kernel/b/irqbypass.ko\n";
        let c = module_closure(dep, &["vfio_pci"]).unwrap();
        assert_eq!(c.len(), 3);
        assert!(module_closure(dep, &["nope"]).is_err());
    }
}
