//! The one watch on the own Node (`cc.follow_label`) against kube's tower-test mock: the
//! request shapes (a GET of the Node, then one watch with `fieldSelector=metadata.name=`
//! from its resourceVersion), each label change forwarded, a 410 Gone answered by
//! reading the Node again. The real API-server tier (tests/k8s) runs it for real.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cchost::labels::node_watch::watch_node_label;
use http::{Request, Response};
use kube::client::Body;
use serde_json::json;
use tower_test::mock;

fn node(rv: &str, mode: Option<&str>) -> serde_json::Value {
    let labels = match mode {
        Some(m) => json!({"kubernetes.io/hostname": "worker-1", "nvidia.com/cc.mode": m}),
        None => json!({"kubernetes.io/hostname": "worker-1"}),
    };
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": "worker-1", "resourceVersion": rv, "labels": labels}})
}

fn reply(body: String) -> Response<Body> {
    Response::builder()
        .status(200)
        .body(Body::from(body.into_bytes()))
        .unwrap()
}

#[tokio::test]
async fn one_watch_on_the_own_node_forwards_label_changes() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let (tx, mut rx) = tokio::sync::watch::channel::<Option<String>>(None);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(watch_node_label(
        client,
        "worker-1".into(),
        "nvidia.com/cc.mode".into(),
        tx,
        stop,
    ));

    // 1. The Node is read once.
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.method(), "GET");
    assert_eq!(req.uri().path(), "/api/v1/nodes/worker-1");
    send.send_response(reply(node("5", Some("on")).to_string()));
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().as_deref(), Some("on"));

    // 2. One watch, on this Node only, from the version read.
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/api/v1/nodes");
    let q = req.uri().query().unwrap().to_string();
    for part in [
        "watch=true",
        "fieldSelector=metadata.name%3Dworker-1",
        "resourceVersion=5",
    ] {
        assert!(q.contains(part), "{part} missing in {q}");
    }
    let events = [
        json!({"type": "MODIFIED", "object": node("6", Some("on"))}),
        json!({"type": "MODIFIED", "object": node("7", Some("ppcie"))}),
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}}),
    ];
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    send.send_response(reply(body));
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().as_deref(), Some("ppcie"));

    // 3. 410 Gone: the Node is read again (the label was removed meanwhile), then
    //    watched from the new version.
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/api/v1/nodes/worker-1");
    send.send_response(reply(node("20", None).to_string()));
    rx.changed().await.unwrap();
    assert_eq!(*rx.borrow_and_update(), None);
    let (req, _send) = handle.next_request().await.unwrap();
    assert!(req.uri().query().unwrap().contains("resourceVersion=20"));

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
