//! `cchost run` heals and shows its health, as a process on a fixture host:
//!
//! - a service that fails (the passthrough service, its device-plugin directory
//!   blocked by a file) is restarted with backoff and serves once the cause is gone;
//!   `/readyz` is 503 naming it, then 200; `/metrics`, parsed by the Prometheus
//!   project's own Python parser, shows the restart and the devices;
//! - a device-plugin endpoint whose serve failed (its socket path taken) is started
//!   again and registers with kubelet;
//! - under systemd (`NOTIFY_SOCKET`, `WATCHDOG_USEC`): `READY=1`, `WATCHDOG=1` and
//!   `STOPPING=1` arrive on a real unix datagram socket.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::device_plugin::{DP_DIR, FakeKubelet, hgx_like};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(40);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn spawn_run(root: &Path, config: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    let cfg = root.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cchost"));
    cmd.arg("--host-root")
        .arg(root)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("CCHOST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// SIGTERM, wait, and return (success, stderr).
async fn stop(mut child: tokio::process::Child) -> (bool, String) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err).await;
    }
    (status.success(), err)
}

/// One GET; `None` while nothing listens.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `path` until `want` accepts the answer.
async fn wait_for(port: u16, path: &str, want: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((s, b)) = get(port, path).await {
            if want(s, &b) {
                return (s, b);
            }
            last = Some((s, b));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never answered as wanted; last answer: {last:?}");
}

/// `/metrics` parsed by prometheus_client's text parser (python3-prometheus-client,
/// tests/debian-packages.txt): `name{label="v",...}` -> value, every sample.
async fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, text) = get(port, "/metrics")
        .await
        .expect("metrics endpoint answers");
    assert_eq!(status, 200, "{text}");
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (tests/debian-packages.txt)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_failed_service_is_restarted_and_readiness_and_metrics_follow() {
    let (h, _funcs) = hgx_like();
    // The device-plugin directory cannot be created: a file is in the way.
    std::fs::remove_dir_all(h.path(DP_DIR)).unwrap();
    h.file(DP_DIR, "not a directory\n");
    let port = free_port();
    let child = spawn_run(
        h.root(),
        &format!(
            "[device_plugin]\nmode = \"on\"\nrescan_interval_s = 0\n\
             [labels]\nbackend = \"off\"\n\
             [observe]\nhealth_listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{port}\"\n"
        ),
        &[],
    );
    let (status, body) = wait_for(port, "/readyz", |_, b| {
        b.contains("passthrough: not serving")
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("passthrough: not serving: failed ("),
        "the reason says the service failed: {body}"
    );
    assert_eq!(get(port, "/healthz").await.map(|a| a.0), Some(200));
    let m = scrape(port).await;
    assert_eq!(m.get("cchost_ready{}"), Some(&0.0), "{m:?}");
    assert_eq!(
        m.get("cchost_service_serving{service=\"passthrough\"}"),
        Some(&0.0),
        "{m:?}"
    );

    // The cause goes away: the supervisor's next restart serves.
    h.remove(DP_DIR);
    let (status, body) = wait_for(port, "/readyz", |s, _| s == 200).await;
    assert!(body.contains("passthrough: serving"), "{body}");
    assert!(
        body.contains("deviceplugin nvidia.com/pgpu: serving"),
        "{body}"
    );
    assert!(h.path(DP_DIR).join("cchost-nvidia.com-pgpu.sock").exists());
    let _ = status;
    let m = scrape(port).await;
    assert_eq!(m.get("cchost_ready{}"), Some(&1.0), "{m:?}");
    assert!(
        m.get("cchost_service_restarts_total{service=\"passthrough\"}")
            .is_some_and(|v| *v >= 1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("cchost_devices_advertised{resource=\"nvidia.com/pgpu\"}"),
        Some(&4.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("cchost_devices_unhealthy{resource=\"nvidia.com/pgpu\"}"),
        Some(&0.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("cchost_devices_skipped{reason=\"unreadable\"}"),
        Some(&0.0),
        "{m:?}"
    );

    // Allocate is counted and timed.
    let mut c = crate::support::device_plugin::connect_plugin(
        &h.path(DP_DIR).join("cchost-nvidia.com-pgpu.sock"),
    )
    .await
    .unwrap();
    let req = cchost::deviceplugin::api::AllocateRequest {
        container_requests: vec![cchost::deviceplugin::api::ContainerAllocateRequest {
            devices_ids: vec!["12".into()],
        }],
    };
    c.allocate(req).await.unwrap();
    let bad = cchost::deviceplugin::api::AllocateRequest {
        container_requests: vec![cchost::deviceplugin::api::ContainerAllocateRequest {
            devices_ids: vec!["99".into()],
        }],
    };
    assert!(c.allocate(bad).await.is_err());
    let m = scrape(port).await;
    let ok = "cchost_allocate_total{resource=\"nvidia.com/pgpu\",result=\"ok\"}";
    let refused = "cchost_allocate_total{resource=\"nvidia.com/pgpu\",result=\"refused\"}";
    assert_eq!(m.get(ok), Some(&1.0), "{m:?}");
    assert_eq!(m.get(refused), Some(&1.0), "{m:?}");
    assert_eq!(
        m.get("cchost_allocate_duration_seconds_count{resource=\"nvidia.com/pgpu\"}"),
        Some(&2.0),
        "{m:?}"
    );

    let (ok, err) = stop(child).await;
    assert!(ok, "{err}");
    assert!(err.contains("service failed; restarting it"), "{err}");
}

#[tokio::test]
async fn an_endpoint_whose_serve_failed_is_started_again_and_registers() {
    let (h, _funcs) = hgx_like();
    let dir = h.path(DP_DIR);
    let mut kubelet = FakeKubelet::start(&dir).await;
    // Something that is not a socket holds the GPU resource's socket path.
    let blocked = dir.join("cchost-nvidia.com-pgpu.sock");
    std::fs::write(&blocked, "in the way\n").unwrap();
    let (health, metrics) = (free_port(), free_port());
    let child = spawn_run(
        h.root(),
        &format!(
            "[device_plugin]\nrescan_interval_s = 0\n[labels]\nbackend = \"off\"\n\
             [observe]\nhealth_listen = \"127.0.0.1:{health}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n"
        ),
        &[],
    );
    let first = kubelet
        .next(WAIT)
        .await
        .expect("the NVSwitch resource registers");
    assert_eq!(first.req.resource_name, "nvidia.com/nvswitch");
    let (status, body) = wait_for(health, "/readyz", |_, b| {
        b.contains("deviceplugin nvidia.com/pgpu: not serving")
    })
    .await;
    assert_eq!(status, 503, "{body}");
    // Separate listeners answer separate things.
    assert_eq!(get(health, "/metrics").await.map(|a| a.0), Some(404));
    assert_eq!(get(metrics, "/readyz").await.map(|a| a.0), Some(404));

    std::fs::remove_file(&blocked).unwrap();
    let again = kubelet
        .next(WAIT)
        .await
        .expect("the GPU endpoint is started again and registers");
    assert_eq!(again.req.resource_name, "nvidia.com/pgpu");
    wait_for(health, "/readyz", |s, _| s == 200).await;
    let m = scrape(metrics).await;
    assert!(
        m.get("cchost_service_restarts_total{service=\"deviceplugin nvidia.com/pgpu\"}")
            .is_some_and(|v| *v >= 1.0),
        "{m:?}"
    );
    let (ok, err) = stop(child).await;
    assert!(ok, "{err}");
    kubelet.stop().await;
}

#[tokio::test]
async fn systemd_gets_ready_watchdog_and_stopping_on_its_notify_socket() {
    let (h, _funcs) = hgx_like();
    let dir = h.path(DP_DIR);
    let mut kubelet = FakeKubelet::start(&dir).await;
    let sock_dir = tempfile::tempdir().unwrap();
    let path = sock_dir.path().join("notify");
    let server = tokio::net::UnixDatagram::bind(&path).unwrap();
    let child = spawn_run(
        h.root(),
        "[device_plugin]\nrescan_interval_s = 0\n[labels]\nbackend = \"off\"\n",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut buf = [0u8; 4096];
    let mut recv = async || {
        let n = tokio::time::timeout(WAIT, server.recv(&mut buf))
            .await
            .expect("a notification")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    // Keep-alives may come before start-up ends; READY=1 is the first anything else.
    let mut first = recv().await;
    while first == "WATCHDOG=1" {
        first = recv().await;
    }
    assert!(first.starts_with("READY=1\nSTATUS="), "{first:?}");
    assert!(
        kubelet.next(WAIT).await.is_some(),
        "registered by the time it is ready"
    );
    // Then keep-alives, every 200 ms (half of WATCHDOG_USEC).
    let mut pings = 0;
    let t = Instant::now();
    while pings < 3 {
        let m = recv().await;
        if m == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let (ok, err) = stop(child).await;
    assert!(ok, "{err}");
    let mut rest = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), server.recv(&mut buf)).await
    {
        rest.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
    kubelet.stop().await;
}
