//! One plugin endpoint: serve the socket, register with kubelet, and do both again
//! whenever kubelet restarts (docs/facts/k8s.md#kubelet-restart).
//!
//! Order matters: the plugin serves its socket *before* it calls `Register`, because
//! kubelet dials back at once. The endpoint is the bare socket file name. A kubelet
//! restart shows up in the device-plugin directory as our socket being deleted
//! (kubelet's `CleanupPluginDirectory`) and `kubelet.sock` being created; either one
//! makes the endpoint re-create its socket and register again, without restarting
//! cchost. Non-socket files (kubelet's `DEPRECATION` note) are ignored.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Endpoint, Server};

use super::api::{
    self, device_plugin_server::DevicePluginServer, registration_client::RegistrationClient,
};
use super::authority::AuthorityShim;
use super::service::PluginService;
use super::state::DeviceList;
use crate::host::unix::DirEvent;
use crate::host::{HostError, HostRoot, NodeKind};

/// Kubelet's registration socket, in the device-plugin directory.
pub(crate) const KUBELET_SOCKET: &str = "kubelet.sock";

/// How long one Register call may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry after a failed Register right after kubelet.sock appeared (kubelet
/// creates the socket file a moment before it listens on it).
const FAST_RETRY: Duration = Duration::from_millis(25);
/// Kubelet dials the plugin right after a successful Register. No call at all within
/// this time means kubelet cannot talk to us. The known cause used to be an old kubelet
/// (before kubernetes PR #112597, 1.26) whose grpc-go sends the socket path as
/// `:authority`, which the HTTP/2 server (h2) rejects (docs/facts/k8s.md#grpc-authority);
/// `authority.rs` now rewrites that, so this check catches whatever else breaks.
pub(crate) const AUTHORITY_CHECK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{what}: {message}")]
    Io { what: String, message: String },
    #[error("register {resource} with kubelet at {}: {message}", socket.display())]
    Register {
        resource: String,
        socket: PathBuf,
        message: String,
    },
}

/// The socket file name of a resource: `nvidia.com/pgpu` -> `cchost-nvidia.com-pgpu.sock`.
pub fn socket_name(resource: &str) -> String {
    format!("cchost-{}.sock", resource.replace('/', "-"))
}

/// Calls kubelet's `Register` for one resource.
pub async fn register(
    host: &HostRoot,
    socket_dir: &str,
    resource: &str,
    endpoint: &str,
) -> Result<(), PluginError> {
    let host_path = PathBuf::from(socket_dir).join(KUBELET_SOCKET);
    let err = |message: String| PluginError::Register {
        resource: resource.to_string(),
        socket: host_path.clone(),
        message,
    };
    let local = host.socket_path(&host_path)?;
    // The URI only sets `:authority`; "localhost" is what kubelet itself uses for
    // unix sockets (docs/facts/k8s.md#grpc-authority). The connector ignores it and dials the socket.
    let channel = Endpoint::from_static("http://localhost")
        .connect_timeout(REGISTER_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let local = local.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(local).await?)) }
        }))
        .await
        .map_err(|e| err(format!("connect: {e}")))?;
    let req = api::RegisterRequest {
        version: api::VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: resource.to_string(),
        options: Some(PluginService::options()),
    };
    tokio::time::timeout(
        REGISTER_TIMEOUT,
        RegistrationClient::new(channel).register(req),
    )
    .await
    .map_err(|_| err("no answer".into()))?
    .map_err(|s| err(format!("{}: {}", s.code(), s.message())))?;
    Ok(())
}

/// Watches the device-plugin directory and fans its events out to every endpoint.
/// Ends when `shutdown` turns true.
pub fn spawn_dir_watch(
    host: &HostRoot,
    socket_dir: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(broadcast::Sender<DirEvent>, JoinHandle<()>), PluginError> {
    let watch = host.watch_dir(socket_dir)?;
    let fd = watch.into_async().map_err(|e| PluginError::Io {
        what: format!("watch {socket_dir}"),
        message: e.to_string(),
    })?;
    let (tx, _) = broadcast::channel(64);
    let out = tx.clone();
    let handle = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                ready = fd.readable() => {
                    let Ok(mut guard) = ready else { return };
                    match guard.get_inner().read() {
                        Ok(events) if events.is_empty() => guard.clear_ready(),
                        Ok(events) => {
                            for ev in events {
                                tracing::debug!(?ev, "device-plugin directory event");
                                let _ = out.send(ev);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "device-plugin directory watch failed");
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok((tx, handle))
}

/// One resource's endpoint.
pub struct PluginEndpoint {
    pub host: HostRoot,
    /// Host path of kubelet's device-plugin directory.
    pub socket_dir: String,
    pub resource: String,
    pub devices: watch::Receiver<DeviceList>,
    pub pci_resource_env: bool,
    /// Slow retry of Register while kubelet is away (its return is normally seen
    /// through the directory watch at once).
    pub retry: Duration,
    /// Calls kubelet made into the plugin (any server instance).
    pub calls: Arc<AtomicU64>,
    /// How long after Register kubelet must have called us (see [`AUTHORITY_CHECK`]).
    pub authority_check: Duration,
}

struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Serving {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Progress reports, for tests and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    Serving,
    Registered,
    /// Kubelet accepted Register but never called the plugin (the `:authority` quirk).
    KubeletSilent,
    Stopped,
}

impl PluginEndpoint {
    pub fn socket_name(&self) -> String {
        socket_name(&self.resource)
    }

    fn socket_host_path(&self) -> PathBuf {
        PathBuf::from(&self.socket_dir).join(self.socket_name())
    }

    fn serve(&self) -> Result<Serving, PluginError> {
        let std_listener = self.host.bind_unix(self.socket_host_path())?;
        let listener =
            tokio::net::UnixListener::from_std(std_listener).map_err(|e| PluginError::Io {
                what: format!("listen on {}", self.socket_host_path().display()),
                message: e.to_string(),
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let svc = PluginService::new(
            self.resource.clone(),
            self.devices.clone(),
            self.pci_resource_env,
            stop_rx.clone(),
        )
        .with_call_counter(self.calls.clone());
        let mut until = stop_rx;
        let task = tokio::spawn(
            Server::builder()
                .add_service(DevicePluginServer::new(svc))
                .serve_with_incoming_shutdown(
                    // Old kubelets' path-shaped :authority is rewritten before h2
                    // sees it (authority.rs).
                    UnixListenerStream::new(listener).map(|c| c.map(AuthorityShim::new)),
                    async move {
                        let _ = until.wait_for(|s| *s).await;
                    },
                ),
        );
        Ok(Serving { stop, task })
    }

    fn is_socket(&self, name: &str) -> bool {
        self.host.kind(PathBuf::from(&self.socket_dir).join(name)) == Some(NodeKind::Socket)
    }

    /// Serves and keeps registered until `shutdown` turns true; then stops serving and
    /// removes the socket.
    ///
    /// Two facts drive it: whether our socket is still there (kubelet deletes it when
    /// it restarts: serve again, which also means register again), and which
    /// `kubelet.sock` we registered with (a new one, by inode, is a new kubelet:
    /// register again).
    pub async fn run(
        self,
        mut events: broadcast::Receiver<DirEvent>,
        mut shutdown: watch::Receiver<bool>,
        progress: Option<tokio::sync::mpsc::UnboundedSender<EndpointEvent>>,
    ) -> Result<(), PluginError> {
        let report = |e: EndpointEvent| {
            if let Some(p) = &progress {
                let _ = p.send(e);
            }
        };
        let name = self.socket_name();
        let kubelet_sock = PathBuf::from(&self.socket_dir).join(KUBELET_SOCKET);
        let mut serving: Option<Serving> = None;
        let mut first_serve = true;
        let mut registered_with: Option<(u64, u64)> = None;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut backoff = FAST_RETRY;
        let mut warned = false;
        // (deadline, calls before Register): see AUTHORITY_CHECK.
        let mut authority_check: Option<(tokio::time::Instant, u64)> = None;
        loop {
            if serving.is_none() {
                match self.serve() {
                    Ok(s) => {
                        serving = Some(s);
                        registered_with = None;
                        retry_at = None;
                        tracing::info!(resource = %self.resource, socket = %self.socket_host_path().display(), "serving device plugin");
                        report(EndpointEvent::Serving);
                    }
                    Err(e) if first_serve => return Err(e),
                    Err(e) => {
                        // The directory may be gone for a moment (kubelet reinstall).
                        tracing::warn!(resource = %self.resource, error = %e, "cannot serve the device plugin socket; retrying");
                        tokio::select! {
                            _ = shutdown.wait_for(|s| *s) => break,
                            _ = tokio::time::sleep(self.retry) => continue,
                        }
                    }
                }
                first_serve = false;
            }
            // Kubelet dials our socket during Register: never register a socket that
            // a restarting kubelet has just deleted (its event may still be queued).
            if !self.is_socket(&name) {
                if let Some(s) = serving.take() {
                    s.stop().await;
                }
                continue;
            }
            let kubelet = self.host.socket_id(&kubelet_sock);
            let need_register = kubelet.is_some() && registered_with != kubelet;
            let now = tokio::time::Instant::now();
            if need_register && retry_at.is_none_or(|t| now >= t) {
                let calls_before = self.calls.load(Ordering::Relaxed);
                match register(&self.host, &self.socket_dir, &self.resource, &name).await {
                    Ok(()) => {
                        authority_check = Some((now + self.authority_check, calls_before));
                        registered_with = kubelet;
                        retry_at = None;
                        backoff = FAST_RETRY;
                        warned = false;
                        tracing::info!(resource = %self.resource, endpoint = %name, "registered with kubelet");
                        report(EndpointEvent::Registered);
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "registration failed; will retry");
                            warned = true;
                        }
                        retry_at = Some(now + backoff);
                        backoff = (backoff * 2).min(self.retry);
                    }
                }
                continue;
            }
            if kubelet.is_none() && !warned {
                tracing::warn!(resource = %self.resource, dir = %self.socket_dir, "kubelet.sock is not there; waiting for kubelet");
                warned = true;
            }
            // Wake for the next retry, or (safety net for a missed event) slowly.
            let mut wake = match retry_at {
                Some(t) if need_register => t,
                _ => now + self.retry,
            };
            if let Some((t, _)) = authority_check {
                wake = wake.min(t);
            }
            let mut drop_server = false;
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tokio::time::sleep_until(wake) => {}
                ev = events.recv() => match ev {
                    Ok(DirEvent::Created(n)) if n == KUBELET_SOCKET => {
                        // A new kubelet: try at once (it may still be about to listen).
                        retry_at = None;
                        backoff = FAST_RETRY;
                    }
                    Ok(DirEvent::Removed(n)) if n == name && !self.is_socket(&n) => {
                        tracing::info!(resource = %self.resource, "our socket was removed (kubelet restarted): serving and registering again");
                        drop_server = true;
                    }
                    Ok(DirEvent::DirGone) => {
                        tracing::warn!(dir = %self.socket_dir, "device-plugin directory is gone");
                        drop_server = true;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        drop_server = !self.is_socket(&name);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                    Ok(_) => {}
                },
            }
            if let Some((t, before)) = authority_check
                && tokio::time::Instant::now() >= t
            {
                authority_check = None;
                if self.calls.load(Ordering::Relaxed) == before {
                    tracing::error!(
                        resource = %self.resource,
                        "kubelet accepted the registration but never called the plugin; a kubelet older than 1.26 sends the socket path as the HTTP/2 :authority, which this gRPC server rejects (see docs/deviceplugin.md)"
                    );
                    report(EndpointEvent::KubeletSilent);
                }
            }
            if drop_server && let Some(s) = serving.take() {
                s.stop().await;
            }
        }
        if let Some(s) = serving.take() {
            s.stop().await;
        }
        if let Err(e) = self.host.remove_file(self.socket_host_path()) {
            tracing::warn!(error = %e, "cannot remove the device plugin socket");
        }
        tracing::info!(resource = %self.resource, "device plugin stopped");
        report(EndpointEvent::Stopped);
        Ok(())
    }
}
