//! The one watch on this node's own Node object (field selector `metadata.name=<node>`),
//! shared by everything in `cchost run` that follows the Node: the labeler's drift check
//! (a label or extended resource of cchost's that someone removed or changed is put back
//! at once, [`super::service`]) and `cc.follow_label` (the `nvidia.com/cc.mode` label,
//! [`super::node_watch`]). Each subscriber gets a [`watch::Receiver`] of the latest
//! version of the Node; however many there are, the API server sees one watch.
//!
//! The watch starts at resourceVersion "0": the API server answers from its watch cache
//! with a synthetic ADDED event carrying the current object, so no GET is needed
//! (docs/facts/k8s.md#watch). When the server ends the watch (its timeout, or ours of
//! [`WATCH_TIMEOUT_S`]) it resumes from the last version seen (an object's or a
//! bookmark's); a 410 Gone (that version was compacted away) starts over at "0".
//! Errors are retried with backoff, never fatal. At steady state that is one open watch
//! and no other request.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, WatchEvent, WatchParams};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::service::Backoff;

/// How long one watch request asks the API server to keep it open (it may end sooner).
pub(crate) const WATCH_TIMEOUT_S: u32 = 290;

/// A pause between two watches, so that a server that ends every watch at once does not
/// turn this into a busy loop.
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// The own-Node watch, started by the first [`OwnNode::subscribe`] and shared by every
/// later one. Cheap to clone (all clones share the one watch). The watch runs while this
/// hub or any receiver it handed out is alive; with all of them dropped it stops.
#[derive(Clone, Default)]
pub struct OwnNode {
    running: Arc<Mutex<Option<Running>>>,
}

struct Running {
    node: String,
    /// Keeps the watch alive as long as the hub lives, whoever subscribed.
    rx: watch::Receiver<Option<Node>>,
}

impl OwnNode {
    /// A receiver of Node `node` as the API server has it (`None`: not read yet, or the
    /// Node was deleted). The first call starts the watch with `client`; later calls for
    /// the same node share it. When the Node was already read, the receiver starts
    /// "changed", so a late subscriber sees the current object at its first `changed()`.
    ///
    /// Must be called inside a tokio runtime (the first call spawns the watch).
    pub fn subscribe(&self, client: &Client, node: &str) -> watch::Receiver<Option<Node>> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = running.as_ref().filter(|r| r.node == node) {
            let mut rx = r.rx.clone();
            if rx.borrow().is_some() {
                rx.mark_changed();
            }
            return rx;
        }
        if let Some(r) = running.as_ref() {
            // One cchost keeps one Node; a second name is a configuration change.
            tracing::warn!(was = %r.node, now = %node, "the own Node's name changed; watching the new one");
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(run(client.clone(), node.to_string(), tx));
        *running = Some(Running {
            node: node.to_string(),
            rx: rx.clone(),
        });
        rx
    }
}

/// The watch loop: publishes every version of the Node on `tx` until every receiver is
/// gone.
async fn run(client: Client, node: String, tx: watch::Sender<Option<Node>>) {
    let api: Api<Node> = Api::all(client);
    let params = WatchParams::default()
        .fields(&format!("metadata.name={node}"))
        .timeout(WATCH_TIMEOUT_S);
    let mut version = "0".to_string();
    let mut backoff = Backoff::default();
    while !tx.is_closed() {
        let started = tokio::select! {
            r = api.watch(&params, &version) => r,
            () = tx.closed() => return,
        };
        let stream = match started {
            Ok(s) => s,
            Err(e) => {
                let d = backoff.fail();
                tracing::warn!(node = %node, error = %e, retry_in = ?d, "watching the own Node");
                if !sleep_unless_closed(&tx, d).await {
                    return;
                }
                continue;
            }
        };
        tokio::pin!(stream);
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                () = tx.closed() => return,
            };
            match ev {
                // The server ended the watch: watch again from `version`.
                None => break,
                Some(Ok(WatchEvent::Added(n) | WatchEvent::Modified(n))) => {
                    backoff.reset();
                    if let Some(v) = n.metadata.resource_version.clone() {
                        version = v;
                    }
                    tx.send_replace(Some(n));
                }
                Some(Ok(WatchEvent::Deleted(n))) => {
                    if let Some(v) = n.metadata.resource_version.clone() {
                        version = v;
                    }
                    tracing::warn!(node = %node, "the own Node was deleted");
                    tx.send_replace(None);
                }
                Some(Ok(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                Some(Ok(WatchEvent::Error(s))) => {
                    if s.code == 410 {
                        tracing::info!(node = %node, "own Node watch: resourceVersion too old; starting over");
                        version = "0".to_string();
                    } else {
                        let d = backoff.fail();
                        tracing::warn!(node = %node, code = s.code, message = %s.message, retry_in = ?d, "watching the own Node");
                        if !sleep_unless_closed(&tx, d).await {
                            return;
                        }
                    }
                    break;
                }
                Some(Err(e)) => {
                    let d = backoff.fail();
                    tracing::warn!(node = %node, error = %e, retry_in = ?d, "watching the own Node");
                    if !sleep_unless_closed(&tx, d).await {
                        return;
                    }
                    break;
                }
            }
        }
        if !sleep_unless_closed(&tx, REWATCH_PAUSE).await {
            return;
        }
    }
}

/// Sleeps `d`; false when every receiver went away meanwhile (the watch loop ends).
async fn sleep_unless_closed(tx: &watch::Sender<Option<Node>>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = tx.closed() => false,
    }
}
