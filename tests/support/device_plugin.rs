//! Shared by the device-plugin tests: fixture hosts with GPUs behind PCIe switches (built
//! with `cchost::fixture::Tree`, the one sysfs layout), and a kubelet-side harness
//! speaking v1beta1 over unix sockets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cchost::deviceplugin::api;
use cchost::deviceplugin::api::device_plugin_client::DevicePluginClient;
use cchost::deviceplugin::api::registration_server::{Registration, RegistrationServer};
use cchost::fixture::{PciSpec, Tree};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

pub const DP_DIR: &str = "/var/lib/kubelet/device-plugins";

/// A whole host for the device plugin (the fixture's one sysfs layout, `cchost::fixture`):
/// the PCI bus and driver directories, /proc (cchost refuses a root without it),
/// /dev/vfio with its container node, and the kubelet's device-plugin directory.
pub fn whole_host() -> Tree {
    let t = Tree::new();
    for d in [
        "/sys/bus/pci/devices",
        "/sys/bus/pci/drivers/vfio-pci",
        "/sys/bus/pci/drivers/nvidia",
        "/sys/bus/pci/drivers/pcieport",
        "/sys/kernel/iommu_groups",
        "/dev/vfio",
        "/proc/sys",
        DP_DIR,
    ] {
        t.dir(d);
    }
    t.file("/dev/vfio/vfio", "");
    t
}

/// An H100 SXM5 bound to vfio-pci, in IOMMU group `group` on NUMA node `numa`.
pub fn gpu(address: &str, group: u32, numa: u32) -> PciSpec {
    PciSpec::h100_sxm5(address)
        .group(group)
        .numa(numa)
        .driver("vfio-pci")
}

/// Adds `spec` behind the chain of PCIe bridges `bridges` (root port first), adding
/// each bridge not yet there (bound to pcieport, on the function's NUMA node), and
/// returns the spec as added.
pub fn add_behind(t: &Tree, bridges: &[&str], spec: PciSpec) -> PciSpec {
    let mut parent: Option<&str> = None;
    for b in bridges {
        if std::fs::symlink_metadata(t.path(&format!("/sys/bus/pci/devices/{b}"))).is_err() {
            let mut bridge = PciSpec::new(b, 0x8086, 0x1234, 0x060400).driver("pcieport");
            if let Some(n) = spec.numa_node {
                bridge = bridge.numa(n);
            }
            if let Some(p) = parent {
                bridge = bridge.behind(p);
            }
            t.pci(&bridge);
        }
        parent = Some(b);
    }
    let spec = match parent {
        Some(p) => spec.behind(p),
        None => spec,
    };
    t.pci(&spec);
    spec
}

/// The 4-GPU fixture: two PCIe switches on NUMA 0 (groups 12, 13 / 14) and one GPU on
/// NUMA 1 (group 40), plus one NVSwitch (group 60).
pub fn hgx_like() -> (Tree, Vec<PciSpec>) {
    let h = whole_host();
    let sw_a = ["0000:00:01.0", "0000:01:00.0", "0000:02:00.0"];
    let sw_a2 = ["0000:00:01.0", "0000:01:00.0", "0000:02:01.0"];
    let sw_b = ["0000:00:02.0", "0000:05:00.0", "0000:06:00.0"];
    let sw_c = ["0000:80:01.0", "0000:81:00.0", "0000:82:00.0"];
    let nvswitch = PciSpec::nvswitch_ls10("0000:90:00.0")
        .group(60)
        .numa(1)
        .driver("vfio-pci");
    let funcs = vec![
        add_behind(&h, &sw_a, gpu("0000:03:00.0", 12, 0)),
        add_behind(&h, &sw_a2, gpu("0000:04:00.0", 13, 0)),
        add_behind(&h, &sw_b, gpu("0000:07:00.0", 14, 0)),
        add_behind(&h, &sw_c, gpu("0000:83:00.0", 40, 1)),
        add_behind(&h, &["0000:80:02.0"], nvswitch),
    ];
    (h, funcs)
}

/// What the fake kubelet saw.
#[derive(Debug, Clone)]
pub struct Registered {
    pub req: api::RegisterRequest,
    /// The plugin answered GetDevicePluginOptions while Register was in flight (i.e.
    /// it served before it registered).
    pub served_before_register: bool,
}

struct KubeletRegistration {
    dir: PathBuf,
    /// false: behave like a pre-1.26 kubelet whose calls the plugin's HTTP/2 server
    /// rejects (it accepts Register but never reaches the plugin).
    dial_back: bool,
    tx: mpsc::UnboundedSender<Registered>,
    log: Arc<Mutex<Vec<Registered>>>,
}

#[tonic::async_trait]
impl Registration for KubeletRegistration {
    async fn register(
        &self,
        req: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let req = req.into_inner();
        if req.version != "v1beta1" {
            return Err(Status::invalid_argument("unsupported version"));
        }
        if req.endpoint.contains('/') {
            return Err(Status::invalid_argument(
                "endpoint must be a bare file name",
            ));
        }
        if !self.dial_back {
            let r = Registered {
                req,
                served_before_register: false,
            };
            self.log.lock().unwrap().push(r.clone());
            let _ = self.tx.send(r);
            return Ok(Response::new(api::Empty {}));
        }
        // Like kubelet: dial the plugin's socket at once.
        let served = match connect_plugin(&self.dir.join(&req.endpoint)).await {
            Ok(mut c) => c.get_device_plugin_options(api::Empty {}).await.is_ok(),
            Err(_) => false,
        };
        if !served {
            // Kubelet fails Register when it cannot dial the plugin back.
            return Err(Status::unavailable("cannot dial the plugin endpoint"));
        }
        let r = Registered {
            req,
            served_before_register: served,
        };
        self.log.lock().unwrap().push(r.clone());
        let _ = self.tx.send(r);
        Ok(Response::new(api::Empty {}))
    }
}

/// A kubelet registration server on `<dir>/kubelet.sock`.
pub struct FakeKubelet {
    pub registrations: mpsc::UnboundedReceiver<Registered>,
    pub log: Arc<Mutex<Vec<Registered>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeKubelet {
    /// Starts like kubelet does: remove every socket in the directory, then listen.
    pub async fn start(dir: &Path) -> FakeKubelet {
        Self::start_with(dir, true).await
    }

    /// A kubelet that never calls the plugin back (see `KubeletRegistration`).
    pub async fn start_silent(dir: &Path) -> FakeKubelet {
        Self::start_with(dir, false).await
    }

    async fn start_with(dir: &Path, dial_back: bool) -> FakeKubelet {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            use std::os::unix::fs::FileTypeExt;
            if e.file_type().unwrap().is_socket() {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let sock = dir.join("kubelet.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let (tx, registrations) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let svc = KubeletRegistration {
            dir: dir.to_path_buf(),
            dial_back,
            tx,
            log: log.clone(),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(RegistrationServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async move {
                        let _ = stop_rx.await;
                    },
                )
                .await;
        });
        FakeKubelet {
            registrations,
            log,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Stops like a dying kubelet: the socket file stays behind.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub async fn next(&mut self, within: Duration) -> Option<Registered> {
        tokio::time::timeout(within, self.registrations.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A client on a plugin socket, as kubelet dials it.
pub async fn connect_plugin(
    socket: &Path,
) -> Result<DevicePluginClient<Channel>, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    let ch = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let s = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(s).await?)) }
        }))
        .await?;
    Ok(DevicePluginClient::new(ch))
}

/// The mixed-node split of [`hgx_like`] under `cc.modes = 2 on, 2 off` (by count,
/// lowest addresses first: 03 and 04 on, IDs 12 and 13; 07 and 83 off, IDs 14 and 40),
/// with the firmware read as: 03 on (agrees), 04 off (disagrees), 07 off (agrees), 83
/// never read.
pub fn hgx_like_mixed_split(h: &Tree) -> cchost::inventory::cc_split::CcSplit {
    use cchost::config::Config;
    use cchost::inventory::cc_split::{CcSplit, gpu_slots};
    use cchost::inventory::facts::CcMode;
    let cfg = Config::from_toml(
        "[[cc.modes]]\nmode = \"on\"\ncount = 2\n[[cc.modes]]\nmode = \"off\"\ncount = 2\n",
        Path::new("c.toml"),
    )
    .unwrap();
    let inv = cchost::inventory::gpu::discover_gpus(&h.host, &cfg.matching);
    let wanted = cchost::config::cc_modes::resolve(&cfg.cc.modes, &gpu_slots(&inv))
        .map_err(|e| e.to_string());
    let read = [
        ("0000:03:00.0", CcMode::On),
        ("0000:04:00.0", CcMode::Off),
        ("0000:07:00.0", CcMode::Off),
    ]
    .into_iter()
    .map(|(a, m)| (a.parse().unwrap(), m))
    .collect();
    CcSplit {
        wanted,
        non_cc_resource: cfg.device_plugin.non_cc_gpu_resource,
        read,
    }
}
