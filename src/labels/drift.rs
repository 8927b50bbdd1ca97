//! One watch on this node's own Node (field selector `metadata.name=<node>`), so that a
//! label or extended resource of cchost's that someone else removes or changes (a label
//! deleted by hand, a kubelet that resets extended resources on restart) is put back at
//! once rather than never: the labeler writes only when the wanted set changes, and
//! without this it would not see the server move away from it.
//!
//! The watch starts at resourceVersion "0" (the API server answers from its watch cache
//! with the current object, no extra GET), resumes from the last version seen when the
//! server ends it, and starts over on 410 Gone. At steady state that is one open watch
//! and no other request. Errors are retried with backoff, never fatal.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, WatchEvent, WatchParams};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::service::Backoff;

/// How long one watch request asks the API server to keep it open (it may end sooner).
const WATCH_TIMEOUT_S: u32 = 290;

/// Watches Node `node` until the returned receiver is dropped, publishing every version
/// of the object it sees.
pub fn watch_own_node(client: Client, node: String) -> watch::Receiver<Option<Node>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let api: Api<Node> = Api::all(client);
        let params = WatchParams::default()
            .fields(&format!("metadata.name={node}"))
            .timeout(WATCH_TIMEOUT_S);
        let mut version = "0".to_string();
        let mut backoff = Backoff::default();
        while !tx.is_closed() {
            let stream = match api.watch(&params, &version).await {
                Ok(s) => s,
                Err(e) => {
                    let d = backoff.fail();
                    tracing::warn!(error = %e, retry_in = ?d, "watching the Node");
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = tx.closed() => return,
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
                    }
                    Some(Ok(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                    Some(Ok(WatchEvent::Error(s))) => {
                        if s.code == 410 {
                            version = "0".to_string();
                        } else {
                            tracing::warn!(code = s.code, message = %s.message, "watching the Node");
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watching the Node");
                        break;
                    }
                }
            }
            // A short pause keeps a server that ends every watch at once from a busy loop.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = tx.closed() => return,
            }
        }
    });
    rx
}
