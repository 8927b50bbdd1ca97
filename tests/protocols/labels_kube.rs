//! The label writer against kube's tower-test mock: request shapes (method, path,
//! fieldManager=cchost&force=true, apply-patch content type, body) and SSA semantics
//! (only our keys, removed keys omitted, no write at steady state, 403 names the verb).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use cchost::labels::NodeLabels;
use cchost::labels::cluster::{KubeLabeler, KubeMode};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn labeler(mode: KubeMode) -> (KubeLabeler, Handle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    (KubeLabeler::new(client, "worker-1", mode), handle)
}

/// One request as the mock saw it.
struct Seen {
    method: String,
    path: String,
    query: BTreeSet<String>,
    content_type: String,
    body: Value,
}

async fn next(handle: &mut Handle, status: u16, reply: Value) -> Seen {
    let (req, send) = handle.next_request().await.expect("a request");
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    Seen {
        method,
        path,
        query,
        content_type,
        body,
    }
}

fn ssa_query() -> BTreeSet<String> {
    ["fieldManager=cchost", "force=true"]
        .map(String::from)
        .into()
}

fn node(labels: Value, managed: Value, capacity: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": "worker-1", "labels": labels, "managedFields": managed },
        "status": { "capacity": capacity },
    })
}

fn want(labels: &[(&str, &str)], res: &[(&str, &str)]) -> NodeLabels {
    let m = |x: &[(&str, &str)]| -> BTreeMap<String, String> {
        x.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    NodeLabels {
        labels: m(labels),
        extended_resources: m(res),
        problems: vec![],
    }
}

fn status_403(msg: &str) -> Value {
    json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":msg,"reason":"Forbidden","code":403})
}

#[tokio::test]
async fn fresh_node_gets_labels_and_resources_by_ssa_then_nothing_at_steady_state() {
    let (mut l, mut h) = labeler(KubeMode::Node);
    let w = want(
        &[
            ("intel.feature.node.kubernetes.io/tdx", "true"),
            ("cchost.io/tee", "tdx"),
        ],
        &[("tdx.intel.com/keys", "63")],
    );
    let w2 = w.clone();
    let server = tokio::spawn(async move {
        let get = next(
            &mut h,
            200,
            node(
                json!({"kubernetes.io/hostname":"worker-1"}),
                json!([]),
                json!({"cpu":"64"}),
            ),
        )
        .await;
        assert_eq!(get.method, "GET");
        assert_eq!(get.path, "/api/v1/nodes/worker-1");

        let p = next(&mut h, 200, node(json!({}), json!([]), json!({}))).await;
        assert_eq!(p.method, "PATCH");
        assert_eq!(p.path, "/api/v1/nodes/worker-1");
        assert_eq!(p.query, ssa_query());
        assert_eq!(p.content_type, "application/apply-patch+yaml");
        assert_eq!(
            p.body,
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"worker-1","labels":{
                "cchost.io/tee":"tdx","intel.feature.node.kubernetes.io/tdx":"true"}}})
        );

        let s = next(&mut h, 200, node(json!({}), json!([]), json!({}))).await;
        assert_eq!(s.method, "PATCH");
        assert_eq!(s.path, "/api/v1/nodes/worker-1/status");
        assert_eq!(s.query, ssa_query());
        assert_eq!(s.content_type, "application/apply-patch+yaml");
        assert_eq!(
            s.body,
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"worker-1"},
                   "status":{"capacity":{"tdx.intel.com/keys":"63"}}})
        );
        h
    });
    let r = l.sync(&w).await.unwrap();
    assert_eq!((r.reads, r.writes), (1, 2));
    let mut h = server.await.unwrap();
    // Steady state: no request at all. A request would wait forever for the mock's
    // answer; the timeout only turns such a hang into a failure.
    let r = tokio::time::timeout(std::time::Duration::from_secs(30), l.sync(&w2))
        .await
        .expect("steady state made an API request")
        .unwrap();
    assert_eq!((r.reads, r.writes), (0, 0));
    // A fact goes away: the label is left out of the next apply (SSA removes it).
    let w3 = want(&[("cchost.io/tee", "none")], &[]);
    let server = tokio::spawn(async move {
        let p = next(&mut h, 200, node(json!({}), json!([]), json!({}))).await;
        assert_eq!(
            p.body["metadata"]["labels"],
            json!({"cchost.io/tee":"none"})
        );
        let s = next(&mut h, 200, node(json!({}), json!([]), json!({}))).await;
        assert_eq!(s.body["status"]["capacity"], json!({}));
    });
    let r = l.sync(&w3).await.unwrap();
    assert_eq!(r.writes, 2);
    server.await.unwrap();
}

#[tokio::test]
async fn restart_on_an_already_labelled_node_makes_no_write() {
    let (mut l, mut h) = labeler(KubeMode::Node);
    let w = want(
        &[("cchost.io/tee", "snp")],
        &[("sev-snp.amd.com/esids", "99")],
    );
    let managed = json!([
        {"manager":"cchost","operation":"Apply","apiVersion":"v1","fieldsType":"FieldsV1",
         "fieldsV1":{"f:metadata":{"f:labels":{"f:cchost.io/tee":{}}}}},
        {"manager":"cchost","operation":"Apply","apiVersion":"v1","fieldsType":"FieldsV1","subresource":"status",
         "fieldsV1":{"f:status":{"f:capacity":{"f:sev-snp.amd.com/esids":{}}}}},
        {"manager":"kubelet","operation":"Update","apiVersion":"v1","fieldsType":"FieldsV1",
         "fieldsV1":{"f:metadata":{"f:labels":{"f:kubernetes.io/hostname":{}}}}}
    ]);
    let server = tokio::spawn(async move {
        let get = next(
            &mut h,
            200,
            node(
                json!({"cchost.io/tee":"snp","kubernetes.io/hostname":"worker-1"}),
                managed,
                json!({"cpu":"64","sev-snp.amd.com/esids":"99"}),
            ),
        )
        .await;
        assert_eq!(get.method, "GET");
    });
    let r = l.sync(&w).await.unwrap();
    assert_eq!((r.reads, r.writes), (1, 0));
    server.await.unwrap();
}

#[tokio::test]
async fn forbidden_names_the_missing_rbac_verb() {
    let (mut l, mut h) = labeler(KubeMode::Node);
    let server = tokio::spawn(async move {
        next(&mut h, 200, node(json!({}), json!([]), json!({}))).await;
        next(
            &mut h,
            403,
            status_403("nodes \"worker-1\" is forbidden: User \"system:serviceaccount:cchost:cchost\" cannot patch resource \"nodes\""),
        )
        .await;
    });
    let err = l
        .sync(&want(&[("cchost.io/tee", "none")], &[]))
        .await
        .unwrap_err();
    assert!(err.is_forbidden());
    let msg = err.to_string();
    assert!(msg.contains("RBAC verb `patch` on `nodes`"), "{msg}");
    server.await.unwrap();
}

#[tokio::test]
async fn node_feature_mode_applies_a_nodefeature_object() {
    let (mut l, mut h) = labeler(KubeMode::NodeFeature {
        namespace: "cchost".into(),
    });
    let server = tokio::spawn(async move {
        let get = next(&mut h, 200, node(json!({}), json!([]), json!({}))).await;
        assert_eq!(get.path, "/api/v1/nodes/worker-1");
        let get_nf = next(
            &mut h,
            404,
            json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}),
        )
        .await;
        assert_eq!(
            get_nf.path,
            "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/cchost/nodefeatures/worker-1-cchost"
        );
        let p = next(&mut h, 200, json!({"apiVersion":"nfd.k8s-sigs.io/v1alpha1","kind":"NodeFeature","metadata":{"name":"worker-1-cchost","namespace":"cchost"}})).await;
        assert_eq!(p.method, "PATCH");
        assert_eq!(
            p.path,
            "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/cchost/nodefeatures/worker-1-cchost"
        );
        assert_eq!(p.query, ssa_query());
        assert_eq!(p.content_type, "application/apply-patch+yaml");
        assert_eq!(
            p.body,
            json!({"apiVersion":"nfd.k8s-sigs.io/v1alpha1","kind":"NodeFeature",
                   "metadata":{"name":"worker-1-cchost","namespace":"cchost",
                               "labels":{"nfd.node.kubernetes.io/node-name":"worker-1"}},
                   "spec":{"labels":{"amd.feature.node.kubernetes.io/snp":"true"}}})
        );
    });
    let r = l
        .sync(&want(
            &[("amd.feature.node.kubernetes.io/snp", "true")],
            &[],
        ))
        .await
        .unwrap();
    assert_eq!((r.reads, r.writes), (2, 1));
    server.await.unwrap();
}

#[tokio::test]
async fn missing_node_is_a_clear_error() {
    let (mut l, mut h) = labeler(KubeMode::Node);
    let server = tokio::spawn(async move {
        next(
            &mut h,
            404,
            json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}),
        )
        .await;
    });
    let err = l.sync(&want(&[], &[])).await.unwrap_err().to_string();
    assert!(
        err.contains("worker-1") && err.contains("NODE_NAME"),
        "{err}"
    );
    server.await.unwrap();
}
