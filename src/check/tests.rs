use super::*;
use crate::fixture::{PciSpec, Tree};

/// An AMD host with SNP fully up, 2 H100s on vfio, vhost-vsock, IOMMU translated.
fn snp_host(t: &Tree, cmdline: &str, snp_param: &str) {
    t.file("/proc/cpuinfo", "processor : 0\nvendor_id : AuthenticAMD\nmodel name : AMD EPYC 9654\nflags : svm sev sev_es sev_snp\n")
        .file("/proc/cmdline", format!("{cmdline}\n"))
        .file("/proc/sys/kernel/osrelease", "6.11.0\n")
        .file("/proc/modules", "kvm_amd 1 0 - Live 0x0\nkvm 1 1 kvm_amd, Live 0x0\nvhost_vsock 1 0 - Live 0x0\nvfio_pci 1 0 - Live 0x0\nccp 1 0 - Live 0x0\n")
        .file("/lib/modules/6.11.0/modules.alias", "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n")
        .file("/sys/module/kvm_amd/parameters/sev", "Y\n")
        .file("/sys/module/kvm_amd/parameters/sev_es", "Y\n")
        .file("/sys/module/kvm_amd/parameters/sev_snp", format!("{snp_param}\n"))
        .file("/sys/fs/cgroup/misc.capacity", "sev 99\nsev_es 410\n")
        .file("/sys/firmware/acpi/tables/IVRS", "")
        .file("/sys/class/iommu/ivhd0/amd-iommu/cap", "0x0\n")
        .file("/dev/kvm", "")
        .file("/dev/sev", "")
        .file("/dev/vhost-vsock", "")
        .file("/dev/iommu", "")
        .file("/dev/kmsg", "6,1,1,-;ccp 0000:22:00.1: SEV-SNP API:1.55 build:21\n");
    let ty = if cmdline.contains("iommu=pt") {
        "identity"
    } else {
        "DMA"
    };
    for (i, a) in ["0000:3b:00.0", "0000:5d:00.0"].into_iter().enumerate() {
        let g = i as u32 + 10;
        t.pci(
            &PciSpec::new(a, 0x10de, 0x2330, 0x030200)
                .driver("vfio-pci")
                .group(g)
                .numa(i as u32),
        );
        t.file(
            &format!("/sys/kernel/iommu_groups/{g}/type"),
            format!("{ty}\n"),
        );
    }
}

fn report(t: &Tree, profile: Profile) -> Report {
    let inv = Inventory::collect(&t.host, &Config::default());
    Report::new(&inv, &Config::default(), profile)
}

fn status(r: &Report, id: &str) -> Status {
    r.find(id)
        .unwrap_or_else(|| panic!("no check {id}"))
        .outcome
        .status
}

#[test]
fn ready_snp_host_passes() {
    let t = Tree::new();
    snp_host(&t, "quiet", "Y");
    let r = report(&t, Profile::Auto);
    assert!(r.ready, "{}", render::text(&r));
    assert_eq!(r.resolved_profile, Some(Profile::Snp));
    assert_eq!(r.summary.fail, 0);
    for id in [
        "snp.kvm",
        "snp.iommu",
        "snp.firmware",
        "iommu.mode",
        "vsock",
        "gpu",
        "gpu.iommu_group",
        "gpu.vfio_bound",
    ] {
        assert_eq!(status(&r, id), Status::Pass, "{id}\n{}", render::text(&r));
    }
    assert!(
        r.find("gpu")
            .unwrap()
            .outcome
            .message
            .contains("2 × GH100 [H100 SXM5 80GB]")
    );
}

#[test]
fn iommu_pt_fails_snp_with_remedy_and_skips_children() {
    let t = Tree::new();
    snp_host(&t, "iommu=pt", "N");
    let r = report(&t, Profile::Snp);
    assert!(!r.ready);
    let n = r.find("snp.iommu").unwrap();
    assert_eq!(n.outcome.status, Status::Fail);
    assert!(
        n.outcome
            .remedy
            .as_deref()
            .unwrap()
            .contains("remove iommu=pt")
    );
    let kvm = r.find("snp.kvm").unwrap();
    assert_eq!(kvm.outcome.status, Status::Fail);
    assert!(
        kvm.outcome.message.contains("passthrough"),
        "{}",
        kvm.outcome.message
    );
    for c in &kvm.children {
        assert_eq!(c.outcome.status, Status::Skip, "{}", c.id);
    }
    assert_eq!(status(&r, "iommu.mode"), Status::Warn);
    // Every FAIL and WARN carries a remedy.
    walk(&r.checks, &mut |n| {
        if matches!(n.outcome.status, Status::Fail | Status::Warn) {
            assert!(n.outcome.remedy.is_some(), "{} has no remedy", n.id);
        }
    });
    assert!(r.findings[0].status == Status::Fail);
}

#[test]
fn tdx_profile_on_amd_says_so() {
    let t = Tree::new();
    snp_host(&t, "quiet", "Y");
    let r = report(&t, Profile::Tdx);
    assert!(!r.ready);
    let n = r.find("tdx.cpu").unwrap();
    assert_eq!(n.outcome.status, Status::Fail);
    assert!(
        n.outcome
            .remedy
            .as_deref()
            .unwrap()
            .contains("--profile snp")
    );
    assert_eq!(status(&r, "tdx.keys"), Status::Skip);
}

#[test]
fn empty_root_is_not_ready_and_does_not_panic() {
    let t = Tree::new();
    let r = report(&t, Profile::Auto);
    assert!(!r.ready);
    assert_eq!(status(&r, "cpu"), Status::Fail);
    assert_eq!(status(&r, "tee"), Status::Fail);
    assert_eq!(status(&r, "gpu"), Status::Skip);
    assert_eq!(status(&r, "inventory"), Status::Warn);
}

#[test]
fn text_fits_80_columns_and_json_round_trips() {
    let t = Tree::new();
    snp_host(&t, "iommu=pt amd_iommu=on", "N");
    let r = report(&t, Profile::Auto);
    let text = render::text(&r);
    for line in text.lines() {
        assert!(line.chars().count() <= render::WIDTH, "too wide: {line:?}");
    }
    assert!(text.contains("NOT READY"));
    assert!(text.contains("fix: remove iommu=pt"), "{text}");
    let json = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["schema"], SCHEMA);
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"][0]["status"], "pass");
}

#[test]
fn a_subtree_can_be_added_from_outside() {
    let t = Tree::new();
    snp_host(&t, "quiet", "Y");
    let inv = Inventory::collect(&t.host, &Config::default());
    let cfg = Config::default();
    let ctx = Ctx {
        inv: &inv,
        config: &cfg,
        profile: Some(Profile::Snp),
        dcap: None,
        bind_all: None,
        cdi_conflicts: None,
    };
    let mut checks = build_checks(&ctx);
    // A subtree built outside the profile's tree (registered ids, functions of its own):
    // its failing root skips its child without running it.
    checks.push(
        Check::new(CheckId::Gpu, |_| CheckOutcome::fail("broken", "fix it"))
            .with([Check::new(CheckId::GpuCc, |_| -> CheckOutcome {
                panic!("a child of a FAIL runs")
            })]),
    );
    let nodes = evaluate(&checks, &ctx);
    let r = Report::from_nodes(Profile::Snp, Some(Profile::Snp), nodes);
    assert!(!r.ready);
    let extra = r.checks.last().unwrap();
    assert_eq!(
        (extra.id.as_str(), extra.outcome.status),
        ("gpu", Status::Fail)
    );
    assert_eq!(extra.children[0].outcome.status, Status::Skip);
    assert_eq!(extra.children[0].outcome.message, "needs gpu");
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].message, "broken");
}

/// An Intel host with TDX up (module initialised, keys, nohibernate), no GPUs.
fn tdx_host(t: &Tree, cmdline: &str, param: &str, log: &str) {
    t.file("/proc/cpuinfo", "processor : 0\nvendor_id : GenuineIntel\nmodel name : Xeon\nflags : vmx tdx_host_platform\n")
        .file("/proc/cmdline", format!("{cmdline}\n"))
        .file("/proc/modules", "kvm_intel 1 0 - Live 0x0\nkvm 1 1 kvm_intel, Live 0x0\nvhost_vsock 1 0 - Live 0x0\n")
        .file("/sys/module/kvm_intel/parameters/tdx", format!("{param}\n"))
        .file("/sys/fs/cgroup/misc.capacity", "tdx 63\n")
        .file("/sys/firmware/acpi/tables/DMAR", "")
        .file("/sys/kernel/iommu_groups/0/type", "DMA-FQ\n")
        .file("/dev/kvm", "")
        .file("/dev/vhost-vsock", "")
        .file("/dev/kmsg", log);
}

#[test]
fn tdx_host_ready_and_not() {
    let t = Tree::new();
    tdx_host(
        &t,
        "intel_iommu=on nohibernate",
        "Y",
        "6,1,1,-;virt/tdx: module initialized\n",
    );
    let r = report(&t, Profile::Auto);
    assert_eq!(r.resolved_profile, Some(Profile::Tdx));
    assert!(r.ready, "{}", render::text(&r));
    assert_eq!(
        r.find("tdx.keys").unwrap().outcome.message,
        "63 KeyIDs (at most 63 trust domains)"
    );
    // kvm_intel.tdx=1 is not on the command line, but TDX is already on in KVM.
    assert_eq!(status(&r, "kernel.args"), Status::Pass);

    let t = Tree::new();
    tdx_host(
        &t,
        "intel_iommu=on",
        "N",
        "6,1,1,-;virt/tdx: initialization failed: Hibernation support is enabled\n",
    );
    let r = report(&t, Profile::Tdx);
    assert!(!r.ready);
    assert_eq!(status(&r, "tdx.nohibernate"), Status::Fail);
    assert_eq!(status(&r, "tdx.module"), Status::Fail);
    let kvm = r.find("tdx.kvm").unwrap();
    assert_eq!(kvm.outcome.status, Status::Fail);
    assert!(
        kvm.outcome
            .remedy
            .as_deref()
            .unwrap()
            .contains("nohibernate")
    );
    assert_eq!(status(&r, "tdx.keys"), Status::Skip);
    let args = r.find("kernel.args").unwrap();
    assert_eq!(args.outcome.status, Status::Fail);
    assert!(
        args.outcome.message.contains("missing kvm_intel.tdx=1")
            && args.outcome.message.contains("missing nohibernate")
            && !args.outcome.message.contains("intel_iommu"),
        "{}",
        args.outcome.message
    );
    let text = render::text(&r);
    // One line for the one remedy, naming all three checks it fixes.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("- add nohibernate to the kernel command line and reboot (tdx.nohibernate, tdx.module, tdx.kvm)"),
        "{text}"
    );
}

#[test]
fn grace_has_no_cpu_tee_and_is_not_ready() {
    // NVIDIA Grace: Neoverse V2 cores (implementer 0x41, part 0xd4f), Armv9.0, no RME.
    let t = Tree::new();
    t.file(
        "/proc/cpuinfo",
        "processor : 0\nBogoMIPS : 2000.00\nFeatures : fp asimd evtstrm sve2\nCPU implementer : 0x41\nCPU architecture: 8\nCPU variant : 0x0\nCPU part : 0xd4f\nCPU revision : 0\n",
    )
    .file("/proc/cmdline", "quiet\n")
    .file("/proc/sys/kernel/osrelease", "6.8.0\n");
    let r = report(&t, Profile::Auto);
    assert!(!r.ready, "{}", render::text(&r));
    let tee = r.find("tee").expect("tee check");
    assert_eq!(tee.outcome.status, Status::Fail, "{}", render::text(&r));
    assert!(
        tee.outcome.message.contains("no CPU TEE on this platform")
            && tee.outcome.message.contains("Neoverse V2"),
        "{}",
        tee.outcome.message
    );
    // An Arm part not on the list stays "unknown" (a warning), never claimed either way.
    let t = Tree::new();
    t.file(
        "/proc/cpuinfo",
        "processor : 0\nFeatures : fp asimd\nCPU implementer : 0x41\nCPU part : 0xd84\n",
    );
    let r = report(&t, Profile::Auto);
    assert_eq!(status(&r, "tee"), Status::Warn);
}

#[test]
fn every_tree_follows_the_registry_and_together_they_run_every_check() {
    let t = Tree::new();
    let inv = Inventory::collect(&t.host, &Config::default());
    let cfg = Config::default();
    fn walk_checks(c: &Check, parent: Option<CheckId>, out: &mut Vec<(CheckId, Option<CheckId>)>) {
        out.push((c.id, parent));
        for ch in &c.children {
            walk_checks(ch, Some(c.id), out);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for profile in [Some(Profile::Tdx), Some(Profile::Snp), None] {
        let ctx = Ctx {
            inv: &inv,
            config: &cfg,
            profile,
            dcap: None,
            bind_all: None,
            cdi_conflicts: None,
        };
        let mut pairs = Vec::new();
        for c in &build_checks(&ctx) {
            walk_checks(c, None, &mut pairs);
        }
        let mut ids: Vec<CheckId> = pairs.iter().map(|(i, _)| *i).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            pairs.len(),
            "{profile:?}: an id twice in one tree"
        );
        for (id, parent) in pairs {
            assert_eq!(
                parent,
                id.meta().needs,
                "{profile:?}: parent of {}",
                id.name()
            );
            seen.insert(id);
        }
    }
    let all: std::collections::BTreeSet<CheckId> = CHECK_LIST.iter().map(|m| m.id).collect();
    assert_eq!(seen, all, "registered checks no tree runs");
}
