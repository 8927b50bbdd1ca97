//! `cchost plan` decisions on temp host trees: profile choice, kernel arguments through
//! the detected mechanism, modules, reboot-required, and nothing to do once done.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;

use cchost::config::{Config, ProfileChoice};
use cchost::host::HostRoot;
use cchost::host::exec::ToolOutput;
use cchost::hostcfg::boot::HostTools;
use cchost::hostcfg::profile::Platform;
use cchost::inventory::facts::*;
use cchost::plan::{Action, build, gather, render};

#[derive(Default)]
struct Tools {
    present: Vec<&'static str>,
    calls: RefCell<Vec<String>>,
}

impl HostTools for Tools {
    fn has(&self, p: &str) -> bool {
        self.present.contains(&p)
    }
    fn run(&self, p: &str, a: &[String]) -> Result<ToolOutput, cchost::host::HostError> {
        self.calls.borrow_mut().push(format!("{p} {}", a.join(" ")));
        Ok(ToolOutput {
            success: true,
            code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
        })
    }
}

fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    for (p, text) in files {
        let full = dir.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
    let host = HostRoot::new(dir.path()).unwrap();
    (dir, host)
}

fn toks(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn tdx_facts() -> NodeFacts {
    NodeFacts {
        cpu_vendor: Some(CpuVendor::Intel),
        tdx: TdxFacts {
            capable: true,
            enabled: false,
            keys: None,
        },
        iommu: IommuFacts {
            present: true,
            enabled: false,
            mode: IommuMode::Unknown,
        },
        cmdline: toks("BOOT_IMAGE=/vmlinuz-6.8.0 root=UUID=1 ro quiet"),
        ..Default::default()
    }
}

const GRUB: &str =
    "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n";

#[test]
fn tdx_host_on_debian_grub_gets_args_modules_and_reboot_required() {
    let (_d, host) = tree(&[("/etc/default/grub", GRUB)]);
    let tools = Tools {
        present: vec!["update-grub"],
        ..Default::default()
    };
    let cfg = Config::default();
    let plan = build(&cfg, &gather(&host, &tools, &cfg, tdx_facts()));
    assert_eq!(plan.profile.platform, Platform::Tdx);
    assert!(!plan.profile.gpu);
    let kinds: Vec<String> = plan.actions.iter().map(|a| a.summary()).collect();
    assert_eq!(
        kinds,
        [
            "kernel arguments (grub): add kvm_intel.tdx=1 nohibernate intel_iommu=on",
            "load module vhost_vsock (modprobe)",
            "write /etc/modules-load.d/cchost.conf (vhost_vsock)"
        ]
    );
    assert!(plan.reboot_required);
    let text = render::to_text(&plan);
    assert!(text.contains("run  update-grub"), "{text}");
    assert!(text.contains("Reboot required"), "{text}");
    assert!(text.contains("cchost.io/tee=none"), "{text}");
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["actions"][0]["action"], "kernel-args");
    assert_eq!(json["actions"][0]["mechanism"], "grub");
    assert!(tools.calls.borrow().is_empty(), "planning runs no tool");
}

#[test]
fn done_host_has_nothing_to_change() {
    let (_d, host) = tree(&[
        (
            "/etc/default/grub",
            "GRUB_CMDLINE_LINUX=\"nohibernate kvm_intel.tdx=1 intel_iommu=on\"\n",
        ),
        ("/etc/modules-load.d/cchost.conf", "vhost_vsock\n"),
    ]);
    let tools = Tools {
        present: vec!["update-grub"],
        ..Default::default()
    };
    let mut f = tdx_facts();
    f.tdx.enabled = true;
    f.tdx.keys = Some(31);
    f.iommu.enabled = true;
    f.cmdline = toks("ro nohibernate kvm_intel.tdx=1 intel_iommu=on");
    f.modules_loaded.insert("vhost_vsock".into());
    f.vhost_vsock_device = true;
    let cfg = Config::default();
    let plan = build(&cfg, &gather(&host, &tools, &cfg, f));
    assert!(plan.is_empty(), "{:?}", plan.actions);
    assert!(!plan.reboot_required);
    assert!(plan.running_findings.is_empty());
    assert!(render::to_text(&plan).contains("Nothing to change."));
    assert_eq!(plan.labels["intel.feature.node.kubernetes.io/tdx"], "true");
    assert_eq!(plan.extended_resources["tdx.intel.com/keys"], "31");
}

#[test]
fn snp_host_booted_with_iommu_pt_is_told_why_and_fixed_in_bls() {
    let entry = "title Fedora\nversion 6.8.5\nlinux /vmlinuz-6.8.5\noptions root=UUID=1 ro iommu=pt amd_iommu=on\n";
    let (_d, host) = tree(&[("/boot/loader/entries/abc-6.8.5.conf", entry)]);
    let tools = Tools::default();
    let f = NodeFacts {
        cpu_vendor: Some(CpuVendor::Amd),
        snp: SnpFacts {
            capable: true,
            enabled: false,
            sev_enabled: true,
            sev_es_enabled: true,
            esids: Some(99),
        },
        iommu: IommuFacts {
            present: true,
            enabled: true,
            mode: IommuMode::Passthrough,
        },
        cmdline: toks("root=UUID=1 ro iommu=pt amd_iommu=on"),
        modules_loaded: ["vhost_vsock".to_string()].into(),
        vhost_vsock_device: true,
        ..Default::default()
    };
    let cfg = Config::default();
    let plan = build(&cfg, &gather(&host, &tools, &cfg, f));
    assert_eq!(plan.profile.platform, Platform::Snp);
    let Action::KernelArgs { add, remove, .. } = &plan.actions[0] else {
        panic!("{:?}", plan.actions)
    };
    assert_eq!(add, &["kvm_amd.sev_snp=1"]);
    assert_eq!(remove, &["iommu=pt", "amd_iommu=on"]);
    assert!(plan.reboot_required);
    let f: Vec<String> = plan
        .running_findings
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert!(
        f.iter()
            .any(|x| x.starts_with("remove iommu=pt: SEV-SNP needs")),
        "{f:?}"
    );
    assert!(
        f.iter()
            .any(|x| x.starts_with("remove amd_iommu=on: `on` is not a valid")),
        "{f:?}"
    );
    // SNP off: no SNP label, no esids resource.
    assert!(
        !plan
            .labels
            .contains_key("amd.feature.node.kubernetes.io/snp")
    );
}

#[test]
fn forced_profile_manage_args_off_and_no_mechanism() {
    let (_d, host) = tree(&[]);
    let tools = Tools::default();
    let mut cfg = Config::default();
    cfg.kernel.profile = ProfileChoice::Tdx;
    let plan = build(&cfg, &gather(&host, &tools, &cfg, NodeFacts::default()));
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("no boot-configuration mechanism"))
    );
    assert!(!plan.reboot_required);
    cfg.kernel.manage_args = false;
    cfg.kernel.vhost_vsock = false;
    let plan = build(&cfg, &gather(&host, &tools, &cfg, NodeFacts::default()));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.running_findings.len(), 3);
}

#[test]
fn builtin_vhost_vsock_is_not_loaded_or_persisted() {
    let (_d, host) = tree(&[]);
    let mut f = NodeFacts::default();
    f.modules_builtin.insert("vhost_vsock".into());
    f.vhost_vsock_device = true;
    let cfg = Config::default();
    let plan = build(&cfg, &gather(&host, &Tools::default(), &cfg, f));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.profile.platform, Platform::None);
}

/// TDX with DCAP on: the Kata QGS drop-in goes where the TDX runtime's directory exists
/// (not into a runtime that is not installed), with the port `[dcap] transport` gives;
/// `apply` journals it and undo removes it.
#[test]
fn kata_qgs_dropin_is_planned_applied_and_undone() {
    let (dir, host) = tree(&[
        (
            "/etc/default/grub",
            "GRUB_CMDLINE_LINUX=\"nohibernate kvm_intel.tdx=1 intel_iommu=on\"\n",
        ),
        ("/etc/modules-load.d/cchost.conf", "vhost_vsock\n"),
        (
            "/etc/kata-containers/kata-tdx/configuration.toml",
            "[hypervisor.qemu]\n",
        ),
    ]);
    let tools = Tools {
        present: vec!["update-grub"],
        ..Default::default()
    };
    let mut f = tdx_facts();
    f.tdx.enabled = true;
    f.iommu.enabled = true;
    f.cmdline = toks("ro nohibernate kvm_intel.tdx=1 intel_iommu=on");
    f.modules_loaded.insert("vhost_vsock".into());
    f.vhost_vsock_device = true;
    let mut cfg = Config::default();
    cfg.dcap.transport = cchost::config::QgsTransport::Vsock;
    let plan = build(&cfg, &gather(&host, &tools, &cfg, f.clone()));
    let summaries: Vec<String> = plan.actions.iter().map(|a| a.summary()).collect();
    assert_eq!(
        summaries,
        [
            "write /etc/kata-containers/kata-tdx/config.d/96-cchost-qgs (Kata: where TDX guests reach QGS)"
        ]
    );
    let mut journal = cchost::journal::Journal::open(&host).unwrap();
    cchost::apply::node::apply(&host, &tools, &mut journal, &plan).unwrap();
    let written = std::fs::read_to_string(
        dir.path()
            .join("etc/kata-containers/kata-tdx/config.d/96-cchost-qgs"),
    )
    .unwrap();
    assert!(
        written.contains("[hypervisor.qemu]\ntdx_quote_generation_service_socket_port = 4050\n"),
        "{written}"
    );
    // Planned again: nothing to do.
    assert!(build(&cfg, &gather(&host, &tools, &cfg, f.clone())).is_empty());
    // Undo removes the file it created.
    let restorers: Vec<&dyn cchost::journal::Restorer> = vec![&cchost::journal::FileRestorer];
    cchost::journal::undo_all(&mut journal, &restorers).unwrap();
    assert!(
        !dir.path()
            .join("etc/kata-containers/kata-tdx/config.d/96-cchost-qgs")
            .exists()
    );
    // DCAP off: no drop-in.
    cfg.dcap.enable = cchost::config::DcapEnable::Off;
    assert!(build(&cfg, &gather(&host, &tools, &cfg, f)).is_empty());
}

/// `[vfio] boot_bind`: `vfio-pci.ids=` for the matched GPU and NVSwitch through the
/// kernel-arguments plan, and the modprobe.d file (ids + softdeps), both journaled by
/// `apply`; planned again, nothing is left to do; undo removes the file.
#[test]
fn boot_bind_adds_vfio_pci_ids_and_the_modprobe_file() {
    use cchost::fixture::{FixtureHost, PciSpec};
    let dir = tempfile::tempdir().unwrap();
    let host = FixtureHost::new(dir.path())
        .pci(PciSpec::h100_sxm5("0000:3b:00.0").driver("nvidia").group(1))
        .pci(PciSpec::nvswitch_ls10("0000:7a:00.0").group(2))
        .file(
            "/etc/default/grub",
            "GRUB_CMDLINE_LINUX=\"nohibernate kvm_intel.tdx=1 intel_iommu=on\"\n",
        )
        .file("/etc/modules-load.d/cchost.conf", "vhost_vsock\n")
        .build()
        .unwrap();
    let tools = Tools {
        present: vec!["update-grub"],
        ..Default::default()
    };
    let mut f = tdx_facts();
    f.tdx.enabled = true;
    f.iommu.enabled = true;
    f.cmdline = toks("ro nohibernate kvm_intel.tdx=1 intel_iommu=on");
    f.modules_loaded.insert("vhost_vsock".into());
    f.vhost_vsock_device = true;
    let mut cfg = Config::default();
    // Off (the default): nothing of it.
    assert!(build(&cfg, &gather(&host, &tools, &cfg, f.clone())).is_empty());
    cfg.vfio.boot_bind = true;
    let plan = build(&cfg, &gather(&host, &tools, &cfg, f.clone()));
    let summaries: Vec<String> = plan.actions.iter().map(|a| a.summary()).collect();
    assert_eq!(
        summaries,
        [
            "kernel arguments (grub): add vfio-pci.ids=10de:22a3,10de:2330",
            "write /etc/modprobe.d/cchost-vfio.conf (vfio-pci takes 10de:22a3,10de:2330 at boot, before nvidia)"
        ]
    );
    assert!(plan.reboot_required);
    let mut journal = cchost::journal::Journal::open(&host).unwrap();
    cchost::apply::node::apply(&host, &tools, &mut journal, &plan).unwrap();
    let grub = std::fs::read_to_string(dir.path().join("etc/default/grub")).unwrap();
    assert!(
        grub.contains("intel_iommu=on vfio-pci.ids=10de:22a3,10de:2330\""),
        "{grub}"
    );
    let file = dir.path().join("etc/modprobe.d/cchost-vfio.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        [
            "options vfio-pci ids=10de:22a3,10de:2330",
            "softdep nvidia pre: vfio-pci",
            "softdep nouveau pre: vfio-pci"
        ]
    );
    let kinds: Vec<&str> = journal.entries().iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["kernel.args", "file"]);
    // Planned again: nothing to do (the running kernel gets the ids at the next boot).
    assert!(build(&cfg, &gather(&host, &tools, &cfg, f.clone())).is_empty());
    // The file's undo removes it (the kernel-argument step's undo is tested with grub).
    let entry = journal
        .find("file", "/etc/modprobe.d/cchost-vfio.conf")
        .unwrap();
    cchost::journal::Restorer::restore(&cchost::journal::FileRestorer, &host, entry).unwrap();
    assert!(!file.exists());
    // NVSwitches stay with the host when they are not bound: only the GPU's id.
    cfg.vfio.bind_nvswitches = false;
    let plan = build(&cfg, &gather(&host, &tools, &cfg, f));
    assert!(
        plan.actions[0]
            .summary()
            .contains("add vfio-pci.ids=10de:2330"),
        "{:?}",
        plan.actions
    );
}
