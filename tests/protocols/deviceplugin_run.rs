//! `cchost run` as a process: it writes the CDI spec, serves and registers both
//! resources, follows a device change, and on SIGTERM removes its sockets and leaves
//! a consistent CDI spec behind.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::device_plugin::{DP_DIR, FakeKubelet, connect_plugin, hgx_like};
use cchost::deviceplugin::api;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn run_serves_follows_changes_and_stops_cleanly_on_sigterm() {
    let (h, _funcs) = hgx_like();
    let dir = h.path(DP_DIR);
    let mut kubelet = FakeKubelet::start(&dir).await;
    // No rescan timer: the vfio node's removal is seen through the /dev/vfio watch
    // (a fixture tree sends no uevents).
    let cfg = h.root().join("config.toml");
    std::fs::write(&cfg, "[device_plugin]\nrescan_interval_s = 0\n").unwrap();
    let t = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(h.root())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("CCHOST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let first = kubelet.next(WAIT).await.expect("cchost run registers");
    eprintln!("process start -> Register: {:?}", t.elapsed());
    let second = kubelet.next(WAIT).await.expect("both resources register");
    let mut names = vec![first.req.resource_name, second.req.resource_name];
    names.sort();
    assert_eq!(names, ["nvidia.com/nvswitch", "nvidia.com/pgpu"]);
    // The spec was written before the plugin advertised anything.
    let spec = h
        .host
        .read_string("/var/run/cdi/cchost-nvidia.com-pgpu.json")
        .unwrap();
    assert!(spec.contains("\"/dev/vfio/12\""), "{spec}");

    let mut c = connect_plugin(&dir.join("cchost-nvidia.com-pgpu.sock"))
        .await
        .unwrap();
    let mut s = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    let first_list = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first_list.devices.len(), 4);
    h.remove("/dev/vfio/13");
    let update = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let d13 = update.devices.iter().find(|d| d.id == "13").unwrap();
    assert_eq!(d13.health, "Unhealthy");

    // The labels service runs beside the plugin: without a cluster it publishes the
    // node's labels in the NFD local feature file under the host root.
    let feature_file = h
        .root()
        .join("etc/kubernetes/node-feature-discovery/features.d/cchost");
    let deadline = Instant::now() + WAIT;
    while !feature_file.exists() && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let features =
        std::fs::read_to_string(&feature_file).expect("cchost run writes the NFD feature file");
    assert!(features.contains("cchost.io/tee="), "{features}");

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut err).await;
    }
    assert!(status.success(), "{status:?}\n{err}");
    assert!(!dir.join("cchost-nvidia.com-pgpu.sock").exists(), "{err}");
    assert!(
        !dir.join("cchost-nvidia.com-nvswitch.sock").exists(),
        "{err}"
    );
    // The CDI spec is still there, whole, and still names the devices.
    let spec: serde_json::Value = serde_json::from_str(
        &h.host
            .read_string("/var/run/cdi/cchost-nvidia.com-pgpu.json")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(spec["kind"], "nvidia.com/pgpu");
    assert!(err.contains("SIGTERM"), "{err}");
    kubelet.stop().await;
}

/// `cchost run` with `[[cc.modes]]` registers the CC and the non-CC GPU resource, and
/// holds back every GPU whose CC mode it could not read (this fixture has no BAR0 to
/// read): advertised, unhealthy, with the reason, never under the other name.
#[tokio::test]
async fn run_with_per_gpu_modes_serves_two_gpu_resources_gated_on_the_firmware() {
    let (h, _funcs) = hgx_like();
    let dir = h.path(DP_DIR);
    let mut kubelet = FakeKubelet::start(&dir).await;
    let (mut child, names) = run_two_on_two_off(h.root(), &mut kubelet, 3).await;
    assert_eq!(
        names,
        [
            "nvidia.com/nvswitch",
            "nvidia.com/pgpu",
            "nvidia.com/pgpu-nocc"
        ]
    );
    for (sock, ids) in [
        ("cchost-nvidia.com-pgpu.sock", ["12", "13"]),
        ("cchost-nvidia.com-pgpu-nocc.sock", ["14", "40"]),
    ] {
        let want: Vec<(String, String)> = ids
            .iter()
            .map(|i| (i.to_string(), "Unhealthy".to_string()))
            .collect();
        assert_eq!(first_list(&dir.join(sock)).await, want, "{sock}");
    }
    let nocc = h
        .host
        .read_string("/var/run/cdi/cchost-nvidia.com-pgpu-nocc.json")
        .unwrap();
    assert!(
        nocc.contains("\"kind\":\"nvidia.com/pgpu-nocc\"")
            || nocc.contains("\"kind\": \"nvidia.com/pgpu-nocc\""),
        "{nocc}"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    kubelet.stop().await;
}

/// End to end on the four-H100 vfio fixture, whose `resource0` files hold the CC
/// register: two GPUs read CC on and two off, as `[[cc.modes]]` wants, so `cchost run`
/// serves the first two as `nvidia.com/pgpu` and the others as `nvidia.com/pgpu-nocc`,
/// all healthy; the firmware mode is read through the same live path as the labels.
#[tokio::test]
async fn run_serves_a_mixed_node_whose_firmware_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let host = cchost::fixture::scenarios::gpus_on_vfio(dir.path())
        .build()
        .unwrap();
    let cfg = cchost::config::Config::default();
    let inv = cchost::inventory::gpu::discover_gpus(&host, &cfg.matching);
    let mut gpus: Vec<String> = inv.gpus().map(|d| d.address.to_string()).collect();
    gpus.sort();
    assert_eq!(gpus.len(), 4);
    for (g, reg) in gpus.iter().zip([1u32, 1, 0, 0]) {
        cchost::gpu::cc::sim::register_file::write_booted(&host, g, reg).unwrap();
    }
    let dp_dir = dir.path().join("var/lib/kubelet/device-plugins");
    std::fs::create_dir_all(&dp_dir).unwrap();
    let mut kubelet = FakeKubelet::start(&dp_dir).await;
    let (mut child, names) = run_two_on_two_off(dir.path(), &mut kubelet, 2).await;
    assert_eq!(names, ["nvidia.com/pgpu", "nvidia.com/pgpu-nocc"]);
    for (sock, ids) in [
        ("cchost-nvidia.com-pgpu.sock", ["0", "1"]),
        ("cchost-nvidia.com-pgpu-nocc.sock", ["2", "3"]),
    ] {
        let want: Vec<(String, String)> = ids
            .iter()
            .map(|i| (i.to_string(), "Healthy".to_string()))
            .collect();
        assert_eq!(first_list(&dp_dir.join(sock)).await, want, "{sock}");
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    kubelet.stop().await;
}

/// Starts `cchost run` on `root` with `[[cc.modes]]` "2 on, 2 off" (no periodic rescan)
/// and returns it with the resource names of its first `registrations` registrations,
/// sorted.
/// The first ListAndWatch answer of the plugin at `sock`: (device id, health).
async fn first_list(sock: &std::path::Path) -> Vec<(String, String)> {
    let mut c = connect_plugin(sock).await.unwrap();
    let mut s = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    let list = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    list.devices.into_iter().map(|d| (d.id, d.health)).collect()
}

async fn run_two_on_two_off(
    root: &std::path::Path,
    kubelet: &mut FakeKubelet,
    registrations: usize,
) -> (tokio::process::Child, Vec<String>) {
    let cfg = root.join("cchost-modes.toml");
    std::fs::write(
        &cfg,
        "[device_plugin]\nrescan_interval_s = 0\n\
         [[cc.modes]]\nmode = \"on\"\ncount = 2\n[[cc.modes]]\nmode = \"off\"\ncount = 2\n",
    )
    .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cchost"))
        .arg("--host-root")
        .arg(root)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("CCHOST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut names = Vec::new();
    for _ in 0..registrations {
        names.push(
            kubelet
                .next(WAIT)
                .await
                .expect("Register")
                .req
                .resource_name,
        );
    }
    names.sort();
    (child, names)
}
