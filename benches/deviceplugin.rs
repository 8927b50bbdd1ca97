//! Device-plugin figures for docs/performance.md ("Device plugin"), measured with a
//! Rust client over the real unix sockets against an 8-GPU fixture host:
//!
//! 1. process start -> Register received by a fake kubelet (`cchost run`);
//! 2. Allocate latency (one GPU, and all eight) through the socket, p50 / p99;
//! 3. health change (a vfio node vanishes / returns) -> ListAndWatch update;
//! 4. kernel uevent -> ListAndWatch update through `cchost run` (needs root and a
//!    PCI device to send a synthetic `change` uevent; skipped otherwise);
//! 5. idle RSS of `cchost run` (median of several processes; `CCHOST_BENCH_ONLY=rss`
//!    runs only this);
//! 6. size of the (stripped) binary.
//!
//! Run: `cargo bench --bench deviceplugin`. Prints medians; asserts nothing.
//! Everything but the uevent case goes through a `cchost run` process;
//! `CCHOST_BENCH_BIN=<path>` picks the binary under test.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/device_plugin.rs"]
mod dp_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use cchost::deviceplugin::api;
use cchost::fixture::{PciSpec, Tree};
use dp_support::{DP_DIR, FakeKubelet, add_behind, connect_plugin, gpu, whole_host};

const WAIT: Duration = Duration::from_secs(20);

fn eight_gpus() -> (Tree, Vec<PciSpec>) {
    let h = whole_host();
    let roots = [
        "0000:00:01.0",
        "0000:00:02.0",
        "0000:80:01.0",
        "0000:80:02.0",
    ];
    let mut funcs = Vec::new();
    let bdfs = [
        "0000:03:00.0",
        "0000:04:00.0",
        "0000:13:00.0",
        "0000:14:00.0",
        "0000:83:00.0",
        "0000:84:00.0",
        "0000:93:00.0",
        "0000:94:00.0",
    ];
    let ups = [
        "0000:01:00.0",
        "0000:01:00.0",
        "0000:11:00.0",
        "0000:11:00.0",
        "0000:81:00.0",
        "0000:81:00.0",
        "0000:91:00.0",
        "0000:91:00.0",
    ];
    let downs = [
        "0000:02:00.0",
        "0000:02:01.0",
        "0000:12:00.0",
        "0000:12:01.0",
        "0000:82:00.0",
        "0000:82:01.0",
        "0000:92:00.0",
        "0000:92:01.0",
    ];
    for i in 0..8 {
        let f = add_behind(
            &h,
            &[roots[i / 2], ups[i], downs[i]],
            gpu(bdfs[i], 20 + i as u32, (i / 4) as u32),
        );
        funcs.push(f);
    }
    (h, funcs)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), at(0.99))
}

/// The binary under test: `CCHOST_BENCH_BIN` (e.g. a release build measured by a
/// debug-built harness), else the one cargo built for this bench.
fn bin() -> String {
    std::env::var("CCHOST_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cchost").to_string())
}

fn spawn_run(h: &Tree, extra_config: &str) -> std::process::Child {
    spawn_bin(&bin(), h, extra_config)
}

/// `cchost run` of `bin`; under `taskset -c $CCHOST_BENCH_SERVER_CPUS` when that is set
/// (the daemon on its own core, the client on another: run the bench itself under
/// `taskset -c <other>`).
fn spawn_bin(bin: &str, h: &Tree, extra_config: &str) -> std::process::Child {
    let cfg = h.root().join("config.toml");
    std::fs::write(&cfg, format!("[device_plugin]\n{extra_config}")).unwrap();
    let mut cmd = match std::env::var("CCHOST_BENCH_SERVER_CPUS") {
        Ok(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", &cpus, bin]);
            c
        }
        Err(_) => std::process::Command::new(bin),
    };
    cmd.arg("--host-root")
        .arg(h.root())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

async fn start_to_register() {
    let mut samples = Vec::new();
    for _ in 0..20 {
        let (h, _) = eight_gpus();
        let mut kubelet = FakeKubelet::start(&h.path(DP_DIR)).await;
        let t = Instant::now();
        let child = spawn_run(&h, "");
        kubelet.next(WAIT).await.expect("Register");
        samples.push(t.elapsed());
        stop(child);
        kubelet.stop().await;
    }
    let (p50, p90, _) = stats(samples);
    println!("process start -> Register (8 GPUs, 20 runs): median {p50:?}, p90 {p90:?}");
}

/// Allocate p50 / p99 of one `cchost run` of `bin`, 10,000 calls per case. With
/// `churn`, a task creates and removes a file in `/dev/vfio` every 20 ms meanwhile:
/// each change makes the daemon rescan (inotify, 15 ms debounce), so Allocate meets
/// the rescans (issue 13 item 11: they must not run on the thread that answers it).
async fn allocate_run(bin: &str, churn: bool) -> Vec<(String, Duration, Duration, Duration)> {
    let (h, _) = eight_gpus();
    let mut kubelet = FakeKubelet::start(&h.path(DP_DIR)).await;
    let child = spawn_bin(bin, &h, "");
    kubelet.next(WAIT).await.expect("Register");
    let mut c = connect_plugin(&h.path(DP_DIR).join("cchost-nvidia.com-pgpu.sock"))
        .await
        .unwrap();
    let stop_churn = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churner = churn.then(|| {
        let stop = stop_churn.clone();
        let file = h.path("/dev/vfio/bench-churn");
        std::thread::spawn(move || {
            let mut rescans = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::write(&file, b"x");
                std::thread::sleep(Duration::from_millis(10));
                let _ = std::fs::remove_file(&file);
                std::thread::sleep(Duration::from_millis(10));
                rescans += 1;
            }
            rescans
        })
    });
    let mut out = Vec::new();
    for (label, ids) in [
        ("1 GPU", vec!["20".to_string()]),
        ("8 GPUs", (20..28).map(|i| i.to_string()).collect()),
    ] {
        let req = api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: ids }],
        };
        for _ in 0..200 {
            c.allocate(req.clone()).await.unwrap();
        }
        let mut samples = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let t = Instant::now();
            c.allocate(req.clone()).await.unwrap();
            samples.push(t.elapsed());
        }
        let (p50, p90, p99) = stats(samples);
        out.push((label.to_string(), p50, p90, p99));
    }
    stop_churn.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = churner {
        let n = t.join().unwrap();
        eprintln!("  ({n} /dev/vfio changes during the run)");
    }
    stop(child);
    kubelet.stop().await;
    out
}

async fn allocate_latency() {
    for churn in [false, true] {
        for (label, p50, p90, p99) in allocate_run(&bin(), churn).await {
            let during = if churn { ", during rescans" } else { "" };
            println!(
                "Allocate {label} via cchost run, over the socket (10000 calls{during}): p50 {p50:?}, p90 {p90:?}, p99 {p99:?}"
            );
        }
    }
}

/// `CCHOST_BENCH_ONLY=allocate` with `CCHOST_BENCH_BINS=name=path,name=path`: the
/// Allocate runs of several binaries, alternated in each of `CCHOST_BENCH_ROUNDS`
/// rounds (default 5) so that they meet the same load; prints each run and the median
/// of the rounds' p50 and p99 per binary and case.
async fn allocate_compare() {
    let bins: Vec<(String, String)> = std::env::var("CCHOST_BENCH_BINS")
        .unwrap_or_else(|_| format!("this={}", bin()))
        .split(',')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let rounds: usize = std::env::var("CCHOST_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut all: std::collections::BTreeMap<(String, bool, String), Vec<(Duration, Duration)>> =
        Default::default();
    for round in 0..rounds {
        for i in 0..bins.len() {
            // Alternate the order every round.
            let (name, path) = &bins[if round % 2 == 0 {
                i
            } else {
                bins.len() - 1 - i
            }];
            for churn in [false, true] {
                for (label, p50, _p90, p99) in allocate_run(path, churn).await {
                    println!(
                        "round {round} {name} {label}{}: p50 {p50:?} p99 {p99:?}",
                        if churn { " during rescans" } else { "" }
                    );
                    all.entry((name.clone(), churn, label))
                        .or_default()
                        .push((p50, p99));
                }
            }
        }
    }
    println!("median of {rounds} rounds (each 10,000 calls):");
    for ((name, churn, label), v) in all {
        let (p50, _, _) = stats(v.iter().map(|x| x.0).collect());
        let (p99, _, _) = stats(v.iter().map(|x| x.1).collect());
        let during = if churn { " during rescans" } else { "" };
        println!("  {name} {label}{during}: p50 {p50:?}, p99 {p99:?}");
    }
}

/// The vfio node of a GPU goes away / comes back (the /dev/vfio watch of `cchost run`).
async fn health_to_update() {
    let (h, funcs) = eight_gpus();
    let mut kubelet = FakeKubelet::start(&h.path(DP_DIR)).await;
    let child = spawn_run(&h, "rescan_interval_s = 0\n");
    kubelet.next(WAIT).await.expect("Register");
    let mut c = connect_plugin(&h.path(DP_DIR).join("cchost-nvidia.com-pgpu.sock"))
        .await
        .unwrap();
    let mut s = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    s.message().await.unwrap();
    let mut samples = Vec::new();
    for i in 0..100 {
        let g = funcs[i % 8].iommu_group.unwrap();
        let node = format!("/dev/vfio/{g}");
        let t = Instant::now();
        if i % 16 < 8 {
            h.remove(&node);
        } else {
            h.file(&node, "");
        }
        tokio::time::timeout(WAIT, s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        samples.push(t.elapsed());
    }
    let (p50, p90, p99) = stats(samples);
    println!(
        "vfio node removed/re-created -> ListAndWatch update via cchost run (100): p50 {p50:?}, p90 {p90:?}, p99 {p99:?} (includes the {:?} debounce)",
        cchost::daemon::uevents::DEBOUNCE
    );
    stop(child);
    kubelet.stop().await;
}

/// A real kernel uevent (synthetic `change` on a live PCI device) wakes `cchost run`.
async fn uevent_to_update() {
    let live = cchost::host::HostRoot::live();
    let Some(dev) = live.pci_addresses().ok().and_then(|v| v.first().copied()) else {
        println!("uevent -> ListAndWatch: skipped (no PCI device on this machine)");
        return;
    };
    let trigger = format!("/sys/bus/pci/devices/{dev}/uevent");
    if live.write_attr(&trigger, "change").is_err() {
        println!("uevent -> ListAndWatch: skipped (cannot write {trigger}; needs root)");
        return;
    }
    let (h, funcs) = eight_gpus();
    let mut kubelet = FakeKubelet::start(&h.path(DP_DIR)).await;
    let child = spawn_run(&h, "rescan_interval_s = 0\n");
    kubelet.next(WAIT).await.expect("Register");
    let mut c = connect_plugin(&h.path(DP_DIR).join("cchost-nvidia.com-pgpu.sock"))
        .await
        .unwrap();
    let mut s = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    s.message().await.unwrap();
    let mut samples = Vec::new();
    for i in 0..40 {
        h.set_driver(
            &funcs[i % 8].address,
            Some(if i % 16 < 8 { "nvidia" } else { "vfio-pci" }),
        );
        let t = Instant::now();
        live.write_attr(&trigger, "change").unwrap();
        tokio::time::timeout(WAIT, s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        samples.push(t.elapsed());
    }
    let (p50, p90, p99) = stats(samples);
    println!(
        "kernel uevent -> ListAndWatch update via cchost run (40): p50 {p50:?}, p90 {p90:?}, p99 {p99:?} (includes the {:?} debounce)",
        cchost::daemon::uevents::DEBOUNCE
    );
    stop(child);
    kubelet.stop().await;
}

/// `/proc/<pid>/status` fields of one idle `cchost run`, in KiB.
async fn idle_rss_once() -> Vec<(&'static str, u64)> {
    let (h, _) = eight_gpus();
    let mut kubelet = FakeKubelet::start(&h.path(DP_DIR)).await;
    let child = spawn_run(&h, "");
    kubelet.next(WAIT).await.expect("Register");
    let _ = kubelet.next(WAIT).await;
    // Kubelet holds a ListAndWatch stream open, as on a real node.
    let mut c = connect_plugin(&h.path(DP_DIR).join("cchost-nvidia.com-pgpu.sock"))
        .await
        .unwrap();
    let mut s = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    s.message().await.unwrap();
    // `CCHOST_BENCH_RSS_WAIT_S` (default 3): how long the daemon idles before the reading;
    // 65 s includes one periodic labels round (every 60 s).
    let wait = std::env::var("CCHOST_BENCH_RSS_WAIT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let fields = ["VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"]
        .into_iter()
        .filter_map(|key| {
            let line = status.lines().find(|l| l.starts_with(&format!("{key}:")))?;
            Some((key, line.split_whitespace().nth(1)?.parse().ok()?))
        })
        .collect();
    stop(child);
    kubelet.stop().await;
    fields
}

/// Median of several idle `cchost run` processes (`CCHOST_BENCH_RSS_RUNS`, default 7).
async fn idle_rss() {
    let runs: usize = std::env::var("CCHOST_BENCH_RSS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut all = Vec::new();
    for _ in 0..runs {
        all.push(idle_rss_once().await);
    }
    let keys: Vec<&str> = all
        .first()
        .map(|f| f.iter().map(|(k, _)| *k).collect())
        .unwrap_or_default();
    let line: Vec<String> = keys
        .iter()
        .map(|k| {
            let mut v: Vec<u64> = all
                .iter()
                .filter_map(|f| f.iter().find(|(key, _)| key == k).map(|(_, v)| *v))
                .collect();
            v.sort_unstable();
            let med = v[v.len() / 2];
            if *k == "Threads" {
                format!("{k} {med}")
            } else {
                format!(
                    "{k} {:.1} MiB (min {:.1}, max {:.1})",
                    med as f64 / 1024.0,
                    v[0] as f64 / 1024.0,
                    v[v.len() - 1] as f64 / 1024.0
                )
            }
        })
        .collect();
    println!(
        "cchost run idle (8 GPUs, registered, 1 stream; median of {runs} processes): {}",
        line.join(", ")
    );
}

fn binary_size() {
    let path = bin();
    let path = path.as_str();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "binary size ({}): {:.1} MiB ({size} bytes)",
        path.rsplit('/').next().unwrap_or(path),
        size as f64 / 1048576.0
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `CCHOST_BENCH_ONLY=rss` measures the idle footprint alone (a quick run).
    let only_rss = std::env::var("CCHOST_BENCH_ONLY").is_ok_and(|v| v == "rss");
    if std::env::var("CCHOST_BENCH_ONLY").is_ok_and(|v| v == "allocate") {
        rt.block_on(allocate_compare());
        return;
    }
    rt.block_on(async {
        if !only_rss {
            start_to_register().await;
            allocate_latency().await;
            health_to_update().await;
            uevent_to_update().await;
        }
        idle_rss().await;
    });
    binary_size();
}
