//! The labeler as a service for `cchost run`: recompute the labels every interval, write
//! them through the configured backend only when they change, retry failures with
//! backoff (a 403 names the missing RBAC verb), never crash, never block other services.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;

use super::cluster::{self, KubeLabeler, KubeMode};
use super::nfdfile::FileLabeler;
use super::own_node::OwnNode;
use super::{NodeLabels, compute};
use crate::config::{LabelBackend, LabelsConfig};
use crate::host::HostRoot;
use crate::inventory::NodeFacts;

/// How the labeler reads the facts each round (the inventory, in `cchost run`).
pub type FactSource = Arc<dyn Fn(&HostRoot) -> Result<NodeFacts, String> + Send + Sync>;

/// The fact source `cchost run` uses: a fresh inventory of the host each round, plus the
/// GPUs' CC mode read from their firmware where that is safe ([`super::cc_mode`]).
pub fn inventory_facts(
    config: crate::config::Config,
    cache: super::cc_mode::SharedCcModes,
) -> FactSource {
    Arc::new(move |host: &HostRoot| {
        let inv = crate::inventory::Inventory::collect(host, &config);
        for p in &inv.problems {
            tracing::debug!(path = %p.path.display(), "{}", p.message);
        }
        let mut facts = NodeFacts::from_inventory(&inv);
        facts.duties = super::duties::duties(&config, host);
        if config.labels.nvidia {
            let query = super::cc_mode::live_query(host);
            cache
                .lock()
                .map_err(|_| "CC mode cache poisoned".to_string())?
                .fill(host, &config.matching, &mut facts, &query);
        }
        Ok(facts)
    })
}

pub struct LabelerContext {
    pub host: HostRoot,
    pub config: LabelsConfig,
    pub facts: FactSource,
    /// The own-Node watch, shared with the other services of `cchost run` that follow
    /// the Node (`cc.follow_label`); a labeler alone gets its own (`Default`).
    pub own_node: OwnNode,
}

/// The backend actually used (`auto` resolved).
pub(crate) fn resolve_backend(cfg: &LabelsConfig) -> LabelBackend {
    match cfg.backend {
        LabelBackend::Auto => {
            if cfg.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                LabelBackend::Node
            } else {
                LabelBackend::File
            }
        }
        b => b,
    }
}

/// This node's name: `labels.node_name`, then `NODE_NAME` (downward API), then the
/// host's /etc/hostname, then the kernel's host name.
pub(crate) fn node_name(cfg: &LabelsConfig, host: &HostRoot) -> Option<String> {
    if !cfg.node_name.is_empty() {
        return Some(cfg.node_name.clone());
    }
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.trim().is_empty()
    {
        return Some(n.trim().to_string());
    }
    for p in ["/etc/hostname", "/proc/sys/kernel/hostname"] {
        if let Ok(Some(n)) = host.read_attr_opt(p)
            && !n.is_empty()
        {
            return Some(n);
        }
    }
    None
}

fn namespace(cfg: &LabelsConfig) -> String {
    if !cfg.namespace.is_empty() {
        return cfg.namespace.clone();
    }
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cchost".to_string())
}

enum Sink {
    Kube(KubeLabeler),
    /// Shared so that its write (with fsync) runs on a blocking thread, not on the
    /// daemon's runtime thread.
    File(Arc<std::sync::Mutex<FileLabeler>>),
    Off,
}

/// Exponential backoff from 1 s to 5 min.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(300);

    pub fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }
}

async fn make_sink(ctx: &LabelerContext) -> Result<Sink, String> {
    let backend = resolve_backend(&ctx.config);
    match backend {
        LabelBackend::Off => Ok(Sink::Off),
        LabelBackend::File | LabelBackend::Auto => Ok(Sink::File(Arc::new(std::sync::Mutex::new(
            FileLabeler::new(ctx.host.clone(), &ctx.config.feature_file),
        )))),
        LabelBackend::Node | LabelBackend::NodeFeature => {
            let node = node_name(&ctx.config, &ctx.host)
                .ok_or("no node name: set NODE_NAME (downward API) or labels.node_name")?;
            let client = cluster::client(ctx.config.kubeconfig.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            let mode = if backend == LabelBackend::Node {
                KubeMode::Node
            } else {
                KubeMode::NodeFeature {
                    namespace: namespace(&ctx.config),
                }
            };
            Ok(Sink::Kube(KubeLabeler::new(client, node, mode)))
        }
    }
}

/// One round; `Ok(true)` when it wrote a change.
async fn round(ctx: &LabelerContext, sink: &mut Sink) -> Result<bool, String> {
    let host = ctx.host.clone();
    let facts = ctx.facts.clone();
    let facts = tokio::task::spawn_blocking(move || facts(&host))
        .await
        .map_err(|e| format!("fact reader panicked: {e}"))??;
    let want: NodeLabels = compute(&facts, &ctx.config);
    for p in &want.problems {
        tracing::warn!(problem = %p, "labels");
    }
    match sink {
        Sink::Off => Ok(false),
        Sink::File(f) => {
            let f = f.clone();
            tokio::task::spawn_blocking(move || match f.lock() {
                Ok(mut f) => f.sync(&want).map_err(|e| e.to_string()),
                Err(_) => Err("feature-file writer poisoned".to_string()),
            })
            .await
            .map_err(|e| format!("feature-file writer panicked: {e}"))?
        }
        Sink::Kube(k) => k
            .sync(&want)
            .await
            .map(|r| r.writes > 0)
            .map_err(|e| e.to_string()),
    }
}

/// The next version of the Node from the own-Node watch; pending forever without one.
async fn next_node(rx: &mut Option<watch::Receiver<Option<Node>>>) -> Option<Node> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => r.borrow_and_update().clone(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Runs until `shutdown` completes. Errors are logged and retried with backoff. With a
/// cluster backend it also follows its own Node (the shared watch of [`super::own_node`])
/// and writes again at once when someone else removed or changed what it applied: the
/// labeler writes only when the wanted set changes, and without the watch it would not
/// see the server move away from it.
pub async fn run_labeler(ctx: LabelerContext, shutdown: impl Future<Output = ()>) {
    run_labeler_reporting(ctx, shutdown, |_| {}).await;
}

/// [`run_labeler`], telling `report` how each round went: `Ok(wrote a change)` or the
/// error (including a backend that cannot start).
pub(crate) async fn run_labeler_reporting(
    ctx: LabelerContext,
    shutdown: impl Future<Output = ()>,
    report: impl Fn(Result<bool, &str>),
) {
    tokio::pin!(shutdown);
    let interval = Duration::from_secs(ctx.config.interval_seconds.max(1));
    let mut backoff = Backoff::default();
    let mut sink: Option<Sink> = None;
    let mut node_rx: Option<watch::Receiver<Option<Node>>> = None;
    loop {
        let wait = async {
            if sink.is_none() {
                match make_sink(&ctx).await {
                    Ok(s) => {
                        if let Sink::Kube(k) = &s {
                            node_rx = Some(ctx.own_node.subscribe(&k.client(), k.node()));
                        }
                        sink = Some(s)
                    }
                    Err(e) => {
                        let d = backoff.fail();
                        tracing::error!(error = %e, retry_in = ?d, "labeler cannot start its backend");
                        report(Err(&e));
                        return d;
                    }
                }
            }
            let Some(s) = sink.as_mut() else {
                return backoff.fail();
            };
            match round(&ctx, s).await {
                Ok(changed) => {
                    backoff.reset();
                    report(Ok(changed));
                    interval
                }
                Err(e) => {
                    let d = backoff.fail();
                    tracing::error!(error = %e, retry_in = ?d, "labels not written");
                    report(Err(&e));
                    d
                }
            }
        };
        let d = tokio::select! {
            d = wait => d,
            () = &mut shutdown => return,
        };
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                () = &mut shutdown => return,
                n = next_node(&mut node_rx) => {
                    if let (Some(n), Some(Sink::Kube(k))) = (n, sink.as_mut())
                        && k.drifted(&n)
                    {
                        tracing::info!(node = %k.node(), "the Node lost or changed labels or resources cchost applied; writing them again");
                        k.forget();
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<u64> = (0..11).map(|_| b.fail().as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        b.reset();
        assert_eq!(b.fail().as_secs(), 1);
    }

    #[tokio::test]
    async fn file_backend_round_writes_the_feature_file_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let config = LabelsConfig {
            backend: LabelBackend::File,
            ..Default::default()
        };
        let facts: FactSource = Arc::new(|_h: &HostRoot| {
            let mut f = NodeFacts::default();
            f.snp.enabled = true;
            Ok(f)
        });
        let ctx = LabelerContext {
            host,
            config,
            facts,
            own_node: OwnNode::default(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_labeler(ctx, async {
            let _ = rx.await;
        }));
        let file = dir
            .path()
            .join("etc/kubernetes/node-feature-discovery/features.d/cchost");
        // Wait for the first round (bounded; not a timing assertion).
        for _ in 0..500 {
            if file.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("amd.feature.node.kubernetes.io/snp=true"),
            "{text}"
        );
        tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn failing_fact_source_does_not_crash_and_shutdown_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = LabelerContext {
            host: HostRoot::new(dir.path()).unwrap(),
            config: LabelsConfig {
                backend: LabelBackend::File,
                ..Default::default()
            },
            facts: Arc::new(|_h: &HostRoot| Err("inventory failed".to_string())),
            own_node: OwnNode::default(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_labeler(ctx, async {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).unwrap();
        task.await.unwrap();
        assert!(!dir.path().join("etc/kubernetes").exists());
    }
}
