//! `cchost run`: a set of services (tokio tasks) that share a shutdown signal and an
//! "the host's devices changed" notification.
//!
//! - [`uevents`] turns kernel uevents into change notifications (debounced), with a
//!   slow safety-net rescan; there is no polling loop.
//! - [`passthrough`] keeps the CDI spec and the device plugin in step with the host.
//! - [`supervise`] restarts a failed service with backoff.
//! - [`observe`] adds the health and metrics endpoints and Kubernetes Events;
//!   [`notify`] tells systemd (sd_notify) when start-up is done and that cchost lives.
//!
//! More services (node labels, DCAP helpers) are added with [`Daemon::add_service`];
//! each gets a [`Context`], says when it is serving (`ctx.serving()`), and returns
//! when `ctx.shutdown` turns true.

pub mod bind_on_start;
pub mod cc_label;
pub mod cc_on_start;
pub mod notify;
pub mod observe;
pub mod passthrough;
pub mod status;
pub mod supervise;
pub mod trim;
pub mod uevents;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::host::HostRoot;
use crate::observe::health::{Health, State};
use crate::observe::sd_notify::Notifier;

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
    /// Which parts of the daemon are serving (readiness).
    pub health: Arc<Health>,
    /// This service's name (its part in `health`).
    pub name: String,
    /// The GPUs' CC modes as last read or switched (the labeler and the CC manager).
    pub cc_modes: crate::labels::cc_mode::SharedCcModes,
    /// The one watch on the own Node, shared by the labeler (its drift check) and
    /// `cc-label`: cchost holds one watch on nodes, whoever follows the Node.
    pub own_node: crate::labels::own_node::OwnNode,
}

impl Context {
    /// This service is serving (readiness).
    pub(crate) fn serving(&self) {
        self.health.set(&self.name, State::Serving);
    }

    /// This service runs but cannot do its work, and why.
    pub(crate) fn not_serving(&self, why: impl Into<String>) {
        self.health.set(&self.name, State::NotServing(why.into()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("service {service}: {message}")]
    Service { service: String, message: String },
}

pub(crate) type ServiceFuture = Pin<Box<dyn Future<Output = Result<(), DaemonError>> + Send>>;
/// Makes one run of a service; called again for every restart.
pub(crate) type ServiceFn = dyn Fn(Context) -> ServiceFuture + Send + Sync;

/// When `cchost run` drops the executable's start-up pages ([`trim`]), once: start-up
/// (first scan, CDI write, serve, register) takes milliseconds, so 2 s is well after it.
pub const TRIM_AFTER: Duration = Duration::from_secs(2);

/// How long services get to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Daemon {
    host: HostRoot,
    config: Arc<Config>,
    services: Vec<(String, Arc<ServiceFn>)>,
    health: Arc<Health>,
    notifier: Option<(Notifier, Option<Duration>)>,
}

impl Daemon {
    pub fn new(host: HostRoot, config: Config) -> Self {
        Daemon {
            host,
            config: Arc::new(config),
            services: Vec::new(),
            health: Arc::new(Health::default()),
            notifier: None,
        }
    }

    /// The standard set: the passthrough service (CDI spec + device plugin), node
    /// labels (Kubernetes or the NFD feature file, `[labels]`), QGS supervision on
    /// TDX hosts (`[dcap.supervise]`, off unless configured), and what `[observe]`
    /// asks for: the health and metrics endpoints and Kubernetes Events.
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
        observe::add_services(&mut self);
        self
    }

    /// Adds a service; `f` makes one run of it and is called again for each restart.
    pub fn add_service(
        &mut self,
        name: &str,
        f: impl Fn(Context) -> ServiceFuture + Send + Sync + 'static,
    ) {
        self.services.push((name.to_string(), Arc::new(f)));
    }

    /// The daemon's health (shared with the health endpoint and sd_notify).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Tells systemd through `notifier` (`READY=1` once started, `WATCHDOG=1` every
    /// `watchdog`, `STOPPING=1`): see [`notify`].
    pub fn with_notifier(mut self, notifier: Notifier, watchdog: Option<Duration>) -> Self {
        self.notifier = Some((notifier, watchdog));
        self
    }

    /// Runs every service until `stop` resolves (SIGTERM in the CLI), then signals
    /// shutdown and waits for them. A service that fails is restarted with backoff
    /// ([`supervise`]); the others go on.
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
            health: self.health.clone(),
            name: String::new(),
            cc_modes: Default::default(),
            own_node: Default::default(),
        };
        // Every service is a part of readiness from the start.
        for (name, _) in &self.services {
            self.health.set(name, State::Starting);
        }
        let notifier = self.notifier.map(|(n, watchdog)| {
            tokio::spawn(notify::run(
                n,
                watchdog,
                self.health.clone(),
                shutdown.clone(),
            ))
        });
        let mut tasks = Vec::new();
        for (name, f) in self.services {
            tracing::info!(service = %name, "starting");
            let ctx = Context {
                name: name.clone(),
                ..ctx.clone()
            };
            tasks.push((
                name.clone(),
                tokio::spawn(supervise::supervise(name, f, ctx)),
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
                    tracing::error!(service = %name, error = %e, "stopped while failed");
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
        if let Some(n) = notifier {
            let _ = tokio::time::timeout(Duration::from_secs(1), n).await;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Node labels as a daemon service: the labeler recomputes from a fresh inventory each
/// round and writes only on change; its errors are retried, never fatal. The service
/// serves while its rounds succeed.
async fn run_labels(ctx: Context) -> Result<(), DaemonError> {
    use crate::labels::service::{LabelerContext, inventory_facts, run_labeler_reporting};
    use crate::observe::metrics::METRICS;
    let lctx = LabelerContext {
        host: ctx.host.clone(),
        config: ctx.config.labels.clone(),
        facts: inventory_facts((*ctx.config).clone(), ctx.cc_modes.clone()),
        own_node: ctx.own_node.clone(),
    };
    let mut shutdown = ctx.shutdown.clone();
    let report_ctx = ctx.clone();
    run_labeler_reporting(
        lctx,
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        },
        move |round: Result<bool, &str>| match round {
            Ok(changed) => {
                METRICS.label_syncs_total.inc(&["ok"]);
                if changed {
                    METRICS.label_applies_total.inc(&[]);
                }
                report_ctx.serving();
            }
            Err(e) => {
                METRICS.label_syncs_total.inc(&["failed"]);
                report_ctx.not_serving(format!("labels not written: {e}"));
                crate::observe::events::raise(
                    "LabelsNotWritten",
                    "ApplyLabels",
                    format!("cchost cannot write this node's labels: {e}"),
                );
            }
        },
    )
    .await;
    Ok(())
}

/// `cc.follow_label`: the own Node's `nvidia.com/cc.mode` (from the own-Node watch the
/// labeler shares, [`crate::labels::own_node`]), and the applier.
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
    let facts = crate::inventory::facts::NodeFacts::from_inventory(&inv);
    let applier = std::sync::Arc::new(cc_label::Applier {
        host: ctx.host.clone(),
        config: ctx.config.clone(),
        tee_on: facts.tdx.enabled != facts.snp.enabled,
        opener: std::sync::Arc::new(MmioOpener::default()),
        modes: ctx.cc_modes.clone(),
        retry: cc_label::RETRY,
    });
    let (tx, rx) = watch::channel(None);
    let watcher = tokio::spawn(crate::labels::node_watch::follow_label(
        ctx.own_node.subscribe(&client, &node),
        CC_MODE_LABEL.to_string(),
        tx,
        ctx.shutdown.clone(),
    ));
    applier.run(rx, ctx.shutdown.clone()).await;
    watcher.abort();
    Ok(())
}

/// QGS supervision (child process or qgsd.service over D-Bus). Serving while QGS
/// answers its liveness probe; its state feeds the `cchost_dcap_qgs_*` metrics.
async fn run_dcap(ctx: Context) -> Result<(), DaemonError> {
    use crate::dcap::supervisor::State as QgsState;
    use crate::observe::metrics::METRICS;
    let (tx, mut rx) = watch::channel(QgsState::default());
    let watch_ctx = ctx.clone();
    let follow = tokio::spawn(async move {
        let mut last = QgsState::default();
        while rx.changed().await.is_ok() {
            let st = rx.borrow_and_update().clone();
            METRICS
                .dcap_qgs_up
                .set(&[], if st.healthy { 1.0 } else { 0.0 });
            METRICS
                .dcap_qgs_starts_total
                .add(&[], st.starts.saturating_sub(last.starts) as f64);
            METRICS
                .dcap_qgs_probes_total
                .add(&["ok"], st.probes_ok.saturating_sub(last.probes_ok) as f64);
            METRICS.dcap_qgs_probes_total.add(
                &["failed"],
                st.probes_failed.saturating_sub(last.probes_failed) as f64,
            );
            if st.healthy {
                watch_ctx.serving();
            } else {
                let why = st
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "QGS not answering yet".into());
                watch_ctx.not_serving(format!("QGS: {why}"));
            }
            if st.starts > 1 && st.starts > last.starts {
                crate::observe::events::raise(
                    "QGSRestarted",
                    "SuperviseQGS",
                    format!(
                        "cchost restarted the Quote Generation Service ({:?}; last error: {})",
                        st.last_reason,
                        st.last_error.as_deref().unwrap_or("none")
                    ),
                );
            }
            last = st;
        }
    });
    let r = crate::dcap::supervisor::run_with_state(
        ctx.host.clone(),
        ctx.config.dcap.clone(),
        ctx.shutdown.clone(),
        tx,
    )
    .await
    .map_err(|e| DaemonError::Service {
        service: "dcap".to_string(),
        message: e.to_string(),
    });
    follow.abort();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A service that fails (an error, then a panic) is restarted, turns serving,
    /// and the others never stop; at shutdown everything ends cleanly.
    #[tokio::test(start_paused = true)]
    async fn a_failed_service_is_restarted_and_the_others_go_on() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostRoot::new(tmp.path()).unwrap();
        let mut cfg = Config::default();
        cfg.device_plugin.rescan_interval_s = 0;
        let mut d = Daemon::new(host, cfg);
        let health = d.health();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let tx = seen_tx.clone();
        let waits_runs = Arc::new(AtomicU32::new(0));
        let w = waits_runs.clone();
        d.add_service("waits", move |ctx| {
            let tx = tx.clone();
            w.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                ctx.serving();
                let mut sd = ctx.shutdown.clone();
                let _ = sd.wait_for(|s| *s).await;
                let _ = tx.send("waits stopped".to_string());
                Ok(())
            })
        });
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        d.add_service("flaky", move |ctx| {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            let tx = seen_tx.clone();
            Box::pin(async move {
                let _ = tx.send(format!("flaky run {n}"));
                match n {
                    1 => Err(DaemonError::Service {
                        service: "flaky".into(),
                        message: "boom".into(),
                    }),
                    2 => panic!("flaky panics on its second run"),
                    _ => {
                        ctx.serving();
                        let mut sd = ctx.shutdown.clone();
                        let _ = sd.wait_for(|s| *s).await;
                        Ok(())
                    }
                }
            })
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(d.run(async move {
            let _ = stop_rx.await;
        }));
        assert_eq!(seen_rx.recv().await.as_deref(), Some("flaky run 1"));
        // Not ready while it waits for its restart; the health text says why.
        tokio::task::yield_now().await;
        let r = health.readiness();
        assert!(!r.ready, "{r:?}");
        assert!(
            r.text()
                .contains("flaky: not serving: failed (service flaky: boom)"),
            "{}",
            r.text()
        );
        assert_eq!(seen_rx.recv().await.as_deref(), Some("flaky run 2"));
        assert_eq!(seen_rx.recv().await.as_deref(), Some("flaky run 3"));
        let mut ch = health.subscribe();
        while !health.readiness().ready {
            ch.changed().await.unwrap();
        }
        assert!(
            crate::observe::metrics::METRICS
                .service_restarts_total
                .get(&["flaky"])
                .unwrap()
                >= 2.0
        );
        assert_eq!(
            waits_runs.load(Ordering::SeqCst),
            1,
            "the other service never restarted"
        );
        stop_tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(seen_rx.recv().await.as_deref(), Some("waits stopped"));
    }
}
