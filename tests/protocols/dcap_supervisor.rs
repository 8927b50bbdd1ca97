//! Supervision mode (a): cchost runs the stand-in QGS as its child and keeps it
//! answering — stale socket removal, argv/env, restarts on hang, crash, schedule, and
//! shutdown. Nothing here asserts on time; waits are bounded only as a hang guard.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use crate::support::dcap::{StandIn, standin, tdx_root};
use cchost::config::DcapConfig;
use cchost::dcap::supervisor::{self, Reason, Settings, State};
use cchost::host::HostRoot;
use tokio::sync::watch;

const SOCK: &str = "var/run/tdx-qgs/qgs.socket";

fn settings(root: &Path, extra: &[String]) -> Settings {
    let mut s = Settings::from_config(&DcapConfig::default());
    s.program = standin().display().to_string();
    s.args = vec![format!("--socket={}", root.join(SOCK).display())];
    s.args.extend_from_slice(extra);
    s.probe_interval = Duration::from_millis(100);
    s.probe_timeout = Duration::from_millis(400);
    s.probe_failures = 2;
    s.backoff_initial = Duration::from_millis(50);
    s.backoff_max = Duration::from_millis(200);
    s.stop_grace = Duration::from_secs(2);
    s
}

async fn until(
    rx: &mut watch::Receiver<State>,
    what: &str,
    pred: impl Fn(&State) -> bool,
) -> State {
    loop {
        {
            let st = rx.borrow_and_update();
            if pred(&st) {
                return st.clone();
            }
        }
        match tokio::time::timeout(Duration::from_secs(60), rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("supervisor never reached: {what}; state {:?}", rx.borrow()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_is_started_probed_and_restarted() {
    let root = tdx_root();
    let host = HostRoot::new(root.path()).unwrap();
    let control = root.path().join("mode");
    let record = root.path().join("record");
    std::fs::write(&control, "ok").unwrap();
    // A stale socket from a QGS that died: the old QGS would fail to bind.
    drop(UnixListener::bind(root.path().join(SOCK)).unwrap());

    let s = settings(
        root.path(),
        &[
            format!("--control={}", control.display()),
            format!("--record={}", record.display()),
        ],
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state_tx, mut state) = watch::channel(State::default());
    let task = tokio::spawn(supervisor::run_child(host, s, stop_rx, state_tx));

    let st = until(&mut state, "first healthy probe", |s| s.healthy).await;
    assert_eq!(st.starts, 1);
    assert_eq!(st.last_reason, Some(Reason::Initial));
    let first_pid = st.pid.unwrap();
    let rec = std::fs::read_to_string(&record).unwrap();
    assert!(rec.contains("args=--no-daemon -n=4 --socket="), "{rec}");
    let qcnl = root.path().join("etc/sgx_default_qcnl.conf");
    assert!(
        rec.contains(&format!("QCNL_CONF_PATH={}", qcnl.display())),
        "{rec}"
    );

    // QGS stops answering (the multi-day stall): restarted after failed probes.
    std::fs::write(&control, "hang").unwrap();
    let st = until(&mut state, "restart after failed probes", |s| {
        s.last_reason == Some(Reason::ProbeFailed)
    })
    .await;
    assert!(st.starts >= 2);
    std::fs::write(&control, "ok").unwrap();
    let st = until(&mut state, "healthy after the hang", |s| s.healthy).await;
    assert_ne!(st.pid, Some(first_pid));

    // QGS crashes: restarted because it exited.
    std::fs::write(&control, "crash").unwrap();
    until(&mut state, "restart after exit", |s| {
        s.last_reason == Some(Reason::Exited)
    })
    .await;
    std::fs::write(&control, "ok").unwrap();
    let st = until(&mut state, "healthy after the crash", |s| s.healthy).await;
    let last_pid = st.pid.unwrap();

    // Shutdown stops the child and returns.
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("supervisor did not stop")
        .unwrap()
        .unwrap();
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(last_pid as i32), None).is_ok();
    assert!(!alive, "QGS child {last_pid} still running after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_restart_and_missing_program() {
    let root = tdx_root();
    let host = HostRoot::new(root.path()).unwrap();
    let mut s = settings(root.path(), &[]);
    s.restart_every = Some(Duration::from_millis(300));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state_tx, mut state) = watch::channel(State::default());
    let task = tokio::spawn(supervisor::run_child(host.clone(), s, stop_rx, state_tx));
    let st = until(&mut state, "scheduled restart", |s| {
        s.last_reason == Some(Reason::Scheduled) && s.healthy
    })
    .await;
    assert!(st.starts >= 2);
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();

    let mut s = settings(root.path(), &[]);
    s.program = root.path().join("no-such-qgs").display().to_string();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state_tx, mut state) = watch::channel(State::default());
    let task = tokio::spawn(supervisor::run_child(host, s, stop_rx, state_tx));
    let st = until(&mut state, "spawn error", |s| s.last_error.is_some()).await;
    assert!(st.last_error.unwrap().contains("cannot start"));
    assert_eq!(st.starts, 0);
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_qgs_on_the_socket_is_not_deleted() {
    let root = tdx_root();
    let host = HostRoot::new(root.path()).unwrap();
    let _other = StandIn::start(&root.path().join(SOCK), &[]);
    let s = settings(root.path(), &[]);
    let err = supervisor::prepare_socket(&host, &s)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another QGS already answers"), "{err}");
    assert!(root.path().join(SOCK).exists());
}

/// QGS stops answering while PCCS is down (nothing listens at pccs_url): its workers are
/// waiting on PCCS, so the supervisor does not restart it however many probes time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qgs_waiting_on_a_down_pccs_is_not_restarted() {
    use cchost::dcap::pccs::{ProbeSettings, Trust, Url};
    let root = tdx_root();
    let host = HostRoot::new(root.path()).unwrap();
    let control = root.path().join("mode");
    std::fs::write(&control, "ok").unwrap();
    let mut s = settings(root.path(), &[format!("--control={}", control.display())]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    s.pccs = Some(ProbeSettings {
        base: Url::parse(&format!("https://127.0.0.1:{port}/sgx/certification/v4/")).unwrap(),
        trust: Trust::Insecure,
        connect_timeout: Duration::from_millis(300),
        answer_timeout: Duration::from_millis(300),
        api_key: None,
    });
    let failures_allowed = s.probe_failures;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state_tx, mut state) = watch::channel(State::default());
    let task = tokio::spawn(supervisor::run_child(host, s, stop_rx, state_tx));
    until(&mut state, "first healthy probe", |s| s.healthy).await;

    std::fs::write(&control, "hang").unwrap();
    // Several times the failures that would restart it: every probe times out.
    let mut timeouts = 0;
    while timeouts < failures_allowed * 3 {
        tokio::time::timeout(Duration::from_secs(60), state.changed())
            .await
            .expect("probes go on")
            .unwrap();
        let st = state.borrow_and_update().clone();
        if st
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no reply"))
        {
            timeouts += 1;
        }
        assert_eq!(st.starts, 1, "QGS was restarted while PCCS is down: {st:?}");
    }
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("supervisor did not stop")
        .unwrap()
        .unwrap();
}
