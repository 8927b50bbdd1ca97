//! Shared by the device-plugin tests: a fixture host laid out the way the kernel shows
//! PCI devices (canonical device dirs under /sys/devices, relative symlinks from
//! /sys/bus/pci/devices, `driver` and `iommu_group` links, /sys/kernel/iommu_groups,
//! /dev/vfio nodes), and a kubelet-side harness speaking v1beta1 over unix sockets.
#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cchost::deviceplugin::api;
use cchost::deviceplugin::api::device_plugin_client::DevicePluginClient;
use cchost::deviceplugin::api::registration_server::{Registration, RegistrationServer};
use cchost::host::HostRoot;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

pub const DP_DIR: &str = "/var/lib/kubelet/device-plugins";

/// One PCI function in the fixture.
#[derive(Clone, Debug)]
pub struct Func {
    pub bdf: &'static str,
    /// Bridges above it, root port first.
    pub bridges: Vec<&'static str>,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    pub numa: i32,
    pub group: Option<u32>,
    pub driver: Option<&'static str>,
    /// N of vfio-dev/vfioN (iommufd cdev).
    pub vfio_dev: Option<u32>,
}

impl Func {
    pub fn gpu(bdf: &'static str, bridges: Vec<&'static str>, group: u32, numa: i32) -> Func {
        Func {
            bdf,
            bridges,
            vendor: 0x10de,
            device: 0x2330, // H100 SXM5 80GB
            class: 0x030200,
            numa,
            group: Some(group),
            driver: Some("vfio-pci"),
            vfio_dev: None,
        }
    }
}

pub struct FakeHost {
    pub dir: tempfile::TempDir,
    pub host: HostRoot,
}

/// `to` relative to the directory `from_dir` (both host paths), like the kernel's links.
pub fn relative(from_dir: &Path, to: &Path) -> PathBuf {
    let a: Vec<_> = from_dir.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    out
}

impl FakeHost {
    pub fn new() -> FakeHost {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let h = FakeHost { dir, host };
        for d in [
            "/sys/bus/pci/devices",
            "/sys/bus/pci/drivers/vfio-pci",
            "/sys/bus/pci/drivers/nvidia",
            "/sys/bus/pci/drivers/pcieport",
            "/sys/kernel/iommu_groups",
            "/dev/vfio",
            // A whole host has /proc (cchost refuses a root without it).
            "/proc/sys",
            DP_DIR,
        ] {
            std::fs::create_dir_all(h.local(d)).unwrap();
        }
        h.write("/dev/vfio/vfio", "");
        h
    }

    pub fn local(&self, host_path: &str) -> PathBuf {
        self.dir.path().join(host_path.trim_start_matches('/'))
    }

    pub fn write(&self, host_path: &str, text: &str) {
        let p = self.local(host_path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn remove(&self, host_path: &str) {
        let _ = std::fs::remove_file(self.local(host_path));
    }

    fn link(&self, at: &str, target: &str) {
        let at_p = Path::new(at);
        let rel = relative(at_p.parent().unwrap(), Path::new(target));
        let local = self.local(at);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&local);
        symlink(rel, local).unwrap();
    }

    fn canonical(&self, bdf: &str, bridges: &[&str]) -> String {
        let root = bridges.first().copied().unwrap_or(bdf);
        let domain_bus = &root[..7]; // "0000:00"
        let mut p = format!("/sys/devices/pci{domain_bus}");
        for b in bridges {
            p.push('/');
            p.push_str(b);
        }
        p.push('/');
        p.push_str(bdf);
        p
    }

    fn add_raw(
        &self,
        bdf: &str,
        bridges: &[&str],
        vendor: u16,
        device: u16,
        class: u32,
        numa: i32,
    ) -> String {
        let dir = self.canonical(bdf, bridges);
        self.write(&format!("{dir}/vendor"), &format!("0x{vendor:04x}\n"));
        self.write(&format!("{dir}/device"), &format!("0x{device:04x}\n"));
        self.write(&format!("{dir}/class"), &format!("0x{class:06x}\n"));
        self.write(
            &format!("{dir}/subsystem_vendor"),
            &format!("0x{vendor:04x}\n"),
        );
        self.write(&format!("{dir}/subsystem_device"), "0x16c1\n");
        self.write(&format!("{dir}/revision"), "0xa1\n");
        self.write(&format!("{dir}/numa_node"), &format!("{numa}\n"));
        self.write(&format!("{dir}/driver_override"), "(null)\n");
        self.link(&format!("{dir}/subsystem"), "/sys/bus/pci");
        self.link(&format!("/sys/bus/pci/devices/{bdf}"), &dir);
        dir
    }

    /// Adds a function (and its bridges, bound to pcieport).
    pub fn add(&self, f: &Func) {
        for (i, b) in f.bridges.iter().enumerate() {
            let dir = self.add_raw(b, &f.bridges[..i], 0x8086, 0x1234, 0x060400, f.numa);
            self.link(&format!("{dir}/driver"), "/sys/bus/pci/drivers/pcieport");
        }
        let dir = self.add_raw(f.bdf, &f.bridges, f.vendor, f.device, f.class, f.numa);
        if let Some(g) = f.group {
            std::fs::create_dir_all(self.local(&format!("/sys/kernel/iommu_groups/{g}/devices")))
                .unwrap();
            self.link(
                &format!("{dir}/iommu_group"),
                &format!("/sys/kernel/iommu_groups/{g}"),
            );
            self.link(
                &format!("/sys/kernel/iommu_groups/{g}/devices/{}", f.bdf),
                &dir,
            );
        }
        self.set_driver(f, f.driver);
        if let Some(n) = f.vfio_dev {
            std::fs::create_dir_all(self.local(&format!("{dir}/vfio-dev/vfio{n}"))).unwrap();
            self.write(&format!("/dev/vfio/devices/vfio{n}"), "");
        }
    }

    /// Binds the function to a driver (or none), and creates / removes the group node
    /// the way vfio does.
    pub fn set_driver(&self, f: &Func, driver: Option<&str>) {
        let dir = self.canonical(f.bdf, &f.bridges);
        if let Some(old) = self.host.link_name(format!("{dir}/driver")).unwrap() {
            self.remove(&format!("/sys/bus/pci/drivers/{old}/{}", f.bdf));
        }
        self.remove(&format!("{dir}/driver"));
        if let Some(d) = driver {
            std::fs::create_dir_all(self.local(&format!("/sys/bus/pci/drivers/{d}"))).unwrap();
            self.link(
                &format!("{dir}/driver"),
                &format!("/sys/bus/pci/drivers/{d}"),
            );
            self.link(&format!("/sys/bus/pci/drivers/{d}/{}", f.bdf), &dir);
        }
        // vfio keeps /dev/vfio/<group> while any member of the group is bound to it.
        if let Some(g) = f.group {
            let members = self
                .host
                .list_dir(format!("/sys/kernel/iommu_groups/{g}/devices"))
                .unwrap();
            let any_vfio = members.iter().any(|m| {
                self.host
                    .link_name(format!("/sys/bus/pci/devices/{m}/driver"))
                    .unwrap()
                    .as_deref()
                    == Some("vfio-pci")
            });
            if any_vfio {
                self.write(&format!("/dev/vfio/{g}"), "");
            } else {
                self.remove(&format!("/dev/vfio/{g}"));
            }
        }
    }

    pub fn enable_iommufd(&self) {
        self.write("/dev/iommu", "");
        std::fs::create_dir_all(self.local("/dev/vfio/devices")).unwrap();
    }
}

/// The 4-GPU fixture: two PCIe switches on NUMA 0 (groups 12, 13 / 14) and one GPU on
/// NUMA 1 (group 40), plus one NVSwitch (group 60).
pub fn hgx_like() -> (FakeHost, Vec<Func>) {
    let h = FakeHost::new();
    let sw_a = vec!["0000:00:01.0", "0000:01:00.0", "0000:02:00.0"];
    let sw_a2 = vec!["0000:00:01.0", "0000:01:00.0", "0000:02:01.0"];
    let sw_b = vec!["0000:00:02.0", "0000:05:00.0", "0000:06:00.0"];
    let sw_c = vec!["0000:80:01.0", "0000:81:00.0", "0000:82:00.0"];
    let mut funcs = vec![
        Func::gpu("0000:03:00.0", sw_a, 12, 0),
        Func::gpu("0000:04:00.0", sw_a2, 13, 0),
        Func::gpu("0000:07:00.0", sw_b, 14, 0),
        Func::gpu("0000:83:00.0", sw_c, 40, 1),
    ];
    let mut nvswitch = Func::gpu("0000:90:00.0", vec!["0000:80:02.0"], 60, 1);
    nvswitch.device = 0x22a3;
    nvswitch.class = 0x068000;
    funcs.push(nvswitch);
    for f in &funcs {
        h.add(f);
    }
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
pub fn hgx_like_mixed_split(h: &FakeHost) -> cchost::inventory::cc_split::CcSplit {
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
