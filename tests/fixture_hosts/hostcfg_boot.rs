//! Boot-configuration mechanisms on temp host trees with real file formats: detection,
//! the change for a profile, applying it (idempotent) and undoing it. Host tools
//! (grubby, rpm-ostree, update-grub) are recorded, not run.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::path::Path;

use cchost::config::{KernelConfig, MechanismChoice};
use cchost::host::HostRoot;
use cchost::host::exec::ToolOutput;
use cchost::hostcfg::boot::{self, BootStep, HostTools, Mechanism};
use cchost::hostcfg::profile::{ArgProfile, Platform};
use cchost::inventory::facts::CpuVendor;

#[derive(Default)]
struct Tools {
    present: Vec<&'static str>,
    kargs: String,
    calls: RefCell<Vec<String>>,
}

impl HostTools for Tools {
    fn has(&self, program: &str) -> bool {
        self.present.contains(&program)
    }
    fn run(&self, program: &str, args: &[String]) -> Result<ToolOutput, cchost::host::HostError> {
        let line = format!("{program} {}", args.join(" "));
        self.calls.borrow_mut().push(line.trim().to_string());
        Ok(ToolOutput {
            success: true,
            code: Some(0),
            stdout: if program == "rpm-ostree" {
                self.kargs.clone()
            } else {
                String::new()
            },
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

fn read(dir: &tempfile::TempDir, p: &str) -> String {
    std::fs::read_to_string(dir.path().join(p.trim_start_matches('/'))).unwrap()
}

fn tdx_edit() -> cchost::hostcfg::args::ArgEdit {
    ArgProfile::new(
        Platform::Tdx,
        false,
        Some(CpuVendor::Intel),
        &KernelConfig::default(),
    )
    .edit(None)
}

fn snp_edit() -> cchost::hostcfg::args::ArgEdit {
    ArgProfile::new(
        Platform::Snp,
        true,
        Some(CpuVendor::Amd),
        &KernelConfig::default(),
    )
    .edit(None)
}

const DEBIAN_GRUB: &str = "# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"
GRUB_CMDLINE_LINUX=\"\"
";

const FEDORA_ENTRY: &str = "title Fedora Linux (6.8.5-301.fc40.x86_64) 40 (Server Edition)
version 6.8.5-301.fc40.x86_64
linux /vmlinuz-6.8.5-301.fc40.x86_64
initrd /initramfs-6.8.5-301.fc40.x86_64.img
options root=UUID=5f2b6b2a-4f3c-4c38-9d0e-2a3f7e1c9b10 ro rootflags=subvol=root iommu=pt amd_iommu=on rhgb quiet
grub_users $grub_users
grub_arg --unrestricted
grub_class fedora
";

#[test]
fn debian_grub_defaults_then_update_grub() {
    let (dir, host) = tree(&[
        ("/etc/default/grub", DEBIAN_GRUB),
        ("/boot/grub/grub.cfg", ""),
    ]);
    let tools = Tools {
        present: vec!["update-grub"],
        ..Default::default()
    };
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    assert_eq!(cfg.mechanism, Mechanism::Grub);
    let edit = tdx_edit();
    assert!(!cfg.satisfied(&edit));
    let steps = cfg.change(&edit).unwrap();
    for s in &steps {
        boot::run_step(&host, &tools, s).unwrap();
    }
    assert_eq!(
        read(&dir, "/etc/default/grub"),
        DEBIAN_GRUB.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"kvm_intel.tdx=1 nohibernate intel_iommu=on\""
        )
    );
    assert_eq!(*tools.calls.borrow(), ["update-grub"]);
    // Second run: nothing to do.
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    assert!(cfg.satisfied(&edit));
    assert!(cfg.change(&edit).unwrap().is_empty());
    // Undo restores the file byte for byte and regenerates again.
    for s in steps.iter().rev() {
        boot::undo_step(&host, &tools, s).unwrap();
    }
    assert_eq!(read(&dir, "/etc/default/grub"), DEBIAN_GRUB);
    assert_eq!(tools.calls.borrow().len(), 2);
}

/// Issue 13 item 6: undo takes back only cchost's change; an operator's later edit of
/// the same line makes it refuse (naming the file), an edit elsewhere is kept.
#[test]
fn undo_never_overwrites_a_later_operator_edit_of_the_boot_config() {
    let (dir, host) = tree(&[
        ("/etc/default/grub", DEBIAN_GRUB),
        ("/boot/grub/grub.cfg", ""),
    ]);
    let tools = Tools {
        present: vec!["update-grub"],
        ..Default::default()
    };
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    let steps = cfg.change(&tdx_edit()).unwrap();
    for s in &steps {
        boot::run_step(&host, &tools, s).unwrap();
    }
    let ours = read(&dir, "/etc/default/grub");
    // The operator adds an argument to the very line cchost changed.
    let theirs = ours.replace("intel_iommu=on", "intel_iommu=on mitigations=auto");
    std::fs::write(dir.path().join("etc/default/grub"), &theirs).unwrap();
    let e = boot::undo_step(&host, &tools, &steps[0])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/etc/default/grub") && e.contains("edited"),
        "{e}"
    );
    assert_eq!(read(&dir, "/etc/default/grub"), theirs);
    // An edit on another line is kept; cchost's line gets its old text back.
    let elsewhere = ours.replace("GRUB_TIMEOUT=5", "GRUB_TIMEOUT=10");
    assert_ne!(elsewhere, ours, "the fixture has GRUB_TIMEOUT=5");
    std::fs::write(dir.path().join("etc/default/grub"), &elsewhere).unwrap();
    boot::undo_step(&host, &tools, &steps[0]).unwrap();
    assert_eq!(
        read(&dir, "/etc/default/grub"),
        DEBIAN_GRUB.replace("GRUB_TIMEOUT=5", "GRUB_TIMEOUT=10")
    );
}

#[test]
fn grub2_mkconfig_when_no_update_grub() {
    let (_dir, host) = tree(&[
        ("/etc/default/grub", DEBIAN_GRUB),
        ("/boot/grub2/grub.cfg", ""),
    ]);
    let tools = Tools {
        present: vec!["grub2-mkconfig"],
        ..Default::default()
    };
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    let steps = cfg.change(&tdx_edit()).unwrap();
    let BootStep::EditFiles { then, .. } = &steps[0] else {
        panic!("{steps:?}")
    };
    assert_eq!(
        then.as_ref().unwrap().to_string(),
        "grub2-mkconfig -o /boot/grub2/grub.cfg"
    );
    // No regeneration tool: refused, naming what is missing.
    let none = Tools::default();
    let err = boot::read(&host, &none, MechanismChoice::Auto)
        .unwrap_err()
        .to_string();
    assert!(err.contains("update-grub"), "{err}");
}

#[test]
fn fedora_grubby_call_and_its_inverse() {
    let (_dir, host) = tree(&[
        (
            "/boot/loader/entries/0123abcd-6.8.5-301.fc40.x86_64.conf",
            FEDORA_ENTRY,
        ),
        ("/usr/sbin/grubby", ""),
    ]);
    let tools = Tools {
        present: vec!["grubby"],
        ..Default::default()
    };
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    assert_eq!(cfg.mechanism, Mechanism::Grubby);
    let steps = cfg.change(&snp_edit()).unwrap();
    let BootStep::Tool { call, undo } = &steps[0] else {
        panic!("{steps:?}")
    };
    assert_eq!(
        call.args,
        [
            "--update-kernel=ALL",
            "--args=kvm_amd.sev=1 kvm_amd.sev_es=1 kvm_amd.sev_snp=1",
            "--remove-args=iommu=pt amd_iommu=on"
        ]
    );
    assert_eq!(
        undo.args,
        [
            "--update-kernel=ALL",
            "--args=iommu=pt amd_iommu=on",
            "--remove-args=kvm_amd.sev=1 kvm_amd.sev_es=1 kvm_amd.sev_snp=1"
        ]
    );
}

#[test]
fn bls_entries_edited_directly_without_grubby() {
    let entry = "/boot/loader/entries/0123abcd-6.8.5-301.fc40.x86_64.conf";
    let rescue = "/boot/loader/entries/0123abcd-0-rescue.conf";
    let rescue_text = FEDORA_ENTRY.replace("6.8.5-301.fc40.x86_64", "0-rescue");
    let (dir, host) = tree(&[(entry, FEDORA_ENTRY), (rescue, &rescue_text)]);
    let tools = Tools::default();
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    assert_eq!(cfg.mechanism, Mechanism::Bls);
    assert_eq!(cfg.sets.len(), 2);
    for s in cfg.change(&snp_edit()).unwrap() {
        boot::run_step(&host, &tools, &s).unwrap();
    }
    let after = read(&dir, entry);
    assert_eq!(
        after,
        FEDORA_ENTRY.replace(
            "iommu=pt amd_iommu=on rhgb quiet",
            "rhgb quiet kvm_amd.sev=1 kvm_amd.sev_es=1 kvm_amd.sev_snp=1"
        )
    );
    assert!(read(&dir, rescue).contains("kvm_amd.sev_snp=1"));
    assert!(tools.calls.borrow().is_empty());
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    assert!(cfg.change(&snp_edit()).unwrap().is_empty());
}

#[test]
fn kernel_install_cmdline_file() {
    let (dir, host) = tree(&[(
        "/etc/kernel/cmdline",
        "root=UUID=5f2b6b2a rw quiet intel_iommu=off\n",
    )]);
    let tools = Tools::default();
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    assert_eq!(cfg.mechanism, Mechanism::KernelCmdline);
    for s in cfg.change(&tdx_edit()).unwrap() {
        boot::run_step(&host, &tools, &s).unwrap();
    }
    assert_eq!(
        read(&dir, "/etc/kernel/cmdline"),
        "root=UUID=5f2b6b2a rw quiet kvm_intel.tdx=1 nohibernate intel_iommu=on\n"
    );
}

#[test]
fn rpm_ostree_kargs_with_if_missing_and_if_present() {
    let (_dir, host) = tree(&[("/run/ostree-booted", "")]);
    let tools = Tools {
        present: vec!["rpm-ostree"],
        kargs: "rw $ignition_firstboot ostree=/ostree/boot.1/rhcos/abc/0 iommu=pt\n".into(),
        ..Default::default()
    };
    let cfg = boot::read(&host, &tools, MechanismChoice::Auto)
        .unwrap()
        .unwrap();
    assert_eq!(cfg.mechanism, Mechanism::RpmOstree);
    let steps = cfg.change(&snp_edit()).unwrap();
    for s in &steps {
        boot::run_step(&host, &tools, s).unwrap();
    }
    assert_eq!(
        tools.calls.borrow().last().unwrap(),
        "rpm-ostree kargs --delete-if-present=iommu=pt --append-if-missing=kvm_amd.sev=1 --append-if-missing=kvm_amd.sev_es=1 --append-if-missing=kvm_amd.sev_snp=1"
    );
}

#[test]
fn explicit_mechanism_that_is_absent_is_an_error_and_nothing_found_is_none() {
    let (_dir, host) = tree(&[("/etc/hostname", "x\n")]);
    let tools = Tools::default();
    assert!(
        boot::read(&host, &tools, MechanismChoice::Auto)
            .unwrap()
            .is_none()
    );
    assert!(
        boot::read(&host, &tools, MechanismChoice::None)
            .unwrap()
            .is_none()
    );
    let err = boot::read(&host, &tools, MechanismChoice::Grubby)
        .unwrap_err()
        .to_string();
    assert!(err.contains("grubby"), "{err}");
    assert!(Path::new(boot::DEFAULT_GRUB).is_absolute());
}
