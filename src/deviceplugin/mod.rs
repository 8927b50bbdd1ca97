//! The kubelet device plugin (API v1beta1) for passthrough GPUs and NVSwitches.
//!
//! - [`devices`]: the scan both the plugin and the CDI spec are made from.
//! - [`state`]: one resource's advertised list and its health transitions.
//! - [`service`]: the gRPC `DevicePlugin` service (Allocate, ListAndWatch, ...).
//! - [`preferred`]: the GetPreferredAllocation rule (same NUMA node, then same switch).
//! - [`endpoint`]: serve the socket, register, survive kubelet restarts.
//! - [`authority`]: old kubelets' path-shaped `:authority`, rewritten below h2.
//!
//! [`PluginManager`] runs one endpoint per resource name and feeds every scan to them.

pub mod api;
pub mod authority;
pub mod endpoint;
pub mod preferred;
pub mod service;
pub mod state;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::DevicePluginConfig;
use crate::host::HostRoot;
use crate::host::unix::DirEvent;
use crate::inventory::passthrough::Discovery;
use endpoint::{EndpointEvent, PluginEndpoint, PluginError};
use state::DeviceList;

struct Running {
    devices: watch::Sender<DeviceList>,
    task: JoinHandle<Result<(), PluginError>>,
}

/// All plugin endpoints of this host, one per resource name.
pub struct PluginManager {
    host: HostRoot,
    cfg: DevicePluginConfig,
    events: broadcast::Sender<DirEvent>,
    watch_task: JoinHandle<()>,
    shutdown: watch::Receiver<bool>,
    plugins: BTreeMap<String, Running>,
    progress: Option<mpsc::UnboundedSender<(String, EndpointEvent)>>,
}

impl PluginManager {
    /// Starts watching the device-plugin directory. Endpoints start with the first
    /// [`update`](Self::update).
    pub fn start(
        host: &HostRoot,
        cfg: &DevicePluginConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, PluginError> {
        let (events, watch_task) =
            endpoint::spawn_dir_watch(host, &cfg.socket_dir, shutdown.clone())?;
        Ok(PluginManager {
            host: host.clone(),
            cfg: cfg.clone(),
            events,
            watch_task,
            shutdown,
            plugins: BTreeMap::new(),
            progress: None,
        })
    }

    /// Reports endpoint progress (serving, registered, stopped) on a channel.
    pub fn with_progress(mut self, tx: mpsc::UnboundedSender<(String, EndpointEvent)>) -> Self {
        self.progress = Some(tx);
        self
    }

    /// Resources served even with no devices: the GPU alias (a node with 0 devices
    /// still registers, so the resource shows up with capacity 0).
    fn always_served(&self) -> Vec<String> {
        if self.cfg.gpu_resource.is_empty() {
            Vec::new()
        } else {
            vec![self.cfg.gpu_resource.clone()]
        }
    }

    /// Feeds a scan to every endpoint, starting endpoints for new resources.
    pub fn update(&mut self, scan: &Discovery) {
        let mut resources = scan.resources();
        resources.extend(self.always_served());
        resources.extend(self.plugins.keys().cloned());
        resources.sort();
        resources.dedup();
        for resource in resources {
            if !self.plugins.contains_key(&resource) {
                self.spawn(&resource);
            }
            if let Some(p) = self.plugins.get(&resource) {
                state::publish(&p.devices, &resource, scan);
                let n = p.devices.borrow().len();
                if n == 0 {
                    tracing::info!(resource, why = %scan.why_empty(), "advertising 0 devices");
                }
            }
        }
    }

    fn spawn(&mut self, resource: &str) {
        let (tx, rx) = watch::channel(DeviceList::default());
        let ep = PluginEndpoint {
            host: self.host.clone(),
            socket_dir: self.cfg.socket_dir.clone(),
            resource: resource.to_string(),
            devices: rx,
            pci_resource_env: self.cfg.pci_resource_env,
            retry: Duration::from_secs(10),
            calls: Default::default(),
            authority_check: endpoint::AUTHORITY_CHECK,
        };
        let progress = self.progress.clone().map(|p| {
            let (etx, mut erx) = mpsc::unbounded_channel();
            let r = resource.to_string();
            tokio::spawn(async move {
                while let Some(e) = erx.recv().await {
                    if p.send((r.clone(), e)).is_err() {
                        return;
                    }
                }
            });
            etx
        });
        let run = ep.run(self.events.subscribe(), self.shutdown.clone(), progress);
        let name = resource.to_string();
        let task = tokio::spawn(async move {
            let r = run.await;
            if let Err(e) = &r {
                tracing::error!(resource = %name, error = %e, "device plugin endpoint failed");
            }
            r
        });
        self.plugins
            .insert(resource.to_string(), Running { devices: tx, task });
    }

    /// The current list of a resource (for tests and `cchost run` status).
    pub fn devices(&self, resource: &str) -> Option<DeviceList> {
        self.plugins
            .get(resource)
            .map(|p| p.devices.borrow().clone())
    }

    /// Waits for every endpoint to finish (after shutdown turned true).
    pub async fn join(self) -> Vec<PluginError> {
        let mut errors = Vec::new();
        for (resource, p) in self.plugins {
            match p.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(PluginError::Io {
                    what: format!("device plugin {resource}"),
                    message: e.to_string(),
                }),
            }
        }
        self.watch_task.abort();
        errors
    }
}
