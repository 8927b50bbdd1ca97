//! The device plugin against a kubelet-side harness over real unix sockets: register,
//! ListAndWatch, GetPreferredAllocation, Allocate, health changes, bad requests,
//! kubelet restarts and outages, shutdown. Timings are printed, never asserted.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::device_plugin::{
    DP_DIR, FakeKubelet, add_behind, connect_plugin, gpu, hgx_like, hgx_like_mixed_split,
    whole_host,
};
use cchost::config::{Config, DevicePluginConfig};
use cchost::deviceplugin::PluginManager;
use cchost::deviceplugin::api;
use cchost::fixture::{PciSpec, Tree};
use cchost::inventory::passthrough;
use tokio::sync::watch;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    h: Tree,
    funcs: Vec<PciSpec>,
    cfg: DevicePluginConfig,
    mgr: PluginManager,
    shutdown: watch::Sender<bool>,
}

impl Rig {
    fn dir(&self) -> PathBuf {
        self.h.path(DP_DIR)
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// What the daemon does on a change: scan, feed the plugins.
    fn rescan(&mut self) {
        let scan =
            passthrough::discover(&self.h.host, &Config::default().matching, &self.cfg).unwrap();
        self.mgr.update(&scan);
    }
}

fn rig_with(h: Tree, funcs: Vec<PciSpec>, cfg: DevicePluginConfig) -> Rig {
    let (shutdown, rx) = watch::channel(false);
    let mgr = PluginManager::start(&h.host, &cfg, rx).unwrap();
    let mut r = Rig {
        h,
        funcs,
        cfg,
        mgr,
        shutdown,
    };
    r.rescan();
    r
}

fn rig() -> Rig {
    let (h, funcs) = hgx_like();
    rig_with(h, funcs, DevicePluginConfig::default())
}

async fn next_list(
    stream: &mut tonic::Streaming<api::ListAndWatchResponse>,
) -> Vec<(String, String, Option<i64>)> {
    let msg = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("ListAndWatch update in time")
        .unwrap()
        .expect("stream open");
    msg.devices
        .into_iter()
        .map(|d| {
            (
                d.id,
                d.health,
                d.topology.and_then(|t| t.nodes.first().map(|n| n.id)),
            )
        })
        .collect()
}

#[tokio::test]
async fn registers_after_serving_and_answers_every_rpc() {
    let r = rig();
    let mut kubelet = FakeKubelet::start(&r.dir()).await;
    let mut regs = Vec::new();
    for _ in 0..2 {
        regs.push(kubelet.next(WAIT).await.expect("Register"));
    }
    regs.sort_by(|a, b| a.req.resource_name.cmp(&b.req.resource_name));
    assert_eq!(regs[0].req.resource_name, "nvidia.com/nvswitch");
    let gpu = &regs[1];
    assert_eq!(gpu.req.resource_name, "nvidia.com/pgpu");
    assert_eq!(gpu.req.version, "v1beta1");
    assert_eq!(gpu.req.endpoint, "cchost-nvidia.com-pgpu.sock");
    assert!(
        gpu.served_before_register,
        "kubelet could not dial the plugin during Register"
    );
    assert!(gpu.req.options.unwrap().get_preferred_allocation_available);

    let mut c = connect_plugin(&r.sock(&gpu.req.endpoint)).await.unwrap();
    let opts = c
        .get_device_plugin_options(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(!opts.pre_start_required);

    let mut stream = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    let list = next_list(&mut stream).await;
    let h = || "Healthy".to_string();
    assert_eq!(
        list,
        [
            ("12".into(), h(), Some(0)),
            ("13".into(), h(), Some(0)),
            ("14".into(), h(), Some(0)),
            ("40".into(), h(), Some(1))
        ]
    );

    // Allocate: fully-qualified CDI names + the vfio nodes, mrw, each node once.
    let resp = c
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["12".into(), "40".into(), "12".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let cr = &resp.container_responses[0];
    let cdi: Vec<&str> = cr.cdi_devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(cdi, ["nvidia.com/pgpu=12", "nvidia.com/pgpu=40"]);
    let nodes: Vec<(&str, &str, &str)> = cr
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.as_str(),
                d.host_path.as_str(),
                d.permissions.as_str(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", "mrw"),
            ("/dev/vfio/12", "/dev/vfio/12", "mrw"),
            ("/dev/vfio/40", "/dev/vfio/40", "mrw")
        ]
    );
    assert!(cr.envs.is_empty(), "env is off by default");

    // Unknown IDs: an error that names the ID.
    let err = c
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["12".into(), "vfio1".into()],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("\"vfio1\""), "{}", err.message());
    // Empty and odd requests answer too.
    let err = c
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec![],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let ok = c
        .allocate(api::AllocateRequest {
            container_requests: vec![],
        })
        .await
        .unwrap();
    assert!(ok.into_inner().container_responses.is_empty());

    // GetPreferredAllocation: same switch first (12 and 13 share one), NUMA 0.
    let pref = |avail: &[&str], must: &[&str], size: i32| api::PreferredAllocationRequest {
        container_requests: vec![api::ContainerPreferredAllocationRequest {
            available_device_i_ds: avail.iter().map(|s| s.to_string()).collect(),
            must_include_device_i_ds: must.iter().map(|s| s.to_string()).collect(),
            allocation_size: size,
        }],
    };
    let got = c
        .get_preferred_allocation(pref(&["40", "14", "13", "12"], &[], 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.container_responses[0].device_i_ds, ["12", "13"]);
    let got = c
        .get_preferred_allocation(pref(&["40", "14", "13", "12"], &["40"], 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.container_responses[0].device_i_ds[0], "40");
    for bad in [
        pref(&["12", "999"], &[], 1),
        pref(&["12"], &["x"], 1),
        pref(&["12"], &[], -5),
        pref(&["12"], &[], 7),
        pref(&[], &["12", "13"], 1),
    ] {
        let e = c.get_preferred_allocation(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    }
    c.pre_start_container(api::PreStartContainerRequest {
        devices_ids: vec!["nope".into()],
    })
    .await
    .unwrap();

    let sock = r.sock("cchost-nvidia.com-pgpu.sock");
    let _ = r.shutdown.send(true);
    assert!(r.mgr.join().await.is_empty());
    assert!(!sock.exists(), "socket removed at shutdown");
    kubelet.stop().await;
}

#[tokio::test]
async fn health_follows_the_vfio_node_and_the_driver() {
    let mut r = rig();
    let mut kubelet = FakeKubelet::start(&r.dir()).await;
    kubelet.next(WAIT).await.unwrap();
    kubelet.next(WAIT).await.unwrap();
    let mut c = connect_plugin(&r.sock("cchost-nvidia.com-pgpu.sock"))
        .await
        .unwrap();
    let mut stream = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    assert!(
        next_list(&mut stream)
            .await
            .iter()
            .all(|d| d.1 == "Healthy")
    );
    let health = |l: &[(String, String, Option<i64>)], id: &str| {
        l.iter().find(|d| d.0 == id).map(|d| d.1.clone()).unwrap()
    };

    // The vfio node vanishes.
    r.h.remove("/dev/vfio/13");
    let t = Instant::now();
    r.rescan();
    let l = next_list(&mut stream).await;
    eprintln!("health change -> ListAndWatch update: {:?}", t.elapsed());
    assert_eq!(health(&l, "13"), "Unhealthy");
    // Allocate refuses it, naming it.
    let err = c
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["13".into()],
            }],
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("\"13\"") && err.message().contains("unhealthy"),
        "{}",
        err.message()
    );
    // It comes back.
    r.h.file("/dev/vfio/13", "");
    r.rescan();
    assert_eq!(health(&next_list(&mut stream).await, "13"), "Healthy");

    // The device leaves vfio-pci (bound to the host driver): still listed, Unhealthy.
    let f = r.funcs[2].clone();
    r.h.set_driver(&f.address, Some("nvidia"));
    r.rescan();
    let l = next_list(&mut stream).await;
    assert_eq!(health(&l, "14"), "Unhealthy");
    assert_eq!(l.len(), 4);
    // A rescan with no change sends nothing new; rebinding to vfio-pci heals it.
    r.rescan();
    r.h.set_driver(&f.address, Some("vfio-pci"));
    r.rescan();
    assert_eq!(health(&next_list(&mut stream).await, "14"), "Healthy");

    let _ = r.shutdown.send(true);
    // ListAndWatch ends with the server.
    let end = tokio::time::timeout(WAIT, stream.message()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    r.mgr.join().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn kubelet_restart_and_long_outage_reregister_without_restarting() {
    let r = rig();
    let mut kubelet = FakeKubelet::start(&r.dir()).await;
    kubelet.next(WAIT).await.unwrap();
    kubelet.next(WAIT).await.unwrap();

    // A plain file appearing in the directory (kubelet's DEPRECATION note) is ignored.
    std::fs::write(r.dir().join("DEPRECATION"), "x").unwrap();

    // Restart: the old kubelet dies, the new one empties the socket dir and listens.
    kubelet.stop().await;
    let t = Instant::now();
    let mut kubelet = FakeKubelet::start(&r.dir()).await;
    let first = kubelet
        .next(WAIT)
        .await
        .expect("re-registered after a kubelet restart");
    kubelet
        .next(WAIT)
        .await
        .expect("both resources re-registered");
    eprintln!("kubelet restart -> re-registered: {:?}", t.elapsed());
    assert!(first.served_before_register);
    assert!(r.sock("cchost-nvidia.com-pgpu.sock").exists());
    let mut c = connect_plugin(&r.sock("cchost-nvidia.com-pgpu.sock"))
        .await
        .unwrap();
    let mut s = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    assert_eq!(next_list(&mut s).await.len(), 4);
    assert!(
        kubelet
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.req.endpoint != "DEPRECATION")
    );

    // A long outage: kubelet gone, its sockets wiped, nothing listening for a while.
    kubelet.stop().await;
    std::fs::remove_file(r.dir().join("kubelet.sock")).unwrap();
    std::fs::remove_file(r.sock("cchost-nvidia.com-pgpu.sock")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        r.sock("cchost-nvidia.com-pgpu.sock").exists(),
        "socket re-created while kubelet is away"
    );
    let t = Instant::now();
    let mut kubelet = FakeKubelet::start(&r.dir()).await;
    kubelet
        .next(WAIT)
        .await
        .expect("registered when kubelet came back");
    kubelet.next(WAIT).await.expect("both resources");
    eprintln!(
        "kubelet back after an outage -> re-registered: {:?}",
        t.elapsed()
    );

    let _ = r.shutdown.send(true);
    assert!(r.mgr.join().await.is_empty());
    kubelet.stop().await;
}

#[tokio::test]
async fn zero_devices_still_registers() {
    let h = whole_host();
    // A GPU on the host driver: nothing to advertise.
    let f = add_behind(
        &h,
        &["0000:3a:00.0"],
        gpu("0000:3b:00.0", 5, 0).driver("nvidia"),
    );
    let r = rig_with(h, vec![f], DevicePluginConfig::default());
    let mut kubelet = FakeKubelet::start(&r.dir()).await;
    let reg = kubelet.next(WAIT).await.expect("Register with 0 devices");
    assert_eq!(reg.req.resource_name, "nvidia.com/pgpu");
    let mut c = connect_plugin(&r.sock(&reg.req.endpoint)).await.unwrap();
    let mut s = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    assert!(next_list(&mut s).await.is_empty());
    let _ = r.shutdown.send(true);
    r.mgr.join().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn env_option_and_per_model_resources() {
    let (h, funcs) = hgx_like();
    let cfg = DevicePluginConfig {
        gpu_resource: String::new(),
        pci_resource_env: true,
        ..Default::default()
    };
    let r = rig_with(h, funcs, cfg);
    let mut kubelet = FakeKubelet::start(&r.dir()).await;
    let mut names = vec![
        kubelet.next(WAIT).await.unwrap().req.resource_name,
        kubelet.next(WAIT).await.unwrap().req.resource_name,
    ];
    names.sort();
    assert_eq!(
        names,
        ["nvidia.com/GH100_H100_SXM5_80GB", "nvidia.com/nvswitch"]
    );
    let mut c = connect_plugin(&r.sock("cchost-nvidia.com-GH100_H100_SXM5_80GB.sock"))
        .await
        .unwrap();
    let resp = c
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["12".into(), "13".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let cr = &resp.container_responses[0];
    assert_eq!(cr.cdi_devices[0].name, "nvidia.com/GH100_H100_SXM5_80GB=12");
    assert_eq!(
        cr.envs["PCI_RESOURCE_NVIDIA_COM_GH100_H100_SXM5_80GB"],
        "0000:03:00.0,0000:04:00.0"
    );
    let _ = r.shutdown.send(true);
    r.mgr.join().await;
    kubelet.stop().await;
}

#[tokio::test]
async fn a_kubelet_that_never_calls_back_is_reported() {
    use cchost::deviceplugin::endpoint::{EndpointEvent, PluginEndpoint};
    let (h, _) = hgx_like();
    let dir = h.path(DP_DIR);
    let (_tx, devices) = watch::channel(Default::default());
    let (stop, shutdown) = watch::channel(false);
    let (events, _watch) =
        cchost::deviceplugin::endpoint::spawn_dir_watch(&h.host, DP_DIR, shutdown.clone()).unwrap();
    let mut kubelet = FakeKubelet::start_silent(&dir).await;
    let ep = PluginEndpoint {
        host: h.host.clone(),
        socket_dir: DP_DIR.to_string(),
        resource: "nvidia.com/pgpu".to_string(),
        devices,
        pci_resource_env: false,
        retry: Duration::from_secs(10),
        calls: Default::default(),
        authority_check: Duration::from_millis(300),
    };
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(ep.run(events.subscribe(), shutdown, Some(ptx)));
    kubelet.next(WAIT).await.expect("Register");
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(WAIT, prx.recv()).await {
        seen.push(e.clone());
        if e == EndpointEvent::KubeletSilent {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            EndpointEvent::Serving,
            EndpointEvent::Registered,
            EndpointEvent::KubeletSilent
        ]
    );
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    kubelet.stop().await;
}

/// A mixed node registers the two GPU resources; each lists only its own GPUs, with
/// health from the firmware, and allocates under its own CDI kind. Asking the CC
/// resource for a non-CC GPU's ID is refused.
#[tokio::test]
async fn mixed_node_registers_two_gpu_resources() {
    let (h, _) = hgx_like();
    let cfg = DevicePluginConfig::default();
    let (shutdown, rx) = watch::channel(false);
    let mut mgr = PluginManager::start(&h.host, &cfg, rx).unwrap();
    let mut scan = passthrough::discover(&h.host, &Config::default().matching, &cfg).unwrap();
    cchost::inventory::cc_split::apply(&mut scan, &hgx_like_mixed_split(&h));
    mgr.update(&scan);
    let dir = h.path(DP_DIR);
    let mut kubelet = FakeKubelet::start(&dir).await;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(kubelet.next(WAIT).await.unwrap().req.resource_name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "nvidia.com/nvswitch",
            "nvidia.com/pgpu",
            "nvidia.com/pgpu-nocc"
        ]
    );
    let h_ = |s: &str| s.to_string();
    for (sock, want) in [
        (
            "cchost-nvidia.com-pgpu.sock",
            vec![
                (h_("12"), h_("Healthy"), Some(0)),
                (h_("13"), h_("Unhealthy"), Some(0)),
            ],
        ),
        (
            "cchost-nvidia.com-pgpu-nocc.sock",
            vec![
                (h_("14"), h_("Healthy"), Some(0)),
                (h_("40"), h_("Unhealthy"), Some(1)),
            ],
        ),
    ] {
        let mut c = connect_plugin(&dir.join(sock)).await.unwrap();
        let mut stream = c.list_and_watch(api::Empty {}).await.unwrap().into_inner();
        assert_eq!(next_list(&mut stream).await, want, "{sock}");
    }
    let mut nocc = connect_plugin(&dir.join("cchost-nvidia.com-pgpu-nocc.sock"))
        .await
        .unwrap();
    let resp = nocc
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["14".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.container_responses[0].cdi_devices[0].name,
        "nvidia.com/pgpu-nocc=14"
    );
    let mut cc = connect_plugin(&dir.join("cchost-nvidia.com-pgpu.sock"))
        .await
        .unwrap();
    let err = cc
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["14".into()],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let _ = shutdown.send(true);
    mgr.join().await;
    kubelet.stop().await;
}
