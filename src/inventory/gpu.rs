//! GPUs and NVSwitches: which PCI functions they are (by `[match]` config), what the
//! device ID says about the chip, and everything a binder must know before touching
//! them (IOMMU group and its other members, driver, override, boot VGA, the vfio
//! driver the modalias selects, sibling functions of the slot).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Architecture, MatchConfig};
use crate::host::pci::{PciAddress, PciDevice};
use crate::host::{HostError, HostRoot};

use super::Problem;
use super::modalias::{VfioAliases, VfioChoice};

/// What a matched device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuKind {
    Gpu,
    NvSwitch,
}

/// Another PCI function that a GPU shares something with (its IOMMU group or slot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedFunction {
    pub address: PciAddress,
    /// `None` when the function's attributes could not be read (see `problems`).
    pub vendor: Option<u16>,
    pub device: Option<u16>,
    /// 24-bit class code.
    pub class: Option<u32>,
    pub driver: Option<String>,
    /// This function is itself a matched GPU or NVSwitch.
    pub matched: bool,
    /// A PCI bridge (class 0x0604): groups often hold the GPU's own upstream port.
    pub bridge: bool,
}

/// The IOMMU group of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuGroupInfo {
    pub number: u32,
    /// The group's default domain type (`DMA`, `DMA-FQ`, `identity`, `blocked`,
    /// `unmanaged`); `None` before Linux 5.11 or when unreadable.
    #[serde(default)]
    pub domain_type: Option<String>,
    /// The group's other members (the device itself is left out).
    pub others: Vec<RelatedFunction>,
}

/// One GPU or NVSwitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    pub address: PciAddress,
    pub kind: GpuKind,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    pub class: u32,
    pub revision: Option<u8>,
    /// From the pci.ids database compiled into cchost (`None` for IDs it lacks).
    pub model: Option<String>,
    /// Chip from the `[match]` chip ranges (`GH100`, `GB100`, `LS10`).
    pub chip: Option<String>,
    pub architecture: Option<Architecture>,
    /// GPU Confidential Computing mode can be queried and set on this chip.
    pub cc_capable: bool,
    /// Protected PCIe (multi-GPU CC) exists on this chip.
    pub ppcie_capable: bool,
    pub numa_node: Option<u32>,
    /// `None` when the device has no IOMMU group (IOMMU off).
    pub iommu_group: Option<IommuGroupInfo>,
    /// Currently bound driver.
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    pub modalias: Option<String>,
    /// The vfio driver this device's modalias selects.
    pub vfio: VfioChoice,
    /// This device drives the boot console (`boot_vga` = 1).
    pub boot_vga: bool,
    /// Other functions of the same slot (e.g. the HDMI audio function of a VGA board).
    pub slot_functions: Vec<RelatedFunction>,
    /// The iommufd VFIO cdev (`vfio3` for /dev/vfio/devices/vfio3), when bound to vfio.
    pub vfio_dev: Option<String>,
    /// Canonical sysfs path.
    pub sysfs_path: PathBuf,
}

impl GpuDevice {
    pub fn is_on_vfio(&self) -> bool {
        self.driver
            .as_deref()
            .is_some_and(|d| d == self.vfio.driver || d.contains("vfio"))
    }

    /// Members of the IOMMU group that are neither matched devices, nor functions of
    /// the same slot, nor PCI bridges: what a binder must refuse to pass through.
    pub fn foreign_group_members(&self) -> Vec<&RelatedFunction> {
        let Some(g) = &self.iommu_group else {
            return Vec::new();
        };
        g.others
            .iter()
            .filter(|m| {
                !m.matched
                    && !m.bridge
                    && !self.slot_functions.iter().any(|s| s.address == m.address)
            })
            .collect()
    }
}

/// All GPUs and NVSwitches found, and what could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInventory {
    pub devices: Vec<GpuDevice>,
    /// Devices or files that could not be read; the rest of the list is still valid.
    pub problems: Vec<Problem>,
}

impl GpuInventory {
    pub fn gpus(&self) -> impl Iterator<Item = &GpuDevice> {
        self.devices.iter().filter(|d| d.kind == GpuKind::Gpu)
    }

    pub fn nvswitches(&self) -> impl Iterator<Item = &GpuDevice> {
        self.devices.iter().filter(|d| d.kind == GpuKind::NvSwitch)
    }
}

const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// Reads the `vfio_pci:` aliases of the running kernel. Errors are returned as a
/// problem and an empty alias set (every device then falls back to vfio-pci).
pub(crate) fn read_vfio_aliases(host: &HostRoot) -> (VfioAliases, Option<Problem>, Option<String>) {
    let release = match host.read_attr(OSRELEASE) {
        Ok(r) if !r.is_empty() && !r.contains('/') => r,
        Ok(r) => {
            return (
                VfioAliases::default(),
                Some(Problem::new(OSRELEASE, format!("unusable release {r:?}"))),
                None,
            );
        }
        Err(e) => return (VfioAliases::default(), Some(Problem::from(e)), None),
    };
    let path = format!("/lib/modules/{release}/modules.alias");
    match host.read_string(&path) {
        Ok(text) => (VfioAliases::parse(&text), None, Some(path)),
        // Kernels without loadable modules (and minimal images) have none: not a fault,
        // but the choice says why it fell back.
        Err(e) if e.is_not_found() => (
            VfioAliases::unavailable(format!("{path} does not exist")),
            None,
            Some(path),
        ),
        Err(e) => (VfioAliases::default(), Some(Problem::from(e)), Some(path)),
    }
}

/// Identity of a PCI function, as far as matching needs it.
#[derive(Debug, Clone, Copy)]
struct Ident {
    vendor: u16,
    device: u16,
    class: u32,
}

/// Finds every GPU and NVSwitch that `m` matches. One unreadable device is recorded
/// in `problems` and skipped; it never hides the others.
pub fn discover_gpus(host: &HostRoot, m: &MatchConfig) -> GpuInventory {
    let mut inv = GpuInventory::default();
    // modules.alias is read once, and only when a device needs it.
    let mut aliases: Option<VfioAliases> = None;
    // Screen every function by vendor/device/class only (cheap), then read matched
    // ones fully.
    let idents: BTreeMap<PciAddress, Result<Ident, HostError>> = match host.pci_scan() {
        Ok(v) => v
            .into_iter()
            .map(|(a, r)| {
                (
                    a,
                    r.map(|i| Ident {
                        vendor: i.vendor,
                        device: i.device,
                        class: i.class,
                    }),
                )
            })
            .collect(),
        Err(e) => {
            inv.problems.push(e.into());
            return inv;
        }
    };
    let kind_of = |id: &Ident| -> Option<GpuKind> {
        if m.is_gpu(id.vendor, id.device, id.class) {
            Some(GpuKind::Gpu)
        } else if m.is_nvswitch(id.vendor, id.device, id.class) {
            Some(GpuKind::NvSwitch)
        } else {
            None
        }
    };
    for (addr, ident) in &idents {
        let kind = match ident {
            Ok(id) => match kind_of(id) {
                Some(k) => k,
                None => continue,
            },
            Err(e) => {
                inv.problems.push(Problem::from_host(e));
                continue;
            }
        };
        let dev = match host.pci_device(addr) {
            Ok(d) => d,
            Err(e) => {
                inv.problems.push(e.into());
                continue;
            }
        };
        let related = |a: &PciAddress, problems: &mut Vec<Problem>| -> RelatedFunction {
            related_function(host, a, idents.get(a), &kind_of, problems)
        };
        let iommu_group = match dev.iommu_group {
            None => None,
            Some(n) => match host.iommu_group_devices(n) {
                Ok(members) => Some(IommuGroupInfo {
                    number: n,
                    domain_type: group_type(host, n, &mut inv.problems),
                    others: members
                        .iter()
                        .filter(|a| *a != addr)
                        .map(|a| related(a, &mut inv.problems))
                        .collect(),
                }),
                Err(e) => {
                    inv.problems.push(e.into());
                    Some(IommuGroupInfo {
                        number: n,
                        domain_type: group_type(host, n, &mut inv.problems),
                        others: Vec::new(),
                    })
                }
            },
        };
        let slot_functions = idents
            .range(slot_range(addr))
            .filter(|(a, _)| *a != addr)
            .map(|(a, _)| related(a, &mut inv.problems))
            .collect();
        let aliases = aliases.get_or_insert_with(|| {
            let (a, problem, _) = read_vfio_aliases(host);
            inv.problems.extend(problem);
            a
        });
        inv.devices.push(build_device(
            dev,
            kind,
            m,
            aliases,
            iommu_group,
            slot_functions,
        ));
    }
    inv
}

fn group_type(host: &HostRoot, n: u32, problems: &mut Vec<Problem>) -> Option<String> {
    match host.read_attr_opt(format!("/sys/kernel/iommu_groups/{n}/type")) {
        Ok(t) => t.filter(|t| !t.is_empty()),
        Err(e) => {
            problems.push(e.into());
            None
        }
    }
}

/// All functions of the slot of `addr`, as a BTreeMap range.
fn slot_range(addr: &PciAddress) -> std::ops::RangeInclusive<PciAddress> {
    let first = PciAddress {
        function: 0,
        ..*addr
    };
    let last = PciAddress {
        function: 7,
        ..*addr
    };
    first..=last
}

fn read_ident(host: &HostRoot, addr: &PciAddress) -> Result<Ident, HostError> {
    host.pci_ident(addr).map(|i| Ident {
        vendor: i.vendor,
        device: i.device,
        class: i.class,
    })
}

fn related_function(
    host: &HostRoot,
    addr: &PciAddress,
    ident: Option<&Result<Ident, HostError>>,
    kind_of: &dyn Fn(&Ident) -> Option<GpuKind>,
    problems: &mut Vec<Problem>,
) -> RelatedFunction {
    let ident = match ident {
        Some(Ok(id)) => Some(*id),
        // Already reported by the screening pass.
        Some(Err(_)) => None,
        // A group member that is not under /sys/bus/pci/devices: read it directly.
        None => match read_ident(host, addr) {
            Ok(id) => Some(id),
            Err(e) => {
                problems.push(e.into());
                None
            }
        },
    };
    let driver = match host.link_name(crate::host::pci::device_dir(addr).join("driver")) {
        Ok(d) => d,
        Err(e) => {
            problems.push(e.into());
            None
        }
    };
    RelatedFunction {
        address: *addr,
        vendor: ident.map(|i| i.vendor),
        device: ident.map(|i| i.device),
        class: ident.map(|i| i.class),
        driver,
        matched: ident.is_some_and(|i| kind_of(&i).is_some()),
        bridge: ident.is_some_and(|i| i.class >> 8 == 0x0604),
    }
}

fn build_device(
    dev: PciDevice,
    kind: GpuKind,
    m: &MatchConfig,
    aliases: &VfioAliases,
    iommu_group: Option<IommuGroupInfo>,
    slot_functions: Vec<RelatedFunction>,
) -> GpuDevice {
    let chip = m.chip_for(dev.vendor, dev.device);
    let model = super::pci_names::device_name(dev.vendor, dev.device).map(str::to_string);
    let vfio = match &dev.modalias {
        Some(alias) => aliases.choose(alias),
        None => VfioChoice::fallback("the device has no modalias attribute"),
    };
    GpuDevice {
        address: dev.address,
        kind,
        vendor: dev.vendor,
        device: dev.device,
        subsystem_vendor: dev.subsystem_vendor,
        subsystem_device: dev.subsystem_device,
        class: dev.class,
        revision: dev.revision,
        model,
        chip: chip.map(|c| c.chip.clone()),
        architecture: chip.map(|c| c.architecture),
        cc_capable: chip.is_some_and(|c| c.cc),
        ppcie_capable: chip.is_some_and(|c| c.ppcie),
        numa_node: dev.numa_node,
        iommu_group,
        driver: dev.driver,
        driver_override: dev.driver_override,
        modalias: dev.modalias,
        vfio,
        boot_vga: dev.boot_vga == Some(true),
        slot_functions,
        vfio_dev: dev.vfio_dev,
        sysfs_path: dev.sysfs_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{PciSpec, Tree};
    use crate::inventory::modalias::VfioChoiceSource;

    const NV: u16 = 0x10de;

    fn aliases(t: &Tree) {
        t.file("/proc/sys/kernel/osrelease", "6.8.0-test\n").file(
            "/lib/modules/6.8.0-test/modules.alias",
            "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n\
             alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci\n",
        );
    }

    fn find<'a>(inv: &'a GpuInventory, addr: &str) -> &'a GpuDevice {
        inv.devices
            .iter()
            .find(|d| d.address.to_string() == addr)
            .unwrap_or_else(|| panic!("{addr} not found in {inv:#?}"))
    }

    #[test]
    fn finds_gpus_switches_and_their_surroundings() {
        let t = Tree::new();
        aliases(&t);
        t.pci(&PciSpec::new("0000:00:01.0", 0x8086, 0x1234, 0x060400).group(1))
            .pci(
                &PciSpec::new("0000:3b:00.0", NV, 0x2330, 0x030200)
                    .subsystem(NV, 0x1234)
                    .driver("nvidia")
                    .group(1)
                    .numa(0),
            )
            .pci(
                &PciSpec::new("0000:3c:00.0", 0x15b3, 0x101e, 0x020000)
                    .driver("mlx5_core")
                    .group(1),
            )
            .pci(
                &PciSpec::new("0000:5d:00.0", NV, 0x2330, 0x030200)
                    .driver("vfio-pci")
                    .group(2)
                    .numa(1),
            )
            .pci(
                &PciSpec::new("0000:7a:00.0", NV, 0x22a3, 0x068000)
                    .driver("nvidia-nvswitch")
                    .group(3),
            )
            .pci(&PciSpec::new("0000:9a:00.0", NV, 0x2342, 0x030200).group(4))
            .pci(&PciSpec::new("0000:00:1f.0", 0x8086, 0xa1c8, 0x060100));
        std::fs::create_dir_all(t.dev_dir("0000:5d:00.0").join("vfio-dev/vfio0")).unwrap();
        let inv = discover_gpus(&t.host, &MatchConfig::default());
        assert!(inv.problems.is_empty(), "{:?}", inv.problems);
        assert_eq!(inv.devices.len(), 4);
        assert_eq!(inv.gpus().count(), 3);
        assert_eq!(inv.nvswitches().count(), 1);

        let g = find(&inv, "0000:3b:00.0");
        assert_eq!(g.kind, GpuKind::Gpu);
        assert_eq!(g.model.as_deref(), Some("GH100 [H100 SXM5 80GB]"));
        assert_eq!(g.chip.as_deref(), Some("GH100"));
        assert_eq!(g.architecture, Some(Architecture::Hopper));
        assert!(g.cc_capable && g.ppcie_capable);
        assert_eq!(g.numa_node, Some(0));
        assert_eq!(g.driver.as_deref(), Some("nvidia"));
        assert_eq!(g.vfio.driver, "vfio-pci");
        assert!(!g.is_on_vfio());
        assert_eq!(g.subsystem_device, Some(0x1234));
        let grp = g.iommu_group.as_ref().unwrap();
        assert_eq!(grp.number, 1);
        assert_eq!(grp.domain_type.as_deref(), Some("DMA"));
        let others: Vec<String> = grp.others.iter().map(|o| o.address.to_string()).collect();
        assert_eq!(others, ["0000:00:01.0", "0000:3c:00.0"]);
        let foreign = g.foreign_group_members();
        assert_eq!(foreign.len(), 1, "the bridge is not foreign, the NIC is");
        assert_eq!(foreign[0].driver.as_deref(), Some("mlx5_core"));
        assert_eq!(foreign[0].vendor, Some(0x15b3));

        let v = find(&inv, "0000:5d:00.0");
        assert!(v.is_on_vfio());
        assert_eq!(v.vfio_dev.as_deref(), Some("vfio0"));
        assert_eq!(v.numa_node, Some(1));
        assert!(v.foreign_group_members().is_empty());

        let s = find(&inv, "0000:7a:00.0");
        assert_eq!(s.kind, GpuKind::NvSwitch);
        assert_eq!(s.chip.as_deref(), Some("LS10"));
        assert!(!s.cc_capable && s.ppcie_capable);

        let gh = find(&inv, "0000:9a:00.0");
        assert_eq!(gh.vfio.module, "nvgrace_gpu_vfio_pci");
        assert!(matches!(gh.vfio.source, VfioChoiceSource::Alias { .. }));
        assert_eq!(gh.driver, None);
    }

    #[test]
    fn boot_vga_and_slot_functions() {
        let t = Tree::new();
        aliases(&t);
        t.pci(
            &PciSpec::new("0000:01:00.0", NV, 0x2bb1, 0x030000)
                .driver("nvidia")
                .group(7)
                .boot_vga(),
        )
        .pci(
            &PciSpec::new("0000:01:00.1", NV, 0x22e8, 0x040300)
                .driver("snd_hda_intel")
                .group(7),
        )
        .pci(&PciSpec::new("0000:02:00.0", NV, 0x2331, 0x030200).group(8));
        let inv = discover_gpus(&t.host, &MatchConfig::default());
        assert!(inv.problems.is_empty(), "{:?}", inv.problems);
        let vga = find(&inv, "0000:01:00.0");
        assert!(vga.boot_vga);
        assert_eq!(vga.chip.as_deref(), Some("GB202"));
        assert_eq!(vga.slot_functions.len(), 1);
        assert_eq!(vga.slot_functions[0].address.to_string(), "0000:01:00.1");
        assert_eq!(
            vga.slot_functions[0].driver.as_deref(),
            Some("snd_hda_intel")
        );
        assert!(
            vga.foreign_group_members().is_empty(),
            "the audio function is the same slot"
        );
        let pcie = find(&inv, "0000:02:00.0");
        assert!(!pcie.boot_vga);
        assert!(pcie.slot_functions.is_empty());
        assert_eq!(pcie.model.as_deref(), Some("GH100 [H100 PCIe]"));
    }

    #[test]
    fn malformed_device_is_a_problem_not_a_blackout() {
        let t = Tree::new();
        aliases(&t);
        t.pci(&PciSpec::new("0000:3b:00.0", NV, 0x2330, 0x030200))
            .pci(&PciSpec::new("0000:3c:00.0", NV, 0x2330, 0x030200))
            .pci(&PciSpec::new("0000:3d:00.0", NV, 0x2330, 0x030200))
            .pci(&PciSpec::new("0000:3e:00.0", NV, 0x2330, 0x030200));
        // Garbage vendor, non-UTF-8 class, a numa_node that is not a number.
        t.file("/sys/bus/pci/devices/0000:3b:00.0/vendor", "nvidia\n");
        t.file("/sys/bus/pci/devices/0000:3c:00.0/class", [0xff, 0xfe]);
        t.file("/sys/bus/pci/devices/0000:3d:00.0/numa_node", "zero\n");
        let inv = discover_gpus(&t.host, &MatchConfig::default());
        assert_eq!(inv.devices.len(), 1);
        assert_eq!(inv.devices[0].address.to_string(), "0000:3e:00.0");
        assert_eq!(inv.problems.len(), 3, "{:?}", inv.problems);
        let paths: Vec<String> = inv
            .problems
            .iter()
            .map(|p| p.path.display().to_string())
            .collect();
        assert!(paths[0].ends_with("0000:3b:00.0/vendor"), "{paths:?}");
        assert!(paths[1].ends_with("0000:3c:00.0/class"), "{paths:?}");
        assert!(paths[2].ends_with("0000:3d:00.0/numa_node"), "{paths:?}");
        assert!(inv.problems[1].message.contains("UTF-8"));
    }

    #[test]
    fn missing_modules_alias_falls_back_and_says_so() {
        let t = Tree::new();
        t.file("/proc/sys/kernel/osrelease", "6.1.0\n");
        t.pci(&PciSpec::new("0000:9a:00.0", NV, 0x2342, 0x030200));
        let inv = discover_gpus(&t.host, &MatchConfig::default());
        assert_eq!(inv.devices.len(), 1);
        assert_eq!(inv.devices[0].vfio.driver, "vfio-pci");
        assert!(inv.problems.is_empty(), "missing is not broken");
        match &inv.devices[0].vfio.source {
            VfioChoiceSource::Fallback { reason } => {
                assert!(
                    reason.contains("6.1.0/modules.alias does not exist"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // An unreadable one is a problem.
        t.file("/lib/modules/6.1.0/modules.alias", [0xff, 0xfe]);
        let inv = discover_gpus(&t.host, &MatchConfig::default());
        assert_eq!(inv.problems.len(), 1);
        assert!(inv.problems[0].path.ends_with("6.1.0/modules.alias"));
    }

    #[test]
    fn no_gpus_no_alias_read_no_problems() {
        let t = Tree::new();
        t.pci(&PciSpec::new("0000:00:02.0", 0x8086, 0x3e92, 0x030000).boot_vga());
        let inv = discover_gpus(&t.host, &MatchConfig::default());
        assert!(inv.devices.is_empty());
        assert!(inv.problems.is_empty(), "{:?}", inv.problems);
        // And an empty root has no PCI at all.
        let empty = Tree::new();
        assert_eq!(
            discover_gpus(&empty.host, &MatchConfig::default()),
            GpuInventory::default()
        );
    }

    #[test]
    fn symlink_loop_in_a_device_is_contained() {
        let t = Tree::new();
        aliases(&t);
        t.pci(&PciSpec::new("0000:3e:00.0", NV, 0x2330, 0x030200));
        t.link("/sys/bus/pci/devices/0000:3f:00.0", "0000:3f:00.0");
        let inv = discover_gpus(&t.host, &MatchConfig::default());
        assert_eq!(inv.devices.len(), 1);
        assert_eq!(inv.problems.len(), 1, "{:?}", inv.problems);
        assert!(
            inv.problems[0]
                .path
                .starts_with("/sys/bus/pci/devices/0000:3f:00.0")
        );
    }

    #[test]
    fn serde_round_trip() {
        let t = Tree::new();
        aliases(&t);
        t.pci(
            &PciSpec::new("0000:3b:00.0", NV, 0x2330, 0x030200)
                .driver("nvidia")
                .group(1),
        );
        let inv = discover_gpus(&t.host, &MatchConfig::default());
        let json = serde_json::to_string(&inv).unwrap();
        let back: GpuInventory = serde_json::from_str(&json).unwrap();
        assert_eq!(back, inv);
        assert!(json.contains("\"kind\":\"gpu\""), "{json}");
    }
}
