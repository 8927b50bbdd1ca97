//! One watch on this node's own Node object (field selector `metadata.name=<node>`),
//! forwarding one label's value whenever it changes, as NVIDIA's cc-manager watches
//! `nvidia.com/cc.mode` (NVIDIA/k8s-cc-manager main.py `watch_and_apply`): read the Node
//! once, then watch from its resourceVersion; when the watch ends, watch again from the
//! last version seen; a 410 Gone (the version was compacted away) reads the Node again.
//! Errors are retried with backoff, never fatal.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, WatchEvent, WatchParams};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::service::Backoff;

/// How long one watch request asks the API server to stay open (it may end sooner).
const WATCH_TIMEOUT_S: u32 = 290;

fn label_of(node: &Node, key: &str) -> Option<String> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key).cloned())
}

/// Watches `key` on Node `node` until `shutdown` turns true, sending each new value
/// (`None`: the label is absent) on `tx`. The first read always notifies, even when the
/// label is absent, so a receiver can wait for it before acting on a default.
pub async fn watch_node_label(
    client: Client,
    node: String,
    key: String,
    tx: watch::Sender<Option<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(client);
    let params = WatchParams::default()
        .fields(&format!("metadata.name={node}"))
        .timeout(WATCH_TIMEOUT_S);
    let mut backoff = Backoff::default();
    // The resourceVersion to watch from; None: read the Node first.
    let mut version: Option<String> = None;
    let mut first = true;
    let mut publish = |v: Option<String>| {
        let force = std::mem::take(&mut first);
        tx.send_if_modified(|cur| {
            if force || *cur != v {
                tracing::info!(label = %key, value = ?v, "node label changed");
                *cur = v;
                true
            } else {
                false
            }
        });
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let step = async {
            let rv = match &version {
                Some(v) => v.clone(),
                None => {
                    let n = api
                        .get(&node)
                        .await
                        .map_err(|e| format!("reading Node {node}: {e}"))?;
                    publish(label_of(&n, &key));
                    n.metadata
                        .resource_version
                        .clone()
                        .unwrap_or_else(|| "0".into())
                }
            };
            version = Some(rv.clone());
            let stream = api
                .watch(&params, &rv)
                .await
                .map_err(|e| format!("watching Node {node}: {e}"))?;
            tokio::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev.map_err(|e| format!("watching Node {node}: {e}"))? {
                    WatchEvent::Added(n) | WatchEvent::Modified(n) => {
                        version = n.metadata.resource_version.clone().or(version.take());
                        publish(label_of(&n, &key));
                    }
                    WatchEvent::Deleted(n) => {
                        version = n.metadata.resource_version.clone().or(version.take());
                        publish(None);
                    }
                    WatchEvent::Bookmark(b) => version = Some(b.metadata.resource_version),
                    WatchEvent::Error(e) if e.code == 410 => {
                        tracing::info!(
                            "Node watch: resourceVersion too old; reading the Node again"
                        );
                        version = None;
                        return Ok(());
                    }
                    WatchEvent::Error(e) => {
                        return Err(format!("watching Node {node}: {} ({})", e.message, e.code));
                    }
                }
            }
            Ok::<(), String>(())
        };
        let result = tokio::select! {
            r = step => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let pause = match result {
            Ok(()) => {
                backoff.reset();
                // The server ended the watch (its timeout): watch again, but never in
                // a tight loop against a server that ends every watch at once.
                Duration::from_millis(200)
            }
            Err(e) => {
                let d = backoff.fail();
                tracing::warn!(error = %e, retry_in = ?d, "Node watch failed");
                d
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
