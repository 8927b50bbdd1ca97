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
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::DevicePluginConfig;
use crate::host::HostRoot;
use crate::host::unix::DirEvent;
use crate::inventory::passthrough::Discovery;
use crate::observe::health::{Health, State};
use crate::observe::metrics::METRICS;
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
    health: Option<Arc<Health>>,
    /// First respawn delay of a failed endpoint (doubles up to [`RESPAWN_MAX`]).
    respawn: Duration,
}

/// First delay before a failed endpoint is started again.
pub(crate) const RESPAWN_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay between respawns of a failed endpoint.
pub(crate) const RESPAWN_MAX: Duration = Duration::from_secs(60);

/// The health part of a resource's endpoint.
pub(crate) fn health_part(resource: &str) -> String {
    format!("deviceplugin {resource}")
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
            health: None,
            respawn: RESPAWN_INITIAL,
        })
    }

    /// Reports each endpoint's state (serving or not, and why) as a health part.
    pub(crate) fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
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
        let part = health_part(resource);
        if let Some(h) = &self.health {
            h.set(&part, State::Starting);
        }
        // Every endpoint reports its progress here: health follows it.
        let (etx, mut erx) = mpsc::unbounded_channel();
        let health = self.health.clone();
        let p = part.clone();
        tokio::spawn(async move {
            while let Some(e) = erx.recv().await {
                if let Some(h) = &health {
                    match e {
                        EndpointEvent::Serving => h.set(&p, State::Serving),
                        EndpointEvent::Stopped => h.remove(&p),
                        _ => {}
                    }
                }
            }
        });
        let make = {
            let host = self.host.clone();
            let socket_dir = self.cfg.socket_dir.clone();
            let resource = resource.to_string();
            let pci_resource_env = self.cfg.pci_resource_env;
            let calls: Arc<std::sync::atomic::AtomicU64> = Default::default();
            move || PluginEndpoint {
                host: host.clone(),
                socket_dir: socket_dir.clone(),
                resource: resource.clone(),
                devices: rx.clone(),
                pci_resource_env,
                retry: Duration::from_secs(10),
                calls: calls.clone(),
                authority_check: endpoint::AUTHORITY_CHECK,
            }
        };
        let events = self.events.clone();
        let mut shutdown = self.shutdown.clone();
        let health = self.health.clone();
        let name = resource.to_string();
        let first_delay = self.respawn;
        let task = tokio::spawn(async move {
            // An endpoint whose serve failed (its socket path taken, the directory
            // unusable) is started again with backoff, for as long as cchost runs.
            let mut delay = first_delay;
            loop {
                let started = tokio::time::Instant::now();
                let run = tokio::spawn(make().run(
                    events.subscribe(),
                    shutdown.clone(),
                    Some(etx.clone()),
                ));
                let outcome = run.await;
                if *shutdown.borrow() {
                    return match outcome {
                        Ok(r) => r,
                        Err(e) => Err(PluginError::Io {
                            what: format!("device plugin {name}"),
                            message: e.to_string(),
                        }),
                    };
                }
                let why = match outcome {
                    Ok(Ok(())) => "ended".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("panicked: {e}"),
                };
                if started.elapsed() >= RESPAWN_MAX {
                    delay = first_delay;
                }
                tracing::error!(resource = %name, error = %why, retry_in = ?delay, "device plugin endpoint failed; starting it again");
                if let Some(h) = &health {
                    h.set(
                        &health_part(&name),
                        State::NotServing(format!("{why}; retrying in {delay:?}")),
                    );
                }
                crate::observe::events::raise(
                    "DevicePluginFailed",
                    "ServeDevicePlugin",
                    format!(
                        "cchost device plugin {name} cannot serve (kubelet is not offered these devices): {why}"
                    ),
                );
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RESPAWN_MAX);
                METRICS.service_restarts_total.inc(&[&health_part(&name)]);
            }
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
