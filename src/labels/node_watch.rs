//! One label of the own Node, followed as NVIDIA's cc-manager follows `nvidia.com/cc.mode`
//! (NVIDIA/k8s-cc-manager main.py `watch_and_apply`): each new value is forwarded. The
//! Node comes from the shared own-Node watch ([`super::own_node`]), so following a label
//! costs the API server no request of its own.

use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;

fn label_of(node: &Node, key: &str) -> Option<String> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key).cloned())
}

/// Forwards label `key` of the Node versions arriving on `nodes` to `tx` (`None`: the
/// label is absent, or the Node was deleted) until `shutdown` turns true or the watch
/// ends. Nothing is sent before the Node was first read; that first read always
/// notifies, even when the label is absent, so a receiver can wait for it before acting
/// on a default. After it, only changes of the value are sent.
pub async fn follow_label(
    mut nodes: watch::Receiver<Option<Node>>,
    key: String,
    tx: watch::Sender<Option<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        tokio::select! {
            r = nodes.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let node = nodes.borrow_and_update().clone();
        // `None` before the first read: nothing known yet, nothing to say.
        if first && node.is_none() {
            continue;
        }
        let v = node.as_ref().and_then(|n| label_of(n, &key));
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
    }
}
