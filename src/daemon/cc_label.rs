//! `cc.follow_label`: the GPUs' CC mode driven by the Node's `nvidia.com/cc.mode` label
//! at run time, as NVIDIA's cc-manager does (the label from the own-Node watch the
//! labeler shares, [`crate::labels::node_watch`]). Each new value, and the configured
//! default while there is none, goes through [`node_mode::wanted`] (the CPU-TEE guard) and
//! [`node_mode::apply`] (PPCIe cleared on the whole board before a CC mode, PPCIe for
//! the whole board, journaled). Devices in use are not switched: they are logged,
//! shown as `<prefix>/cc.mode.pending`, and retried every [`RETRY`] until done. The
//! labels show the state each switch verified (through the shared mode cache).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::gpu::cc::live::Opener;
use crate::gpu::cc::node_mode::{self, NodeMode, NodeReport};
use crate::host::HostRoot;
use crate::journal::Journal;
use crate::labels::cc_mode::SharedCcModes;

/// How often a mode that found devices busy is tried again.
pub(crate) const RETRY: Duration = Duration::from_secs(30);

/// What the applier needs besides the label values.
pub struct Applier {
    pub host: HostRoot,
    pub config: Arc<Config>,
    /// A CPU TEE (TDX or SEV-SNP) is on: `on`/`ppcie` are allowed.
    pub tee_on: bool,
    pub opener: Arc<dyn Opener + Send + Sync>,
    pub modes: SharedCcModes,
    pub retry: Duration,
}

impl Applier {
    /// One application of `label` (blocking: firmware switches take seconds). `None`
    /// when nothing is wanted (`keep` and no label) or the request is refused.
    pub fn apply_once(&self, label: Option<&str>) -> Option<NodeReport> {
        let mode = match node_mode::wanted(label, self.config.cc.default_mode, self.tee_on) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.set_pending(None);
                return None;
            }
            Err(refusal) => {
                tracing::error!(%refusal, "CC mode label not applied");
                self.set_pending(None);
                return None;
            }
        };
        let report = match Journal::open(&self.host) {
            // Half-done switches were recovered when `cchost run` started.
            Ok(mut j) => node_mode::apply(
                &self.host,
                &mut j,
                &self.config.matching,
                mode,
                self.opener.as_ref(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "CC mode not applied: the journal cannot be opened");
                return None;
            }
        };
        self.record(&report, mode);
        Some(report)
    }

    fn set_pending(&self, m: Option<String>) {
        if let Ok(mut c) = self.modes.lock() {
            c.set_pending(m);
        }
    }

    fn record(&self, report: &NodeReport, mode: NodeMode) {
        if let Ok(mut c) = self.modes.lock() {
            for o in report.outcomes() {
                if let Some(after) = &o.after {
                    c.record(&o.device, after);
                }
            }
            c.set_pending((!report.busy.is_empty()).then(|| mode.to_string()));
        }
        for o in report.outcomes() {
            tracing::info!(device = %o.device, requested = %o.requested, status = ?o.status,
                error = o.error.as_deref().unwrap_or(""), "CC mode");
        }
        for b in &report.busy {
            tracing::warn!(wanted = %mode, device = %b, retry_in = ?self.retry,
                "not switched now (in use or another driver); retried when free");
        }
        for e in &report.errors {
            tracing::error!(wanted = %mode, error = %e, "CC mode switch failed");
        }
    }

    /// Applies each label value as it comes, and retries while devices are busy, until
    /// `shutdown` turns true. Nothing happens before the first value arrives (the
    /// Node's first read): the default is never applied over a label not read yet.
    pub async fn run(
        self: Arc<Self>,
        mut labels: watch::Receiver<Option<String>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tokio::select! {
            r = labels.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        loop {
            let label = labels.borrow_and_update().clone();
            let me = self.clone();
            let l = label.clone();
            let done = match tokio::task::spawn_blocking(move || me.apply_once(l.as_deref())).await
            {
                Ok(r) => r.is_none_or(|r| r.done()),
                Err(e) => {
                    tracing::error!(error = %e, "CC mode switch panicked");
                    false
                }
            };
            let retry = async {
                if done {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(self.retry).await
                }
            };
            tokio::select! {
                r = labels.changed() => if r.is_err() { return },
                () = retry => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
