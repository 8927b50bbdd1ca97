//! Kubernetes Events on the Node (`events.k8s.io/v1`) for what an operator must act
//! on: a GPU cchost refused to bind or switch, a device that turned unhealthy or
//! unreadable, a service or device-plugin endpoint that failed, labels that cannot be
//! written, a QGS that had to be restarted.
//!
//! Anything may [`raise`] an event; it is queued (at most [`QUEUE_MAX`], oldest dropped)
//! and `cchost run`'s events service posts the queue when it has an API server to post
//! to. The same reason and note are posted once per [`REPEAT_AFTER`]. Events are
//! best-effort: a failed post is logged and counted, never retried in a loop, never
//! blocks anything.
//!
//! Shape: `regarding` is the Node with `uid` = the node name, as kubelet's own Node
//! events have it, which is what `kubectl describe node` searches for; the Event lives in
//! `default`, the only namespace the API server accepts for an Event about a Node, so
//! the grant is one `create` in `default`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::{Notify, watch};

use super::metrics::METRICS;

/// The RBAC the events service needs: (API group, resource, verb), namespaced.
pub const RBAC_NEEDED: &[(&str, &str, &str)] = &[("events.k8s.io", "events", "create")];

/// `reportingController` of every event.
pub const CONTROLLER: &str = "cchost.io/cchost";

/// Queue bound: a flood drops the oldest, not memory.
pub(crate) const QUEUE_MAX: usize = 100;

/// The same reason and note are not posted again within this time.
pub(crate) const REPEAT_AFTER: Duration = Duration::from_secs(600);

/// One event to raise: always `type: Warning` (each one asks for an operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeEvent {
    /// CamelCase, e.g. `GPUBindRefused` (at most 128 characters).
    pub reason: String,
    /// What cchost was doing, e.g. `BindVfio` (at most 128 characters).
    pub action: String,
    /// The human-readable message (cut to 1 kB).
    pub note: String,
}

static QUEUE: Mutex<VecDeque<NodeEvent>> = Mutex::new(VecDeque::new());
static WAKE: Notify = Notify::const_new();

fn queue() -> MutexGuard<'static, VecDeque<NodeEvent>> {
    match QUEUE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Queues an event for the Node (the caller logs it as usual).
pub fn raise(reason: &str, action: &str, note: impl Into<String>) {
    {
        let mut q = queue();
        if q.len() >= QUEUE_MAX {
            q.pop_front();
        }
        q.push_back(NodeEvent {
            reason: cut(reason, 128),
            action: cut(action, 128),
            note: cut(&note.into(), 1024),
        });
    }
    WAKE.notify_one();
}

/// Takes everything queued so far.
pub(crate) fn take_queued() -> Vec<NodeEvent> {
    queue().drain(..).collect()
}

/// At most `max` bytes, cut at a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The Event object for one [`NodeEvent`] (`seq` makes names unique within a
/// nanosecond).
pub(crate) fn event_object(
    node: &str,
    ev: &NodeEvent,
    now: k8s_openapi::jiff::Timestamp,
    seq: u64,
) -> Event {
    let name = format!(
        "{}.{:x}{:x}",
        cut(node, 200),
        now.as_nanosecond().unsigned_abs(),
        seq
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        note: Some(ev.note.clone()),
        type_: Some("Warning".to_string()),
        reporting_controller: Some(CONTROLLER.to_string()),
        reporting_instance: Some(cut(&format!("cchost-{node}"), 128)),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            uid: Some(node.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Posts queued events as they come, until `shutdown` turns true.
pub async fn post_until_shutdown(
    client: kube::Client,
    namespace: &str,
    node: &str,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Event> = Api::namespaced(client, namespace);
    let mut posted: HashMap<(String, String), Instant> = HashMap::new();
    let mut seq = 0u64;
    loop {
        for ev in take_queued() {
            let key = (ev.reason.clone(), ev.note.clone());
            let now = Instant::now();
            if posted
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < REPEAT_AFTER)
            {
                METRICS.node_events_total.inc(&[&ev.reason, "repeated"]);
                continue;
            }
            posted.retain(|_, t| now.duration_since(*t) < REPEAT_AFTER);
            seq += 1;
            let obj = event_object(node, &ev, k8s_openapi::jiff::Timestamp::now(), seq);
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => {
                    posted.insert(key, now);
                    METRICS.node_events_total.inc(&[&ev.reason, "posted"]);
                }
                Err(e) => {
                    METRICS.node_events_total.inc(&[&ev.reason, "failed"]);
                    tracing::warn!(reason = %ev.reason, error = %e, "cannot post a Kubernetes Event on the Node (RBAC: events.k8s.io events create in namespace {namespace})");
                }
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = WAKE.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_the_node_kubectl_describe_finds_and_is_within_limits() {
        let ev = NodeEvent {
            reason: "GPUBindRefused".into(),
            action: "BindVfio".into(),
            note: cut(&"é".repeat(2000), 1024),
        };
        assert!(ev.note.len() <= 1024 && ev.note.len() >= 1022);
        let t = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let e = event_object("worker-1", &ev, t, 7);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["regarding"]["kind"], "Node");
        assert_eq!(v["regarding"]["uid"], "worker-1");
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["reportingController"], CONTROLLER);
        assert!(
            v["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("worker-1.")
        );
        assert!(
            v["eventTime"]
                .as_str()
                .unwrap()
                .starts_with("2027-01-15T08:00:00")
        );
    }
}
