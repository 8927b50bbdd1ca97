//! Real-kernel tests: the harness itself, and the inventory against the guest's own
//! kernel, IOMMU and PCI devices.

#[path = "vm/harness.rs"]
mod harness;

use std::time::Duration;

use harness::Vm;

#[test]
fn guest_runs_steps_and_reports_output_and_exit_codes() {
    let run = Vm::new()
        .file("/etc/ccvm-test.txt", "hello from the host\n")
        .step_timeout(Duration::from_secs(10))
        .cmd("cat /etc/ccvm-test.txt; echo to-stderr >&2")
        .cmd("exit 3")
        .cmd("cchost --version")
        .cmd("modprobe vfio_pci && test -c /dev/vfio/vfio && lsmod")
        .cmd("readlink -f /sbin/modprobe; cat /proc/sys/kernel/modprobe; cat /proc/cmdline")
        .cmd("sleep 60")
        .cmd("echo still running after a killed step")
        .run();
    eprintln!("boot + steps took {:.1}s", run.elapsed.as_secs_f64());
    let s0 = run.step(0).assert_success();
    assert_eq!(s0.stdout(), "hello from the host\n");
    assert_eq!(s0.stderr(), "to-stderr\n");
    run.step(1).assert_code(3);
    let v = run.step(2).assert_success().stdout();
    assert!(v.starts_with("cchost "), "{v}");
    let lsmod = run.step(3).assert_success().stdout();
    for m in ["vfio_pci", "vfio_pci_core", "vfio", "irqbypass"] {
        assert!(
            lsmod
                .lines()
                .any(|l| l.split_whitespace().next() == Some(m)),
            "{m} missing:\n{lsmod}"
        );
    }
    let lines = run.step(4).assert_success().lines();
    assert_eq!(lines[0], "/bin/kmod");
    assert_eq!(lines[1], "/sbin/modprobe");
    assert!(lines[2].contains("intel_iommu=on"), "{}", lines[2]);
    // The step timeout kills a hung step and the run goes on.
    run.step(5).assert_code(137);
    run.step(6).assert_success();
}

#[test]
fn a_guest_that_does_not_finish_is_an_error_not_a_hang() {
    let err = Vm::new()
        .timeout(Duration::from_secs(2))
        .cmd("true")
        .try_run()
        .expect_err("a 2 s limit cannot fit a TCG boot");
    assert!(
        err.message.contains("did not finish within"),
        "{}",
        err.message
    );
    assert!(err.message.contains("guest console"), "{}", err.message);
}

/// One line per PCI function as the guest's sysfs shows it:
/// `bdf vendor device class group group-type`.
const SYSFS_PCI: &str = r#"for d in /sys/bus/pci/devices/*; do
  g=$(readlink $d/iommu_group); g=${g##*/}
  echo "${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class) ${g:-none} $(cat $d/iommu_group/type 2>/dev/null || echo none)"
done"#;

#[derive(Debug, Clone, PartialEq)]
struct SysfsPci {
    bdf: String,
    vendor: String,
    device: String,
    class: String,
    group: String,
    group_type: String,
}

fn parse_sysfs_pci(lines: &[String]) -> Vec<SysfsPci> {
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 6, "bad sysfs line {l:?}");
            SysfsPci {
                bdf: f[0].into(),
                vendor: f[1].into(),
                device: f[2].into(),
                class: f[3].into(),
                group: f[4].into(),
                group_type: f[5].into(),
            }
        })
        .collect()
}

fn find<'a>(devs: &'a [SysfsPci], vendor: &str, device: &str) -> &'a SysfsPci {
    devs.iter()
        .find(|d| d.vendor == vendor && d.device == device)
        .unwrap_or_else(|| panic!("{vendor}:{device} not in guest sysfs: {devs:#?}"))
}

fn check_iommu_mode(kernel_args: &str, expect_type: &[&str]) {
    let run = Vm::new().kernel_args(kernel_args).cmd(SYSFS_PCI).run();
    eprintln!(
        "{kernel_args}: boot + steps took {:.1}s",
        run.elapsed.as_secs_f64()
    );
    let devs = parse_sysfs_pci(&run.step(0).assert_success().lines());
    let edu = find(&devs, "0x1234", "0x11e8");
    let testdev = find(&devs, "0x1b36", "0x0005");
    for d in [edu, testdev] {
        assert_eq!(d.class, "0x00ff00", "{d:?}");
        assert_ne!(d.group, "none", "{d:?} has no IOMMU group");
        assert!(expect_type.contains(&d.group_type.as_str()), "{d:?}");
        let members = devs.iter().filter(|o| o.group == d.group).count();
        assert_eq!(members, 1, "{d:?} shares its group: {devs:#?}");
    }
    assert_ne!(edu.group, testdev.group);
}

#[test]
fn iommu_groups_follow_the_guest_cmdline_dma() {
    check_iommu_mode("intel_iommu=on", &["DMA", "DMA-FQ"]);
}

#[test]
fn iommu_groups_follow_the_guest_cmdline_passthrough() {
    check_iommu_mode("intel_iommu=on iommu=pt", &["identity"]);
}
