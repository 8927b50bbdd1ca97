//! The one watch on the own Node (`labels::own_node`) against kube's tower-test mock:
//! however many subscribe (the labeler's drift check, `cc.follow_label`), the API server
//! sees one watch request at a time, `fieldSelector=metadata.name=<node>`, from
//! resourceVersion 0 (no GET); when the server ends it, it resumes from the last version
//! seen (object or bookmark); a 410 Gone starts over at 0; an error is retried with
//! backoff; a deleted Node reads `None`; with every subscriber gone it stops. The label
//! follower (`labels::node_watch`) forwards `nvidia.com/cc.mode` from it. The real
//! API-server tier (tests/k8s SteadyState) counts the watches in the audit log.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cchost::labels::node_watch::follow_label;
use cchost::labels::own_node::OwnNode;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Node;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;
type Reply = mock::SendResponse<Response<Body>>;

const CC: &str = "nvidia.com/cc.mode";

fn node(rv: &str, mode: Option<&str>) -> Value {
    let labels = match mode {
        Some(m) => json!({"kubernetes.io/hostname": "worker-1", CC: m}),
        None => json!({"kubernetes.io/hostname": "worker-1"}),
    };
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": "worker-1", "resourceVersion": rv, "labels": labels}})
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn bookmark(rv: &str) -> Value {
    event(
        "BOOKMARK",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"resourceVersion": rv}}),
    )
}

fn gone() -> Value {
    event(
        "ERROR",
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": "too old resource version", "reason": "Expired", "code": 410}),
    )
}

/// Answers a watch with these events; the body ends after them (the server ended the watch).
fn answer(send: Reply, events: &[Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    send.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(body.into_bytes()))
            .unwrap(),
    );
}

/// The next request, which must be the own-Node watch from `rv`.
async fn next_watch(handle: &mut Handle, rv: &str) -> Reply {
    let (req, send) = tokio::time::timeout(Duration::from_secs(600), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no watch from resourceVersion {rv}"))
        .expect("the client is gone");
    assert_eq!(req.method(), "GET");
    assert_eq!(req.uri().path(), "/api/v1/nodes");
    let q = req.uri().query().unwrap().to_string();
    for part in [
        "watch=true".to_string(),
        "fieldSelector=metadata.name%3Dworker-1".to_string(),
        format!("resourceVersion={rv}&"),
        "timeoutSeconds=290".to_string(),
        "allowWatchBookmarks=true".to_string(),
    ] {
        assert!(format!("{q}&").contains(&part), "{part} missing in {q}");
    }
    send
}

/// No request within 10 minutes (of paused time): the one watch stays the only one.
async fn no_request(handle: &mut Handle) {
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_secs(600), handle.next_request()).await
    {
        panic!("unexpected request: {} {}", req.method(), req.uri());
    }
}

async fn next_label(rx: &mut watch::Receiver<Option<String>>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(600), rx.changed())
        .await
        .expect("no label change")
        .expect("the follower ended");
    rx.borrow_and_update().clone()
}

async fn next_node(rx: &mut watch::Receiver<Option<Node>>) -> Option<Node> {
    tokio::time::timeout(Duration::from_secs(600), rx.changed())
        .await
        .expect("no new Node version")
        .expect("the watch ended");
    rx.borrow_and_update().clone()
}

fn rv(n: &Option<Node>) -> Option<String> {
    n.as_ref()?.metadata.resource_version.clone()
}

#[tokio::test(start_paused = true)]
async fn every_subscriber_shares_one_watch_that_resumes_restarts_and_stops() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let hub = OwnNode::default();
    let mut drift = hub.subscribe(&client, "worker-1");
    let mut cc = hub.clone().subscribe(&client, "worker-1");

    // 1. One watch for both, from resourceVersion 0: the server's watch cache answers
    //    with the current Node (ADDED), no GET first.
    let send = next_watch(&mut handle, "0").await;
    no_request(&mut handle).await;
    answer(send, &[event("ADDED", node("5", Some("on")))]);
    assert_eq!(rv(&next_node(&mut drift).await).as_deref(), Some("5"));
    assert_eq!(rv(&next_node(&mut cc).await).as_deref(), Some("5"));

    // 2. The server ended that watch: the next one resumes from the version seen, and
    //    stays the only one while it is open.
    let send = next_watch(&mut handle, "5").await;
    no_request(&mut handle).await;
    // A subscriber that comes later (a restarted labeler) sees the current Node at once
    //    and adds no request.
    let mut late = hub.subscribe(&client, "worker-1");
    assert_eq!(rv(&next_node(&mut late).await).as_deref(), Some("5"));
    no_request(&mut handle).await;

    // 3. Changes reach every subscriber; a bookmark moves the version on.
    answer(
        send,
        &[event("MODIFIED", node("6", Some("ppcie"))), bookmark("9")],
    );
    for rx in [&mut drift, &mut cc, &mut late] {
        assert_eq!(rv(&next_node(rx).await).as_deref(), Some("6"));
    }
    let send = next_watch(&mut handle, "9").await;

    // 4. 410 Gone: start over at 0 (the ADDED event brings the current Node).
    answer(send, &[gone()]);
    let send = next_watch(&mut handle, "0").await;

    // 5. An error is retried after the backoff (1 s first), not at once.
    let failed_at = tokio::time::Instant::now();
    send.send_response(
        Response::builder()
            .status(500)
            .body(Body::from(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "etcd is down", "code": 500})
                .to_string()
                .into_bytes(),
            ))
            .unwrap(),
    );
    let send = next_watch(&mut handle, "0").await;
    assert!(failed_at.elapsed() >= Duration::from_secs(1));

    // 6. The Node deleted: `None` for every subscriber.
    answer(
        send,
        &[
            event("ADDED", node("20", None)),
            event("DELETED", node("21", None)),
        ],
    );
    for rx in [&mut drift, &mut cc, &mut late] {
        let mut last = next_node(rx).await;
        // A receiver may see both versions or only the last.
        if last.is_some() {
            last = next_node(rx).await;
        }
        assert!(last.is_none(), "{last:?}");
    }
    let send = next_watch(&mut handle, "21").await;

    // 7. Every subscriber and the hub gone: the watch stops, with its request open, and
    //    the client is dropped (the mock sees no more requests and no client).
    drop((drift, cc, late, hub, client));
    let end = tokio::time::timeout(Duration::from_secs(600), handle.next_request()).await;
    assert!(matches!(end, Ok(None)), "the watch did not stop");
    drop(send);
}

#[tokio::test(start_paused = true)]
async fn the_cc_mode_label_is_followed_from_the_shared_watch() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let hub = OwnNode::default();
    let (tx, mut labels) = watch::channel::<Option<String>>(None);
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(follow_label(
        hub.subscribe(&client, "worker-1"),
        CC.into(),
        tx,
        stop,
    ));
    // The first read always notifies, even without the label (a receiver waits for it
    // before applying the default).
    let send = next_watch(&mut handle, "0").await;
    answer(send, &[event("ADDED", node("5", None))]);
    assert_eq!(next_label(&mut labels).await, None);

    // Only changes of the value are forwarded: rv 6 (same value) is not.
    let send = next_watch(&mut handle, "5").await;
    answer(send, &[event("MODIFIED", node("6", None))]);
    let send = next_watch(&mut handle, "6").await;
    assert!(
        tokio::time::timeout(Duration::from_secs(600), labels.changed())
            .await
            .is_err(),
        "an unchanged label was forwarded"
    );
    answer(send, &[event("MODIFIED", node("7", Some("on")))]);
    assert_eq!(next_label(&mut labels).await.as_deref(), Some("on"));
    let send = next_watch(&mut handle, "7").await;
    answer(
        send,
        &[
            event("MODIFIED", node("8", Some("on"))),
            event("MODIFIED", node("9", Some("ppcie"))),
        ],
    );
    assert_eq!(next_label(&mut labels).await.as_deref(), Some("ppcie"));

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
