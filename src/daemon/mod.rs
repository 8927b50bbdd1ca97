//! `cchost run`: a set of services (tokio tasks) that share a shutdown signal and an
//! "the host's devices changed" notification.
//!
//! - [`uevents`] turns kernel uevents into change notifications (debounced), with a
//!   slow safety-net rescan; there is no polling loop.
//! - [`passthrough`] keeps the CDI spec and the device plugin in step with the host.
//!
//! More services (node labels, DCAP helpers) are added with [`Daemon::add_service`];
//! each gets a [`Context`] and returns when `ctx.shutdown` turns true.

pub mod bind_on_start;
pub mod cc_label;
pub mod cc_on_start;
pub mod passthrough;
pub mod status;
pub mod trim;
pub mod uevents;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::host::HostRoot;

/// Why the services were told to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Increases with every notification.
    pub seq: u64,
    /// What triggered it (`start`, `uevent pci bind 0000:3b:00.0`, `rescan timer`).
    pub reason: String,
}

/// What every service gets.
#[derive(Clone)]
pub struct Context {
    pub host: HostRoot,
    pub config: Arc<Config>,
    /// Turns true once; services then stop and clean up.
    pub shutdown: watch::Receiver<bool>,
    /// Bumped when the host's devices may have changed.
    pub changes: watch::Receiver<Change>,
    /// The GPUs' CC modes as last read or switched (the labeler and the CC manager).
    pub cc_modes: crate::labels::cc_mode::SharedCcModes,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("service {service}: {message}")]
    Service { service: String, message: String },
}

pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<(), DaemonError>> + Send>>;
type ServiceFn = Box<dyn FnOnce(Context) -> ServiceFuture + Send>;

/// When `cchost run` drops the executable's start-up pages ([`trim`]), once: start-up
/// (first scan, CDI write, serve, register) takes milliseconds, so 2 s is well after it.
pub const TRIM_AFTER: Duration = Duration::from_secs(2);

/// How long services get to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Daemon {
    host: HostRoot,
    config: Arc<Config>,
    services: Vec<(String, ServiceFn)>,
}

impl Daemon {
    pub fn new(host: HostRoot, config: Config) -> Self {
        Daemon {
            host,
            config: Arc::new(config),
            services: Vec::new(),
        }
    }

    /// The standard set: the passthrough service (CDI spec + device plugin), node
    /// labels (Kubernetes or the NFD feature file, `[labels]`), and QGS supervision on
    /// TDX hosts (`[dcap.supervise]`, off unless configured).
    pub fn with_default_services(mut self) -> Self {
        self.add_service("passthrough", |ctx| Box::pin(passthrough::run(ctx)));
        if self.config.labels.backend != crate::config::LabelBackend::Off {
            self.add_service("labels", |ctx| Box::pin(run_labels(ctx)));
        }
        if self.config.cc.follow_label {
            self.add_service("cc-label", |ctx| Box::pin(run_cc_label(ctx)));
        }
        if self.config.dcap.supervise.mode != crate::config::SuperviseMode::Off {
            self.add_service("dcap", |ctx| Box::pin(run_dcap(ctx)));
        }
        self
    }

    pub fn add_service(
        &mut self,
        name: &str,
        f: impl FnOnce(Context) -> ServiceFuture + Send + 'static,
    ) {
        self.services.push((name.to_string(), Box::new(f)));
    }

    /// Runs every service until `stop` resolves (SIGTERM in the CLI), then signals
    /// shutdown and waits for them. A service that fails is logged; the others go on.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (changes_tx, changes) = watch::channel(Change {
            seq: 0,
            reason: "start".to_string(),
        });
        let rescan = Duration::from_secs(self.config.device_plugin.rescan_interval_s);
        let watcher = tokio::spawn(uevents::watch(
            self.host.clone(),
            changes_tx,
            shutdown.clone(),
            rescan,
            self.config.device_plugin.event_source,
        ));
        let ctx = Context {
            host: self.host.clone(),
            config: self.config.clone(),
            shutdown: shutdown.clone(),
            changes,
            cc_modes: Default::default(),
        };
        let mut tasks = Vec::new();
        for (name, f) in self.services {
            tracing::info!(service = %name, "starting");
            let fut = f(ctx.clone());
            let service = name.clone();
            tasks.push((
                name,
                tokio::spawn(async move {
                    let r = fut.await;
                    // Say so at once; the other services keep running.
                    if let Err(e) = &r {
                        tracing::error!(%service, error = %e, "service failed");
                    }
                    r
                }),
            ));
        }
        stop.await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
        let mut first_error = None;
        for (name, mut task) in tasks {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
                Ok(Ok(Ok(()))) => tracing::info!(service = %name, "stopped"),
                Ok(Ok(Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Ok(Err(e)) => {
                    tracing::error!(service = %name, error = %e, "service panicked");
                    first_error.get_or_insert(DaemonError::Service {
                        service: name,
                        message: e.to_string(),
                    });
                }
                Err(_) => {
                    tracing::error!(service = %name, "did not stop in time");
                    task.abort();
                }
            }
        }
        watcher.abort();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Node labels as a daemon service: the labeler recomputes from a fresh inventory each
/// round and writes only on change; its errors are retried, never fatal.
async fn run_labels(ctx: Context) -> Result<(), DaemonError> {
    use crate::labels::service::{LabelerContext, inventory_facts, run_labeler};
    let lctx = LabelerContext {
        host: ctx.host.clone(),
        config: ctx.config.labels.clone(),
        facts: inventory_facts((*ctx.config).clone(), ctx.cc_modes.clone()),
    };
    let mut shutdown = ctx.shutdown.clone();
    run_labeler(lctx, async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await;
    Ok(())
}

/// `cc.follow_label`: one watch on the own Node's `nvidia.com/cc.mode`, and the applier.
async fn run_cc_label(ctx: Context) -> Result<(), DaemonError> {
    use crate::gpu::cc::live::MmioOpener;
    use crate::gpu::cc::node_mode::CC_MODE_LABEL;
    let fail = |message: String| DaemonError::Service {
        service: "cc-label".to_string(),
        message,
    };
    let node =
        crate::labels::service::node_name(&ctx.config.labels, &ctx.host).ok_or_else(|| {
            fail("no node name: set NODE_NAME (downward API) or labels.node_name".into())
        })?;
    let client = crate::labels::cluster::client(ctx.config.labels.kubeconfig.as_deref())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let inv = crate::inventory::Inventory::collect(&ctx.host, &ctx.config);
    let facts = crate::plan::NodeFacts::from_inventory(&inv);
    let applier = std::sync::Arc::new(cc_label::Applier {
        host: ctx.host.clone(),
        config: ctx.config.clone(),
        tee_on: facts.tdx.enabled != facts.snp.enabled,
        opener: std::sync::Arc::new(MmioOpener::default()),
        modes: ctx.cc_modes.clone(),
        retry: cc_label::RETRY,
    });
    let (tx, rx) = watch::channel(None);
    let watcher = tokio::spawn(crate::labels::node_watch::watch_node_label(
        client,
        node,
        CC_MODE_LABEL.to_string(),
        tx,
        ctx.shutdown.clone(),
    ));
    applier.run(rx, ctx.shutdown.clone()).await;
    watcher.abort();
    Ok(())
}

/// QGS supervision (child process or qgsd.service over D-Bus).
async fn run_dcap(ctx: Context) -> Result<(), DaemonError> {
    crate::dcap::supervisor::run(
        ctx.host.clone(),
        ctx.config.dcap.clone(),
        ctx.shutdown.clone(),
    )
    .await
    .map_err(|e| DaemonError::Service {
        service: "dcap".to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn services_share_shutdown_and_one_failure_does_not_stop_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostRoot::new(tmp.path()).unwrap();
        let mut cfg = Config::default();
        cfg.device_plugin.rescan_interval_s = 0;
        let mut d = Daemon::new(host, cfg);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let tx = seen_tx.clone();
        d.add_service("waits", move |mut ctx| {
            Box::pin(async move {
                let _ = ctx.shutdown.wait_for(|s| *s).await;
                let _ = tx.send("waits stopped");
                Ok(())
            })
        });
        d.add_service("fails", move |_ctx| {
            Box::pin(async move {
                let _ = seen_tx.send("fails ran");
                Err(DaemonError::Service {
                    service: "fails".into(),
                    message: "boom".into(),
                })
            })
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(d.run(async move {
            let _ = stop_rx.await;
        }));
        assert_eq!(seen_rx.recv().await, Some("fails ran"));
        stop_tx.send(()).unwrap();
        let err = run.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert_eq!(seen_rx.recv().await, Some("waits stopped"));
    }
}
