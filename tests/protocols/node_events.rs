//! Kubernetes Events on the Node, against kube's tower-test mock: what is posted
//! (method, path, the events.k8s.io/v1 body kubectl describe node finds), that the same
//! event is not posted twice within the repeat window, and that a refused post (403) is
//! counted and does not stop the poster. The RBAC this needs is in
//! tests/fixture_hosts/deploy_manifests.rs.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cchost::observe::events::{self, CONTROLLER};
use cchost::observe::metrics::METRICS;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

async fn next(handle: &mut Handle, status: u16) -> (String, String, Value) {
    let (req, send) =
        tokio::time::timeout(std::time::Duration::from_secs(10), handle.next_request())
            .await
            .expect("a request in time")
            .expect("a request");
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let reply = if status == 201 {
        body.clone()
    } else {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": status, "message": "events.events.k8s.io is forbidden"})
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    (method, path, body)
}

#[tokio::test]
async fn events_are_posted_on_the_node_once_per_window_and_a_refusal_is_counted() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let poster = tokio::spawn(async move {
        events::post_until_shutdown(client, "cchost", "worker-1", shutdown).await;
    });

    events::raise(
        "GPUBindRefused",
        "BindVfio",
        "cchost vfio.bind_on_start refused: 0000:3b:00.0: in use by pid 42",
    );
    let (method, path, body) = next(&mut handle, 201).await;
    assert_eq!(method, "POST");
    assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/cchost/events");
    assert_eq!(body["apiVersion"], "events.k8s.io/v1");
    assert_eq!(body["kind"], "Event");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "GPUBindRefused");
    assert_eq!(body["action"], "BindVfio");
    assert_eq!(body["reportingController"], CONTROLLER);
    assert_eq!(body["reportingInstance"], "cchost-worker-1");
    assert_eq!(
        body["regarding"],
        json!({"apiVersion": "v1", "kind": "Node", "name": "worker-1", "uid": "worker-1"})
    );
    assert!(body["eventTime"].is_string(), "{body}");
    assert!(body["note"].as_str().unwrap().contains("in use by pid 42"));

    // The same event again is not posted; a different one is, and its refusal (403)
    // is counted, not retried in a loop.
    events::raise(
        "GPUBindRefused",
        "BindVfio",
        "cchost vfio.bind_on_start refused: 0000:3b:00.0: in use by pid 42",
    );
    events::raise(
        "ServiceFailed",
        "Restart",
        "cchost run: service labels failed: boom",
    );
    let (_, _, body) = next(&mut handle, 403).await;
    assert_eq!(body["reason"], "ServiceFailed");
    events::raise(
        "DeviceUnhealthy",
        "AdvertiseDevices",
        "nvidia.com/pgpu 12: /dev/vfio/12 is missing",
    );
    let (_, _, body) = next(&mut handle, 201).await;
    assert_eq!(body["reason"], "DeviceUnhealthy");
    stop.send(true).unwrap();
    poster.await.unwrap();
    assert_eq!(
        METRICS
            .node_events_total
            .get(&["GPUBindRefused", "repeated"]),
        Some(1.0)
    );
    assert_eq!(
        METRICS.node_events_total.get(&["ServiceFailed", "failed"]),
        Some(1.0)
    );
    assert_eq!(
        METRICS
            .node_events_total
            .get(&["DeviceUnhealthy", "posted"]),
        Some(1.0)
    );
}
