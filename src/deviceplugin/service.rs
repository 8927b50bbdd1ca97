//! The `DevicePlugin` gRPC service of one resource (docs/facts/k8s.md#device-plugin-api).
//!
//! Every RPC answers or returns a gRPC status that says what was wrong; no input can
//! make it panic.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::api::{self, device_plugin_server::DevicePlugin};
use super::preferred::preferred;
use super::state::DeviceList;
use crate::cdi::Spec;
use crate::inventory::passthrough::{Health, PassthroughDevice};
use crate::observe::metrics::METRICS;

/// Permissions kubelet passes to the runtime for vfio nodes (mknod, read, write).
pub(crate) const NODE_PERMISSIONS: &str = "mrw";

/// The service for one resource.
#[derive(Clone)]
pub(crate) struct PluginService {
    resource: String,
    devices: watch::Receiver<DeviceList>,
    /// Name of the `PCI_RESOURCE_...` env var, when enabled.
    env_name: Option<String>,
    /// Flips to true when this server instance stops (ends ListAndWatch streams).
    stop: watch::Receiver<bool>,
    /// Calls that reached this service (kubelet's calls, for the `:authority` check).
    calls: Arc<AtomicU64>,
}

/// `nvidia.com/pgpu` -> `PCI_RESOURCE_NVIDIA_COM_PGPU` (KubeVirt's rule,
/// docs/facts/k8s.md#pci-resource-env).
pub(crate) fn pci_resource_env_name(resource: &str) -> String {
    let mut s = String::from("PCI_RESOURCE_");
    s.extend(resource.chars().map(|c| match c {
        '/' | '.' => '_',
        c => c.to_ascii_uppercase(),
    }));
    s
}

/// The wire form of a device list.
pub(crate) fn list_response(devices: &[PassthroughDevice]) -> api::ListAndWatchResponse {
    api::ListAndWatchResponse {
        devices: devices
            .iter()
            .map(|d| api::Device {
                id: d.id.clone(),
                health: match d.health {
                    Health::Healthy => api::HEALTHY,
                    Health::Unhealthy(_) => api::UNHEALTHY,
                }
                .to_string(),
                topology: d.numa_node.map(|n| api::TopologyInfo {
                    nodes: vec![api::NumaNode { id: i64::from(n) }],
                }),
            })
            .collect(),
    }
}

impl PluginService {
    pub fn new(
        resource: String,
        devices: watch::Receiver<DeviceList>,
        pci_resource_env: bool,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let env_name = pci_resource_env.then(|| pci_resource_env_name(&resource));
        PluginService {
            resource,
            devices,
            env_name,
            stop,
            calls: Arc::default(),
        }
    }

    /// Counts the calls that reach this service; shared with the endpoint.
    pub(crate) fn with_call_counter(mut self, calls: Arc<AtomicU64>) -> Self {
        self.calls = calls;
        self
    }

    pub fn options() -> api::DevicePluginOptions {
        api::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }
    }

    /// Allocate, as a plain function (also used by benchmarks).
    pub(crate) fn allocate_now(
        &self,
        req: &api::AllocateRequest,
    ) -> Result<api::AllocateResponse, Status> {
        // Borrowed, not cloned: nothing below awaits, so the read lock is short.
        let devices = self.devices.borrow();
        let mut out = Vec::with_capacity(req.container_requests.len());
        for creq in &req.container_requests {
            if creq.devices_ids.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "Allocate for {}: a container request with no device IDs",
                    self.resource
                )));
            }
            let mut resp = api::ContainerAllocateResponse::default();
            let mut nodes: BTreeSet<&str> = BTreeSet::new();
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            let mut bdfs = Vec::new();
            for id in &creq.devices_ids {
                let Some(d) = devices.iter().find(|d| d.id == *id) else {
                    return Err(Status::not_found(format!(
                        "Allocate for {}: unknown device ID {id:?}",
                        self.resource
                    )));
                };
                if let Health::Unhealthy(why) = &d.health {
                    // Fail the whole request (proto comment on partial failure).
                    return Err(Status::failed_precondition(format!(
                        "Allocate for {}: device {id:?} is unhealthy: {why}",
                        self.resource
                    )));
                }
                if !seen.insert(id.as_str()) {
                    continue; // the same ID twice: hand it out once
                }
                resp.cdi_devices.push(api::CdiDevice {
                    name: Spec::qualified(&self.resource, id),
                });
                for n in &d.device_nodes {
                    if nodes.insert(n.as_str()) {
                        resp.devices.push(api::DeviceSpec {
                            container_path: n.clone(),
                            host_path: n.clone(),
                            permissions: NODE_PERMISSIONS.to_string(),
                        });
                    }
                }
                bdfs.extend(d.functions.iter().map(|f| f.to_string()));
            }
            if let Some(name) = &self.env_name {
                resp.envs = HashMap::from([(name.clone(), bdfs.join(","))]);
            }
            out.push(resp);
        }
        Ok(api::AllocateResponse {
            container_responses: out,
        })
    }

    /// GetPreferredAllocation, as a plain function.
    pub(crate) fn preferred_now(
        &self,
        req: &api::PreferredAllocationRequest,
    ) -> Result<api::PreferredAllocationResponse, Status> {
        let devices = self.devices.borrow().clone();
        let mut out = Vec::with_capacity(req.container_requests.len());
        for c in &req.container_requests {
            let ids = preferred(
                &devices,
                &c.available_device_i_ds,
                &c.must_include_device_i_ds,
                c.allocation_size,
            )
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "GetPreferredAllocation for {}: {e}",
                    self.resource
                ))
            })?;
            out.push(api::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(api::PreferredAllocationResponse {
            container_responses: out,
        })
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _req: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(Self::options()))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _req: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4);
        let mut devices = self.devices.clone();
        let mut stop = self.stop.clone();
        let resource = self.resource.clone();
        tokio::spawn(async move {
            // The full list at once, then again on every change.
            loop {
                let list = list_response(&devices.borrow_and_update());
                tracing::debug!(
                    resource,
                    devices = list.devices.len(),
                    "ListAndWatch update"
                );
                if tx.send(Ok(list)).await.is_err() {
                    return; // kubelet went away
                }
                tokio::select! {
                    changed = devices.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        self.preferred_now(req.get_ref()).map(Response::new)
    }

    async fn allocate(
        &self,
        req: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let r = self.allocate_now(req.get_ref());
        let took = started.elapsed().as_secs_f64();
        METRICS.allocate_seconds.observe(&[&self.resource], took);
        match &r {
            Ok(resp) => {
                METRICS.allocate_total.inc(&[&self.resource, "ok"]);
                tracing::info!(resource = %self.resource, containers = resp.container_responses.len(), "Allocate")
            }
            Err(e) => {
                METRICS.allocate_total.inc(&[&self.resource, "refused"]);
                tracing::warn!(resource = %self.resource, error = %e.message(), "Allocate refused")
            }
        }
        r.map(Response::new)
    }

    async fn pre_start_container(
        &self,
        _req: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_name_follows_kubevirt() {
        assert_eq!(
            pci_resource_env_name("nvidia.com/pgpu"),
            "PCI_RESOURCE_NVIDIA_COM_PGPU"
        );
    }
}
