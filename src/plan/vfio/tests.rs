use super::*;
use crate::fixture::{PciSpec, Tree};
use crate::gpu::vfio::{self, VfioError};
use crate::journal::Journal;

const NV: u16 = 0x10de;

/// An HGX-like host: an H100 behind its own bridge (group 1), a graphics-mode board with
/// an HDMI audio function (group 2), an NVSwitch (group 3), and a NIC (group 4).
fn host() -> Tree {
    let t = Tree::new();
    t.kernel("6.8.0-test", "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n");
    t.file("/proc/1/comm", "init\n");
    std::fs::create_dir_all(t.path("/proc/1/fd")).unwrap();
    t.pci(&PciSpec::new("0000:00:01.0", 0x8086, 0x1234, 0x060400).group(1))
        .pci(
            &PciSpec::new("0000:3b:00.0", NV, 0x2330, 0x030200)
                .driver("nvidia")
                .group(1),
        )
        .pci(&PciSpec::new("0000:5e:00.0", NV, 0x2204, 0x030000).group(2))
        .pci(
            &PciSpec::new("0000:5e:00.1", NV, 0x1aef, 0x040300)
                .driver("snd_hda_intel")
                .group(2),
        )
        .pci(&PciSpec::new("0000:7a:00.0", NV, 0x22a3, 0x068000).group(3))
        .pci(
            &PciSpec::new("0000:99:00.0", 0x15b3, 0x1021, 0x020000)
                .driver("mlx5_core")
                .group(4),
        );
    t
}

fn plan(t: &Tree, config: &Config, sel: Selection) -> Result<Plan, PlanError> {
    let inv = crate::inventory::discover_gpus(&t.host, &config.matching);
    plan_bind(&t.host, config, &inv, &sel)
}

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn refusals(r: Result<Plan, PlanError>) -> Vec<Refusal> {
    match r {
        Err(PlanError::Refused(v)) => v,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn all_takes_gpus_their_audio_functions_and_nvswitches() {
    let t = host();
    let p = plan(&t, &Config::default(), Selection::All).unwrap();
    let got: Vec<(String, Role)> = p
        .items
        .iter()
        .map(|i| (i.address.to_string(), i.role))
        .collect();
    assert_eq!(
        got,
        vec![
            ("0000:3b:00.0".into(), Role::Gpu),
            ("0000:5e:00.0".into(), Role::Gpu),
            (
                "0000:5e:00.1".into(),
                Role::SlotFunction {
                    of: addr("0000:5e:00.0")
                }
            ),
            ("0000:7a:00.0".into(), Role::NvSwitch),
        ]
    );
    assert!(p.items.iter().all(|i| i.changes));
    assert_eq!(p.items[0].driver_candidates[0], "vfio-pci");
    assert_eq!(
        p.items[0].current,
        Binding {
            driver: Some("nvidia".into()),
            driver_override: None
        }
    );
    assert!(p.warnings.is_empty());
}

#[test]
fn nvswitches_and_slot_functions_follow_the_config() {
    let t = host();
    let mut c = Config::default();
    c.vfio.bind_nvswitches = false;
    let p = plan(&t, &c, Selection::All).unwrap();
    let got: Vec<String> = p.items.iter().map(|i| i.address.to_string()).collect();
    assert_eq!(got, vec!["0000:3b:00.0", "0000:5e:00.0", "0000:5e:00.1"]);
    // Asked for by address, an NVSwitch is bound whatever the default.
    let p = plan(&t, &c, Selection::Addresses(vec![addr("0000:7a:00.0")])).unwrap();
    assert_eq!(p.items.len(), 1);
    // Without its audio function, the graphics board's group is not clean: refused.
    c.vfio.bind_slot_functions = false;
    let r = refusals(plan(&t, &c, Selection::All));
    assert!(
        matches!(&r[..], [Refusal::ForeignGroupMembers { group: 2, members, .. }] if members[0].starts_with("0000:5e:00.1")),
        "{r:?}"
    );
}

#[test]
fn every_refusal_is_reported_at_once() {
    let t = host();
    // A boot-console GPU, a GPU without an IOMMU group, a GPU sharing its group with
    // the NIC.
    t.pci(
        &PciSpec::new("0000:01:00.0", NV, 0x2330, 0x030000)
            .group(5)
            .boot_vga(),
    )
    .pci(&PciSpec::new("0000:02:00.0", NV, 0x2330, 0x030200))
    .pci(&PciSpec::new("0000:03:00.0", NV, 0x2330, 0x030200).group(4));
    let sel = Selection::Addresses(vec![
        addr("0000:01:00.0"),
        addr("0000:02:00.0"),
        addr("0000:03:00.0"),
        addr("0000:99:00.0"),
        addr("0000:aa:00.0"),
        addr("0000:3b:00.0"),
    ]);
    let r = refusals(plan(&t, &Config::default(), sel));
    let text: Vec<String> = r.iter().map(|r| r.to_string()).collect();
    let all = text.join("\n");
    assert!(
        matches!(&r[0], Refusal::NotMatched { address, vendor: 0x15b3, .. } if address.to_string() == "0000:99:00.0"),
        "{all}"
    );
    assert!(all.contains("0000:aa:00.0: no such PCI device"), "{all}");
    assert!(all.contains("0000:01:00.0 is the boot VGA device"), "{all}");
    assert!(all.contains("0000:02:00.0 has no IOMMU group"), "{all}");
    assert!(all.contains("intel_iommu=on"), "remedy given: {all}");
    assert!(
        all.contains(
            "0000:03:00.0: IOMMU group 4 also holds 0000:99:00.0 (15b3:1021, driver mlx5_core)"
        ),
        "{all}"
    );
    // The H100 itself was fine: its bridge does not count as a foreign member.
    assert!(!all.contains("0000:3b:00.0"), "{all}");
    assert_eq!(r.len(), 5, "{all}");
    let e = PlanError::Refused(r).to_string();
    assert!(e.starts_with("refused, nothing was changed"), "{e}");
}

#[test]
fn foreign_members_can_be_allowed_by_config() {
    let t = host();
    t.pci(&PciSpec::new("0000:03:00.0", NV, 0x2330, 0x030200).group(4));
    let mut c = Config::default();
    c.vfio.allow_foreign_group_members = true;
    let p = plan(&t, &c, Selection::Addresses(vec![addr("0000:03:00.0")])).unwrap();
    assert_eq!(p.items.len(), 1);
    assert!(p.warnings[0].contains("0000:99:00.0"), "{:?}", p.warnings);
}

#[test]
fn a_gpu_in_use_is_refused_unless_it_is_already_bound() {
    let t = host();
    t.nvidia_minor("0000:3b:00.0", 0)
        .process_holding(4242, "python3", 7, "/dev/nvidia0");
    let r = refusals(plan(&t, &Config::default(), Selection::All));
    assert_eq!(r.len(), 1, "{r:?}");
    let msg = r[0].to_string();
    assert!(
        msg.contains("0000:3b:00.0 is in use") && msg.contains("pid 4242 (python3)"),
        "{msg}"
    );

    // A GPU already on vfio-pci and held by a VM is simply left alone.
    let t = host();
    t.pci(
        &PciSpec::new("0000:04:00.0", NV, 0x2330, 0x030200)
            .driver("vfio-pci")
            .group(6),
    )
    .file("/proc/77/comm", "qemu-kvm\n")
    .link("/proc/77/fd/30", "/dev/vfio/6");
    let p = plan(
        &t,
        &Config::default(),
        Selection::Addresses(vec![addr("0000:04:00.0")]),
    )
    .unwrap();
    assert!(!p.items[0].changes);
}

#[test]
fn unbind_plans_journaled_and_vfio_bound_devices() {
    let t = host();
    t.pci(
        &PciSpec::new("0000:04:00.0", NV, 0x2330, 0x030200)
            .driver("vfio-pci")
            .group(6),
    );
    let c = Config::default();
    let inv = crate::inventory::discover_gpus(&t.host, &c.matching);
    let mut j = Journal::open(&t.host).unwrap();
    // cchost bound the audio function of 5e:00 earlier (the GPU is not on vfio now).
    let seq = j
        .begin(
            BIND_KIND,
            "0000:5e:00.1",
            (),
            Binding {
                driver: Some("snd_hda_intel".into()),
                driver_override: None,
            },
        )
        .unwrap();
    j.applied(seq).unwrap();
    let p = plan_unbind(&t.host, j.entries(), &inv, &Selection::All).unwrap();
    let got: Vec<(String, Role)> = p
        .items
        .iter()
        .map(|i| (i.address.to_string(), i.role))
        .collect();
    assert_eq!(
        got,
        vec![
            ("0000:04:00.0".into(), Role::Gpu),
            ("0000:5e:00.1".into(), Role::Journaled),
        ]
    );
    // By address: the GPU brings the slot function cchost bound with it.
    let p = plan_unbind(
        &t.host,
        j.entries(),
        &inv,
        &Selection::Addresses(vec![addr("0000:5e:00.0")]),
    )
    .unwrap();
    let got: Vec<String> = p.items.iter().map(|i| i.address.to_string()).collect();
    assert_eq!(got, vec!["0000:5e:00.1"]);
    // An unknown address is refused.
    let r = plan_unbind(
        &t.host,
        j.entries(),
        &inv,
        &Selection::Addresses(vec![addr("0000:99:00.0")]),
    );
    assert!(matches!(r, Err(PlanError::Refused(_))));
}

#[test]
fn restore_binding_refuses_a_held_device_before_writing() {
    let t = host();
    t.pci(
        &PciSpec::new("0000:04:00.0", NV, 0x2330, 0x030200)
            .driver("vfio-pci")
            .group(6),
    )
    .file("/proc/77/comm", "qemu-kvm\n")
    .link("/proc/77/fd/30", "/dev/vfio/6");
    let want = Binding {
        driver: None,
        driver_override: None,
    };
    let err = vfio::restore_binding(&t.host, &addr("0000:04:00.0"), &want).unwrap_err();
    assert!(
        matches!(err, VfioError::InUse { .. }) && err.to_string().contains("qemu-kvm"),
        "{err}"
    );
    // driver_override untouched.
    let o = std::fs::read_to_string(t.path("/sys/bus/pci/devices/0000:04:00.0/driver_override"))
        .unwrap();
    assert_eq!(o, "(null)\n");
}

#[test]
fn a_gpu_held_by_nvidia_persistenced_names_the_service_to_stop() {
    let t = host();
    t.nvidia_minor("0000:3b:00.0", 0).process_holding(
        1111,
        "nvidia-persistenced",
        3,
        "/dev/nvidia0",
    );
    let r = refusals(plan(&t, &Config::default(), Selection::All));
    let msg = r[0].to_string();
    assert!(
        msg.contains("pid 1111 (nvidia-persiste)")
            && msg.contains("systemctl stop nvidia-persistenced.service"),
        "{msg}"
    );
    // Any other holder: no such advice.
    let t = host();
    t.nvidia_minor("0000:3b:00.0", 0)
        .process_holding(4242, "python3", 7, "/dev/nvidia0");
    let msg = refusals(plan(&t, &Config::default(), Selection::All))[0].to_string();
    assert!(!msg.contains("systemctl"), "{msg}");
}

#[test]
fn with_stop_services_only_daemon_holders_become_units_to_stop() {
    let mut cfg = Config::default();
    cfg.vfio.stop_nvidia_services = true;
    let held = |extra: Option<(u32, &str)>| {
        let t = host();
        t.nvidia_minor("0000:3b:00.0", 0)
            .process_holding(1111, "nvidia-persistenced", 3, "/dev/nvidia0")
            .process_holding(2222, "nv-fabricmanager", 4, "/dev/nvidia0");
        if let Some((pid, comm)) = extra {
            t.process_holding(pid, comm, 9, "/dev/nvidia0");
        }
        t
    };
    let t = held(None);
    let p = plan(&t, &cfg, Selection::All).unwrap();
    assert_eq!(
        p.stop_units,
        [
            "nvidia-persistenced.service",
            "nvidia-fabricmanager.service"
        ]
    );
    // The plan shows them (`gpu bind --dry-run --json`).
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["stop_units"][0], "nvidia-persistenced.service");
    // Another holder besides them: refused as before, the daemons named.
    let t = held(Some((4242, "python3")));
    let r = refusals(plan(&t, &cfg, Selection::All));
    let msg = r[0].to_string();
    assert!(
        msg.contains("python3") && msg.contains("nvidia-persistenced.service"),
        "{msg}"
    );
    // Off (the default): refused, and the message says how to let cchost stop them.
    let t = held(None);
    let msg = refusals(plan(&t, &Config::default(), Selection::All))[0].to_string();
    assert!(msg.contains("--stop-services"), "{msg}");
}
