//! The guest kernel's IOMMU groups, as the inventory tests rely on them (sysfs read
//! in the guest; the `cchost inventory` assertions join these boots when the command
//! lands).

#[path = "vm/harness.rs"]
mod harness;

use harness::Vm;

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
        "{kernel_args}: kernel boot {:.1}s, boot + steps {:.1}s",
        run.boot_secs,
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
