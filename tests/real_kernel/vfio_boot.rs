//! `[vfio] boot_bind` on a real kernel: vfio-pci takes a device when it loads because
//! of its `ids` parameter, whether the ids come from the kernel command line
//! (`vfio-pci.ids=`, passed on by kmod's modprobe) or from cchost's modprobe.d file; and
//! the file's `softdep <driver> pre: vfio-pci` loads vfio-pci first when that driver is
//! loaded, so the device is vfio-pci's before the driver can claim it. `pci_stub` with
//! `pci-stub.ids=` on the command line stands in for nvidia (a module that claims the
//! device by its id when it loads); the emulated `edu` and `pci-testdev` stand in for GPUs.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::harness::{FIND_STAND_INS, Vm};
use cchost::hostcfg::vfio_boot;

/// Prints `DRV <name> <driver>` for both stand-ins (driver `-` when none).
const DRIVERS: &str = r#"
drv() { d=$(readlink /sys/bus/pci/devices/$1/driver); if [ -n "$d" ]; then echo "DRV $2 ${d##*/}"; else echo "DRV $2 -"; fi; }
drv $EDU edu; drv $TD td
"#;

fn driver_of(out: &str, who: &str) -> String {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("DRV {who} ")))
        .next_back()
        .unwrap_or_else(|| panic!("no DRV {who} line in {out}"))
        .to_string()
}

/// Steps call kmod's `/sbin/modprobe` by path: busybox's shell would run its own
/// `modprobe` applet for the bare name, and that one does not read /proc/cmdline.
fn step(script: &str) -> String {
    format!("{FIND_STAND_INS}{script}{DRIVERS}")
}

/// `vfio-pci.ids=1234:11e8` on the command line: loading vfio_pci takes edu (and only
/// edu); before the load nothing has it.
#[test]
fn vfio_pci_ids_on_the_command_line_take_the_device_when_vfio_pci_loads() {
    let run = Vm::new()
        .kernel_args("intel_iommu=on vfio-pci.ids=1234:11e8")
        .cmd(&step(""))
        .cmd(&step("/sbin/modprobe vfio_pci || echo MODPROBE_FAILED"))
        .run();
    let before = run.step(0).assert_success().stdout();
    assert_eq!(driver_of(&before, "edu"), "-", "{before}");
    let after = run.step(1).assert_success().stdout();
    assert!(!after.contains("MODPROBE_FAILED"), "{after}");
    assert_eq!(driver_of(&after, "edu"), "vfio-pci", "{after}");
    assert_eq!(driver_of(&after, "td"), "-", "not in the ids: {after}");
}

/// cchost's modprobe.d file (its real content, with pci_stub in nvidia's place):
/// without it, loading pci_stub gives it pci-testdev; with it, vfio-pci is loaded
/// first and takes the device, and pci_stub finds it taken.
#[test]
fn the_modprobe_file_loads_vfio_pci_first_and_it_takes_the_device() {
    let content = vfio_boot::modprobe_content(&["1b36:0005".to_string()], &["pci_stub"]);
    let run = Vm::new()
        .kernel_args("intel_iommu=on pci-stub.ids=1b36:0005")
        .file("/etc/cchost-vfio.conf.later", content)
        // Control: no file, pci_stub claims the device.
        .cmd(&step("/sbin/modprobe pci_stub || echo MODPROBE_FAILED"))
        .cmd(&step(
            "/sbin/modprobe -r pci_stub; mkdir -p /etc/modprobe.d; cp /etc/cchost-vfio.conf.later /etc/modprobe.d/cchost-vfio.conf; /sbin/modprobe pci_stub || echo MODPROBE_FAILED; grep -q '^vfio_pci ' /proc/modules && echo VFIO_LOADED",
        ))
        .run();
    let control = run.step(0).assert_success().stdout();
    assert!(!control.contains("MODPROBE_FAILED"), "{control}");
    assert_eq!(driver_of(&control, "td"), "pci-stub", "{control}");
    let with = run.step(1).assert_success().stdout();
    assert!(
        !with.contains("MODPROBE_FAILED") && with.contains("VFIO_LOADED"),
        "{with}"
    );
    assert_eq!(driver_of(&with, "td"), "vfio-pci", "{with}");
    assert_eq!(driver_of(&with, "edu"), "-", "not in the ids: {with}");
}
