//! Which passthrough devices this host can hand to a pod, under which IDs and /dev
//! nodes: the one list both the CDI spec and the device plugin are made from, so their
//! names cannot drift apart (docs/facts/gpu.md#kata-cdi-contract: CDI kind == resource name, CDI device
//! name == device-plugin ID).
//!
//! The input is a list of [`Candidate`]s (matched GPU / NVSwitch functions), taken
//! from the GPU inventory ([`candidates_from_inventory`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{DevicePluginConfig, MatchConfig, VfioModeConfig};
use crate::host::pci::PciAddress;
use crate::host::{HostError, HostRoot};
use crate::inventory::gpu::{GpuInventory, GpuKind};

pub(crate) const VFIO_CONTAINER: &str = "/dev/vfio/vfio";
pub(crate) const IOMMU_DEV: &str = "/dev/iommu";
pub(crate) const VFIO_DEVICES_DIR: &str = "/dev/vfio/devices";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    Gpu,
    NvSwitch,
}

/// How user space reaches a vfio device on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VfioMode {
    /// Group nodes: `/dev/vfio/vfio` + `/dev/vfio/<group>`; ID = group number.
    Legacy,
    /// Device cdevs: `/dev/vfio/devices/vfioN` (with `/dev/iommu` on the host); ID = N.
    Iommufd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy(String),
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// One matched PCI function, as far as passthrough cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub address: PciAddress,
    pub class: DeviceClass,
    pub vendor: u16,
    pub device: u16,
    /// Model name as pci.ids prints it (`GH100 [H100 SXM5 80GB]`).
    pub model: String,
    pub numa_node: Option<u32>,
    pub iommu_group: Option<u32>,
    pub driver: Option<String>,
    /// `vfioN` under `<device>/vfio-dev/` (iommufd cdev), if any.
    pub vfio_dev: Option<String>,
    /// Upstream bridges, root port first.
    pub upstream: Vec<PciAddress>,
}

impl Candidate {
    /// The upstream port of the PCIe switch above this function: the bridge above the
    /// downstream port the function hangs off. `None` when it sits on a root port.
    pub(crate) fn pcie_switch(&self) -> Option<PciAddress> {
        let n = self.upstream.len();
        (n >= 2).then(|| self.upstream[n - 2])
    }
}

/// One device the plugin advertises and the CDI spec names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassthroughDevice {
    /// Device-plugin ID == CDI device name.
    pub id: String,
    /// Extended resource name == CDI kind.
    pub resource: String,
    pub class: DeviceClass,
    pub model: String,
    /// The PCI functions behind this ID (several when functions share a group).
    pub functions: Vec<PciAddress>,
    pub numa_node: Option<u32>,
    pub pcie_switch: Option<PciAddress>,
    /// Host paths of the /dev nodes a container (or Kata's VMM) needs.
    pub device_nodes: Vec<String>,
    pub health: Health,
}

/// A function that could not be advertised, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub address: Option<PciAddress>,
    pub reason: String,
    /// Set when the function was skipped because one of its sysfs files could not be
    /// read or parsed (a fault to report), not because it is not eligible (a state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<Unreadable>,
}

/// The file at fault when a function is skipped as unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// Host path, e.g. `/sys/bus/pci/devices/0000:07:00.0/numa_node`.
    pub file: PathBuf,
    pub error: String,
}

impl Skipped {
    /// Not eligible (wrong driver, no IOMMU group, ...): the function was read fine.
    pub(crate) fn because(address: PciAddress, reason: impl Into<String>) -> Self {
        Skipped {
            address: Some(address),
            reason: reason.into(),
            unreadable: None,
        }
    }
}

/// Everything one scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub mode: VfioMode,
    /// Sorted by resource, then numerically by ID.
    pub devices: Vec<PassthroughDevice>,
    /// Matched functions that are not advertised (not bound to vfio, unreadable, ...).
    pub skipped: Vec<Skipped>,
}

impl Discovery {
    /// Functions skipped because a sysfs file could not be read or parsed.
    pub fn unreadable(&self) -> impl Iterator<Item = &Skipped> {
        self.skipped.iter().filter(|s| s.unreadable.is_some())
    }

    /// The resource names in use, sorted.
    pub fn resources(&self) -> Vec<String> {
        let mut r: Vec<String> = self.devices.iter().map(|d| d.resource.clone()).collect();
        r.dedup();
        r.sort();
        r.dedup();
        r
    }

    /// One line that says why nothing is advertised (for the "0 devices" log).
    pub fn why_empty(&self) -> String {
        if self.skipped.is_empty() {
            "no GPU or NVSwitch matched the [match] rules".to_string()
        } else {
            self.skipped
                .iter()
                .map(|s| match s.address {
                    Some(a) => format!("{a}: {}", s.reason),
                    None => s.reason.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
    }
}

/// Upper-case model name for per-model resource names, the way NVIDIA's sandbox plugin
/// derives it: `GH100 [H100 SXM5 80GB]` -> `GH100_H100_SXM5_80GB` (docs/facts/gpu.md#sandbox-device-plugin).
pub(crate) fn model_resource_class(model: &str) -> String {
    let mut out: String = model
        .chars()
        .filter_map(|c| match c {
            '/' | '.' => Some('_'),
            c if c.is_whitespace() => Some('_'),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => Some(c.to_ascii_uppercase()),
            _ => None,
        })
        .collect();
    while out.ends_with(['_', '-']) {
        out.pop();
    }
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert_str(0, "GPU_");
    }
    out.truncate(63);
    while out.ends_with(['_', '-']) {
        out.pop();
    }
    out
}

/// pci.ids model name, or `PCI_VVVV_DDDD` when the ID is not in the database.
pub(crate) fn model_name(vendor: u16, device: u16) -> String {
    crate::inventory::pci_names::device_name(vendor, device)
        .map(str::to_string)
        .unwrap_or_else(|| format!("PCI_{vendor:04X}_{device:04X}"))
}

/// The matched GPU / NVSwitch functions of the inventory, as candidates. What the
/// inventory could not read is reported in the second list (with the PCI address the
/// failing path names) and never blocks the others.
pub(crate) fn candidates_from_inventory(inv: &GpuInventory) -> (Vec<Candidate>, Vec<Skipped>) {
    let candidates = inv
        .devices
        .iter()
        .map(|d| Candidate {
            address: d.address,
            class: match d.kind {
                GpuKind::Gpu => DeviceClass::Gpu,
                GpuKind::NvSwitch => DeviceClass::NvSwitch,
            },
            vendor: d.vendor,
            device: d.device,
            model: d
                .model
                .clone()
                .unwrap_or_else(|| model_name(d.vendor, d.device)),
            numa_node: d.numa_node,
            iommu_group: d.iommu_group.as_ref().map(|g| g.number),
            driver: d.driver.clone(),
            vfio_dev: d.vfio_dev.clone(),
            upstream: upstream_bridges(&d.sysfs_path, &d.address),
        })
        .collect();
    for p in &inv.problems {
        tracing::warn!(path = %p.path.display(), error = %p.message, "cannot read");
    }
    let skipped = unreadable_from_inventory(inv);
    (candidates, skipped)
}

/// The PCI functions the GPU inventory could not read, as skipped functions: one entry
/// per function that is not in the inventory's device list because a file of it could
/// not be read or parsed (it may be a GPU; its vendor/class may be what failed), plus
/// a failed listing of `/sys/bus/pci/devices` (then nothing is advertised). Problems
/// that do not drop a function (an unreadable IOMMU group type, modules.alias) are
/// `cchost inventory`'s to report, not skips. Pure: `cchost check` reports the same.
pub(crate) fn unreadable_from_inventory(inv: &GpuInventory) -> Vec<Skipped> {
    let listed: std::collections::BTreeSet<PciAddress> =
        inv.devices.iter().map(|d| d.address).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for p in &inv.problems {
        let address = p
            .path
            .components()
            .rev()
            .find_map(|c| c.as_os_str().to_str()?.parse::<PciAddress>().ok());
        let keep = match address {
            Some(a) => !listed.contains(&a) && seen.insert(a),
            None => p.path == std::path::Path::new(crate::host::pci::PCI_DEVICES),
        };
        if keep {
            out.push(Skipped {
                address,
                // Name the file at fault: "which attribute" is what an operator needs.
                reason: format!("{}: {}", p.path.display(), p.message),
                unreadable: Some(Unreadable {
                    file: p.path.clone(),
                    error: p.message.clone(),
                }),
            });
        }
    }
    out
}

/// Bridges above a function, root port first, from its canonical sysfs path.
fn upstream_bridges(sysfs_path: &std::path::Path, me: &PciAddress) -> Vec<PciAddress> {
    let mut out: Vec<PciAddress> = sysfs_path
        .components()
        .filter_map(|c| c.as_os_str().to_str()?.parse().ok())
        .collect();
    if out.last() == Some(me) {
        out.pop();
    }
    out
}

/// Picks the vfio mode: configured, or from the nodes the host actually has.
pub fn vfio_mode(host: &HostRoot, cfg: &DevicePluginConfig) -> VfioMode {
    match cfg.vfio_mode {
        VfioModeConfig::Legacy => VfioMode::Legacy,
        VfioModeConfig::Iommufd => VfioMode::Iommufd,
        VfioModeConfig::Auto => {
            if host.exists(IOMMU_DEV) && host.exists(VFIO_DEVICES_DIR) {
                VfioMode::Iommufd
            } else {
                VfioMode::Legacy
            }
        }
    }
}

/// A /dev node is there when something (a char device, or a plain file in a fixture
/// tree) exists at the path.
fn node_present(host: &HostRoot, path: &str) -> bool {
    host.kind_followed(path)
        .is_some_and(|k| k != crate::host::NodeKind::Dir)
}

/// Turns candidates into advertised devices.
pub(crate) fn discover_from(
    host: &HostRoot,
    cfg: &DevicePluginConfig,
    candidates: Vec<Candidate>,
    mut skipped: Vec<Skipped>,
) -> Discovery {
    let mode = vfio_mode(host, cfg);
    let mut units: BTreeMap<(String, String), PassthroughDevice> = BTreeMap::new();
    for c in candidates {
        let resource = match c.class {
            DeviceClass::Gpu if cfg.gpu_resource.is_empty() => {
                format!("{}/{}", cfg.model_prefix, model_resource_class(&c.model))
            }
            DeviceClass::Gpu => cfg.gpu_resource.clone(),
            // Empty: one resource per model, as NVIDIA's sandbox device plugin does with
            // `NVSWITCH_ALIAS=""` (the same rule as `P_GPU_ALIAS=""`).
            DeviceClass::NvSwitch if cfg.nvswitch_resource.is_empty() => {
                format!("{}/{}", cfg.model_prefix, model_resource_class(&c.model))
            }
            DeviceClass::NvSwitch => cfg.nvswitch_resource.clone(),
        };
        let driver = c.driver.clone().unwrap_or_default();
        if !cfg.vfio_drivers.contains(&driver) {
            skipped.push(Skipped::because(
                c.address,
                if driver.is_empty() {
                    "no driver bound (not bound to vfio-pci)".to_string()
                } else {
                    format!("bound to {driver}, not to a vfio driver")
                },
            ));
            continue;
        }
        let Some(group) = c.iommu_group else {
            skipped.push(Skipped::because(c.address, "no IOMMU group (IOMMU off?)"));
            continue;
        };
        let (id, nodes) = match mode {
            VfioMode::Legacy => (
                group.to_string(),
                vec![VFIO_CONTAINER.to_string(), format!("/dev/vfio/{group}")],
            ),
            VfioMode::Iommufd => {
                let Some(n) = c
                    .vfio_dev
                    .as_deref()
                    .and_then(|v| v.strip_prefix("vfio"))
                    .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                else {
                    skipped.push(Skipped::because(
                        c.address,
                        "iommufd mode, but the function has no vfio-dev/vfioN cdev",
                    ));
                    continue;
                };
                // The cdev only, not /dev/iommu: Kata's device manager takes only
                // /dev/vfio/* as VFIO (src/runtime/pkg/device/manager/utils.go
                // IsVFIODevice) and would hand any other node to the guest as a plain
                // device, while its QEMU opens /dev/iommu on the host itself. NVIDIA's
                // sandbox device plugin writes the same (pkg/device_plugin/cdi.go).
                (n.to_string(), vec![format!("{VFIO_DEVICES_DIR}/vfio{n}")])
            }
        };
        let key = (resource.clone(), id.clone());
        if let Some(unit) = units.get_mut(&key) {
            // Functions sharing one group travel together (e.g. NVSwitches that share
            // a group on some HGX boards, docs/facts/gpu.md#nvswitch-groups).
            unit.functions.push(c.address);
            continue;
        }
        units.insert(
            key,
            PassthroughDevice {
                id,
                resource,
                class: c.class,
                model: c.model.clone(),
                functions: vec![c.address],
                numa_node: c.numa_node,
                pcie_switch: c.pcie_switch(),
                device_nodes: nodes,
                health: Health::Healthy,
            },
        );
    }
    let mut devices: Vec<PassthroughDevice> = units.into_values().collect();
    for d in &mut devices {
        d.health = check_health(host, mode, d, &cfg.vfio_drivers);
    }
    devices.sort_by(|a, b| {
        (a.resource.as_str(), numeric_key(&a.id)).cmp(&(b.resource.as_str(), numeric_key(&b.id)))
    });
    // The same ID under two resources (a group holding a GPU and an NVSwitch) would
    // hand one group out twice: keep the first, report the rest.
    let mut seen = std::collections::BTreeSet::new();
    devices.retain(|d| {
        if seen.insert(d.id.clone()) {
            true
        } else {
            skipped.push(Skipped {
                address: d.functions.first().copied(),
                reason: format!("ID {} is already advertised under another resource", d.id),
                unreadable: None,
            });
            false
        }
    });
    Discovery {
        mode,
        devices,
        skipped,
    }
}

/// Sort key that orders "2" before "10".
/// Carries devices of the previous scan that this scan could not read (a transient
/// sysfs error) into this one, unchanged: unreadable is not gone, so the CDI spec and
/// the plugin keep them until a scan reads them as gone or ineligible. Returns their IDs.
pub(crate) fn keep_unreadable(previous: &Discovery, scan: &mut Discovery) -> Vec<String> {
    let unreadable: std::collections::BTreeSet<PciAddress> =
        scan.unreadable().filter_map(|s| s.address).collect();
    let mut kept = Vec::new();
    for d in &previous.devices {
        let here = scan
            .devices
            .iter()
            .any(|n| n.id == d.id || n.functions.iter().any(|f| d.functions.contains(f)));
        if !here && d.functions.iter().any(|f| unreadable.contains(f)) {
            scan.devices.push(d.clone());
            kept.push(d.id.clone());
        }
    }
    if !kept.is_empty() {
        scan.devices.sort_by(|a, b| {
            (a.resource.as_str(), numeric_key(&a.id))
                .cmp(&(b.resource.as_str(), numeric_key(&b.id)))
        });
    }
    kept
}

pub(crate) fn numeric_key(id: &str) -> (u64, &str) {
    (id.parse().unwrap_or(u64::MAX), id)
}

/// A device is healthy when its /dev nodes exist and, for a group, every endpoint in
/// the group is bound to a vfio driver (else the kernel refuses to open the group).
fn check_health(
    host: &HostRoot,
    mode: VfioMode,
    d: &PassthroughDevice,
    vfio_drivers: &[String],
) -> Health {
    for node in &d.device_nodes {
        if !node_present(host, node) {
            return Health::Unhealthy(format!("{node} is missing"));
        }
    }
    if mode == VfioMode::Legacy
        && let Ok(group) = d.id.parse::<u32>()
        && let Ok(members) = host.iommu_group_devices(group)
    {
        for m in members {
            let dir = PathBuf::from(crate::host::pci::PCI_DEVICES).join(m.to_string());
            let driver = host.link_name(dir.join("driver")).ok().flatten();
            let class = host
                .read_attr_opt(dir.join("class"))
                .ok()
                .flatten()
                .and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok());
            // Bridges may stay with their driver (pcieport); everything else in the
            // group must be vfio-bound or driverless.
            let is_bridge = class.is_some_and(|c| c >> 8 == 0x0604);
            if let Some(drv) = driver
                && !is_bridge
                && !vfio_drivers.contains(&drv)
            {
                return Health::Unhealthy(format!(
                    "IOMMU group {group} is not viable: {m} is bound to {drv}"
                ));
            }
        }
    }
    Health::Healthy
}

/// Full scan: the GPU inventory + config -> devices.
pub fn discover(
    host: &HostRoot,
    matching: &MatchConfig,
    cfg: &DevicePluginConfig,
) -> Result<Discovery, HostError> {
    discover_in(
        host,
        &crate::inventory::gpu::discover_gpus(host, matching),
        cfg,
    )
}

/// [`discover`] from a GPU inventory the caller already holds (the daemon's pass reads
/// it once and also derives the CC split of a mixed node from it).
pub(crate) fn discover_in(
    host: &HostRoot,
    inv: &crate::inventory::GpuInventory,
    cfg: &DevicePluginConfig,
) -> Result<Discovery, HostError> {
    let (candidates, skipped) = candidates_from_inventory(inv);
    // A bus that cannot be listed says nothing about the devices on it: an error, so
    // that no caller takes "nothing found" for "every device gone".
    if let Some(bus) = skipped
        .iter()
        .find(|s| s.address.is_none() && s.unreadable.is_some())
    {
        return Err(HostError::malformed(
            crate::host::pci::PCI_DEVICES,
            format!(
                "cannot list the PCI bus, so no device can be told present or gone ({})",
                bus.reason
            ),
        ));
    }
    Ok(discover_from(host, cfg, candidates, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13 item 5: a device the new scan could not read stays (CDI spec, plugin);
    /// one read as gone does not.
    #[test]
    fn an_unreadable_device_is_carried_over_a_gone_one_is_not() {
        let dev = |id: &str, f: &str| PassthroughDevice {
            id: id.into(),
            resource: "nvidia.com/pgpu".into(),
            class: DeviceClass::Gpu,
            model: String::new(),
            functions: vec![f.parse().unwrap()],
            numa_node: None,
            pcie_switch: None,
            device_nodes: vec![],
            health: Health::Healthy,
        };
        let prev = Discovery {
            mode: VfioMode::Legacy,
            devices: vec![dev("3", "0000:01:00.0"), dev("4", "0000:02:00.0")],
            skipped: vec![],
        };
        let mut scan = Discovery {
            mode: VfioMode::Legacy,
            devices: vec![],
            skipped: vec![Skipped {
                address: Some("0000:01:00.0".parse().unwrap()),
                reason: "vendor: Input/output error".into(),
                unreadable: Some(Unreadable {
                    file: "/sys/bus/pci/devices/0000:01:00.0/vendor".into(),
                    error: "Input/output error".into(),
                }),
            }],
        };
        assert_eq!(keep_unreadable(&prev, &mut scan), ["3"]);
        assert_eq!(scan.devices, vec![dev("3", "0000:01:00.0")]);
    }

    #[test]
    fn per_model_names_match_nvidia_sandbox_plugin() {
        assert_eq!(
            model_resource_class("GH100 [H100 SXM5 80GB]"),
            "GH100_H100_SXM5_80GB"
        );
        assert_eq!(
            model_resource_class("GH100 [H100 NVSwitch]"),
            "GH100_H100_NVSWITCH"
        );
        assert_eq!(model_resource_class("3D thing."), "GPU_3D_THING");
        assert!(
            crate::config::cdi_names::validate_class(&model_resource_class(
                "a".repeat(100).as_str()
            ))
            .is_ok()
        );
    }

    #[test]
    fn switch_is_the_bridge_above_the_downstream_port() {
        let a = |s: &str| s.parse::<PciAddress>().unwrap();
        let mut c = Candidate {
            address: a("0000:03:00.0"),
            class: DeviceClass::Gpu,
            vendor: 0x10de,
            device: 0x2330,
            model: String::new(),
            numa_node: None,
            iommu_group: None,
            driver: None,
            vfio_dev: None,
            upstream: vec![a("0000:00:01.0"), a("0000:01:00.0"), a("0000:02:00.0")],
        };
        assert_eq!(c.pcie_switch(), Some(a("0000:01:00.0")));
        c.upstream.truncate(1);
        assert_eq!(c.pcie_switch(), None);
    }

    #[test]
    fn numeric_ids_sort_numerically() {
        let mut v = vec!["10", "2", "x"];
        v.sort_by_key(|s| numeric_key(s));
        assert_eq!(v, ["2", "10", "x"]);
    }
}
