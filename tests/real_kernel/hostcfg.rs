//! Node configuration on a real kernel: `cchost apply` loads vhost_vsock with the
//! guest's own modprobe (kmod) and persists it, `/dev/vhost-vsock` appears, a second
//! apply changes nothing, `cchost undo` puts everything back; and kernel arguments
//! planned into /etc/default/grub, booted, turn `check`'s IOMMU command-line checks green.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::harness::Vm;
use serde_json::Value;

fn actions(plan: &Value) -> Vec<String> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn vhost_vsock_loaded_persisted_and_undone_on_the_real_kernel() {
    let run = Vm::new()
        .cmd("cchost plan --json")
        .cmd("cchost apply")
        .cmd("grep -w '^vhost_vsock' /proc/modules | cut -d' ' -f1; test -c /dev/vhost-vsock && echo chardev; cat /etc/modules-load.d/cchost.conf")
        .cmd("cchost apply --json")
        .cmd("cchost plan --json")
        .cmd("cchost undo")
        .cmd("grep -c -w '^vhost_vsock' /proc/modules; test -e /dev/vhost-vsock || echo no-node; test -e /etc/modules-load.d/cchost.conf || echo no-file")
        .run();
    let before = run.step(0).assert_code(1).json();
    assert_eq!(
        actions(&before),
        ["load-module", "persist-modules"],
        "{before:#}"
    );
    assert_eq!(before["actions"][0]["module"], "vhost_vsock");
    let applied = run.step(1).assert_success().stdout();
    assert!(
        applied.contains("done: load module vhost_vsock"),
        "{applied}"
    );
    assert_eq!(
        run.step(2).assert_success().lines(),
        ["vhost_vsock", "chardev", "vhost_vsock"]
    );
    let again = run.step(3).assert_success().json();
    assert_eq!(again["done"], serde_json::json!([]), "{again:#}");
    let after = run.step(4).assert_success().json();
    assert!(actions(&after).is_empty(), "{after:#}");
    assert_eq!(after["labels"]["cchost.io/vsock"], "true");
    run.step(5).assert_success();
    assert_eq!(run.step(6).lines(), ["0", "no-node", "no-file"]);
}
const GRUB: &str = "# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"
GRUB_CMDLINE_LINUX=\"intel_iommu=off amd_iommu=on\"
";

/// Stands in for update-grub (no grub in the guest): it evaluates the defaults as
/// grub-mkconfig does, by sourcing them, and writes the `linux` line it would generate.
const UPDATE_GRUB: &str = "#!/bin/sh
set -e
. /etc/default/grub
mkdir -p /boot/grub
echo \"linux /vmlinuz $GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT\" > /boot/grub/grub.cfg
";

const TDX_PROFILE: &str = "[kernel]\nprofile = \"tdx\"\nvhost_vsock = false\n";

fn find<'a>(nodes: &'a Value, id: &str) -> Option<&'a Value> {
    for n in nodes.as_array()? {
        if n["id"] == id {
            return Some(n);
        }
        if let Some(c) = n.get("children").and_then(|c| find(c, id)) {
            return Some(c);
        }
    }
    None
}

fn status(check: &Value, id: &str) -> String {
    let nodes = check.get("checks").unwrap_or(check);
    let n = find(nodes, id).unwrap_or_else(|| panic!("no check {id} in {check:#}"));
    n["status"].as_str().unwrap_or_default().to_lowercase()
}

#[test]
fn planned_kernel_arguments_boot_and_turn_the_cmdline_checks_green() {
    // Boot 1: booted with what the grub defaults say, both wrong for the profile.
    let first = Vm::new()
        .kernel_args("intel_iommu=off amd_iommu=on quiet")
        .config(TDX_PROFILE)
        .file("/etc/default/grub", GRUB)
        .file_mode("/usr/sbin/update-grub", UPDATE_GRUB, 0o755)
        .cmd("cchost check --json")
        .cmd("cchost plan --json")
        .cmd("cchost apply")
        .cmd("cchost plan --json")
        .fetch("/etc/default/grub")
        .fetch("/boot/grub/grub.cfg")
        .run();
    let check = first.step(0).json();
    assert_eq!(status(&check, "iommu.enabled"), "fail", "{check:#}");
    assert_eq!(status(&check, "iommu.cmdline"), "warn", "{check:#}");
    assert_eq!(status(&check, "kernel.args"), "fail", "{check:#}");
    let plan = first.step(1).assert_code(1).json();
    assert_eq!(actions(&plan), ["kernel-args"], "{plan:#}");
    assert_eq!(plan["actions"][0]["mechanism"], "grub");
    assert_eq!(plan["reboot_required"], true);
    let out = first.step(2).assert_success().stdout();
    assert!(out.contains("Reboot required"), "{out}");
    // The boot configuration is right now; the running kernel still is not.
    let pending = first.step(3).assert_success().json();
    assert!(actions(&pending).is_empty(), "{pending:#}");
    assert_eq!(pending["reboot_required"], true);
    let grub = std::fs::read_to_string(first.fetched("/etc/default/grub")).unwrap();
    assert_eq!(
        grub,
        GRUB.replace(
            "GRUB_CMDLINE_LINUX=\"intel_iommu=off amd_iommu=on\"",
            "GRUB_CMDLINE_LINUX=\"kvm_intel.tdx=1 nohibernate intel_iommu=on\""
        )
    );
    let cfg = std::fs::read_to_string(first.fetched("/boot/grub/grub.cfg")).unwrap();
    let args = cfg
        .trim()
        .strip_prefix("linux /vmlinuz ")
        .unwrap_or_else(|| panic!("{cfg}"))
        .to_string();
    assert_eq!(args, "kvm_intel.tdx=1 nohibernate intel_iommu=on quiet");

    // Boot 2: the generated command line.
    let second = Vm::new()
        .kernel_args(&args)
        .config(TDX_PROFILE)
        .file("/etc/default/grub", &grub)
        .file_mode("/usr/sbin/update-grub", UPDATE_GRUB, 0o755)
        .cmd("cchost check --json")
        .cmd("cchost plan --json")
        .run();
    assert!(
        second.cmdline.contains("nohibernate intel_iommu=on"),
        "{}",
        second.cmdline
    );
    let check = second.step(0).json();
    // The TDX checks themselves need TDX hardware (TCG has none); the command-line
    // checks do not, and turn green.
    for id in [
        "iommu.enabled",
        "iommu.mode",
        "iommu.cmdline",
        "kernel.args",
    ] {
        assert_eq!(status(&check, id), "pass", "{id}: {check:#}");
    }
    let plan = second.step(1).assert_success().json();
    assert!(actions(&plan).is_empty(), "{plan:#}");
    assert_eq!(plan["reboot_required"], false);
    assert_eq!(plan["running_findings"], serde_json::json!([]), "{plan:#}");
}
