//! Every check `cchost check` can run, in one list with its static metadata (as kata-ctl's
//! `CHECK_LIST` and snphost's per-test metadata do): the id scripts key on, the title, the
//! category, the parent it needs, what it is evaluated from, and the kinds of remedy its
//! FAIL or WARN can give. `cchost check --list` prints it; docs/check-json.md is tested
//! against it.
//!
//! The tree a profile runs is built in the subtree files (`host.rs`, `tee.rs`, ...); a
//! test holds every tree to the parents declared here.

use serde::Serialize;

/// The stable id of a check (`cchost.check/v1`); serialized as its name (`tdx.bios`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckId {
    Cpu,
    Kvm,
    Tee,
    TdxCpu,
    TdxBios,
    TdxKernel,
    TdxNohibernate,
    TdxModule,
    TdxKvm,
    TdxKeys,
    SnpCpu,
    SnpBios,
    SnpIommu,
    SnpKvmAmd,
    SnpSev,
    SnpSevEs,
    SnpKvm,
    SnpAsids,
    SnpDevSev,
    SnpFirmware,
    IommuFirmware,
    IommuEnabled,
    IommuMode,
    IommuCmdline,
    KernelArgs,
    Vsock,
    Gpu,
    GpuCc,
    GpuIommuGroup,
    GpuBootVga,
    GpuBarAccess,
    GpuVfioModule,
    GpuVfioBound,
    DevicepluginReadable,
    CdiConflicts,
    Dcap,
    DcapQgsConf,
    DcapQgs,
    DcapQcnl,
    DcapPccs,
    DcapRegistration,
    DcapCollateral,
    DcapExpiry,
    Inventory,
}

/// Which part of the host a check is about (the grouping of `cchost check --list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Cpu,
    Tee,
    Iommu,
    Kernel,
    Gpu,
    DevicePlugin,
    Dcap,
    Inventory,
}

/// What a check is evaluated from: all of it is gathered before evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Input {
    /// The host inventory (`Inventory::collect`).
    Inventory,
    /// The configuration (`[match]`, `[kernel]`, `[dcap]` ...).
    Config,
    /// The live DCAP probes (`check::dcap::probe`: QGS socket, PCCS over HTTPS).
    DcapProbe,
    /// The other CDI specs in /etc/cdi and /var/run/cdi (`cdi::foreign`), read before
    /// evaluation.
    CdiSpecs,
    /// The plan `cchost gpu bind --all` would make here, with its refusals
    /// (`plan::vfio::plan_bind`), made before evaluation.
    BindPlan,
}

/// The kind of change a FAIL or WARN remedy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemedyKind {
    /// A BIOS/firmware setup option.
    Bios,
    /// A kernel command-line argument (`cchost plan` / `apply`, then a reboot).
    KernelArgs,
    /// Load a kernel module (and persist it).
    Module,
    /// A different kernel (one with the host support).
    Kernel,
    /// Device firmware to update (the SEV firmware).
    Firmware,
    /// Bind a device to its vfio driver (`cchost gpu bind`).
    Bind,
    /// Other hardware, or the device in another slot.
    Hardware,
    /// Run cchost where it can see the host (bare metal, as root, with /proc, cgroup v2).
    Environment,
    /// A service or its configuration (QGS, QCNL, PCCS, platform registration).
    Service,
}

/// The static facts about one check.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckMeta {
    pub id: CheckId,
    /// The id as it appears in the report (`tdx.bios`).
    #[serde(skip)]
    pub name: &'static str,
    pub title: &'static str,
    pub category: Category,
    /// The check that must PASS or WARN before this one runs (`None`: top level).
    pub needs: Option<CheckId>,
    pub inputs: &'static [Input],
    pub remedies: &'static [RemedyKind],
}

use Category as C;
use CheckId as I;
use Input::{BindPlan, CdiSpecs, Config as Cfg, DcapProbe as Probe, Inventory as Inv};
use RemedyKind as R;

const fn m(
    id: CheckId,
    name: &'static str,
    title: &'static str,
    category: Category,
    needs: Option<CheckId>,
    inputs: &'static [Input],
    remedies: &'static [RemedyKind],
) -> CheckMeta {
    CheckMeta {
        id,
        name,
        title,
        category,
        needs,
        inputs,
        remedies,
    }
}

/// Every check, parents before their children, in the order the report shows them.
#[rustfmt::skip]
pub const CHECK_LIST: &[CheckMeta] = &[
    m(I::Cpu, "cpu", "CPU identified", C::Cpu, None, &[Inv], &[R::Environment]),
    m(I::Kvm, "kvm", "KVM available (/dev/kvm)", C::Cpu, Some(I::Cpu), &[Inv], &[R::Bios, R::Module]),
    m(I::Tee, "tee", "CPU has a supported TEE (TDX or SEV-SNP)", C::Tee, None, &[Inv], &[R::Hardware, R::Environment]),
    m(I::TdxCpu, "tdx.cpu", "Intel CPU", C::Tee, None, &[Inv], &[R::Environment]),
    m(I::TdxBios, "tdx.bios", "TDX enabled in the BIOS (tdx_host_platform)", C::Tee, Some(I::TdxCpu), &[Inv], &[R::Bios, R::Environment]),
    m(I::TdxKernel, "tdx.kernel", "Kernel has TDX host support", C::Tee, Some(I::TdxBios), &[Inv], &[R::Module, R::Kernel]),
    m(I::TdxNohibernate, "tdx.nohibernate", "Hibernation disabled (nohibernate)", C::Tee, Some(I::TdxKernel), &[Inv], &[R::KernelArgs]),
    m(I::TdxModule, "tdx.module", "TDX module initialised", C::Tee, Some(I::TdxKernel), &[Inv], &[R::Bios, R::KernelArgs, R::Firmware, R::Environment]),
    m(I::TdxKvm, "tdx.kvm", "TDX enabled in KVM (kvm_intel tdx=Y)", C::Tee, Some(I::TdxKernel), &[Inv], &[R::KernelArgs, R::Module]),
    m(I::TdxKeys, "tdx.keys", "TDX KeyIDs (misc cgroup)", C::Tee, Some(I::TdxKvm), &[Inv], &[R::Bios, R::Environment]),
    m(I::SnpCpu, "snp.cpu", "AMD CPU", C::Tee, None, &[Inv], &[R::Environment]),
    m(I::SnpBios, "snp.bios", "SEV-SNP enabled in the BIOS (sev_snp flag)", C::Tee, Some(I::SnpCpu), &[Inv], &[R::Bios, R::Environment]),
    m(I::SnpIommu, "snp.iommu", "IOMMU on and translating (SNP needs it)", C::Tee, Some(I::SnpCpu), &[Inv], &[R::KernelArgs, R::Bios]),
    m(I::SnpKvmAmd, "snp.kvm_amd", "kvm_amd loaded", C::Tee, Some(I::SnpCpu), &[Inv], &[R::Module]),
    m(I::SnpSev, "snp.sev", "SEV enabled in KVM (kvm_amd sev)", C::Tee, Some(I::SnpKvmAmd), &[Inv], &[R::KernelArgs, R::Module]),
    m(I::SnpSevEs, "snp.sev_es", "SEV-ES enabled in KVM (kvm_amd sev_es)", C::Tee, Some(I::SnpSev), &[Inv], &[R::KernelArgs, R::Module]),
    m(I::SnpKvm, "snp.kvm", "SEV-SNP enabled in KVM (kvm_amd sev_snp)", C::Tee, Some(I::SnpSevEs), &[Inv], &[R::KernelArgs, R::Module]),
    m(I::SnpAsids, "snp.asids", "SEV-ES/SNP ASIDs (misc cgroup)", C::Tee, Some(I::SnpKvm), &[Inv], &[R::Bios, R::Environment]),
    m(I::SnpDevSev, "snp.dev_sev", "/dev/sev present (ccp driver)", C::Tee, Some(I::SnpKvm), &[Inv], &[R::Module]),
    m(I::SnpFirmware, "snp.firmware", "SEV firmware 1.51 or newer", C::Tee, Some(I::SnpKvm), &[Inv], &[R::Firmware, R::Environment]),
    m(I::IommuFirmware, "iommu.firmware", "IOMMU described by firmware", C::Iommu, None, &[Inv], &[R::Bios]),
    m(I::IommuEnabled, "iommu.enabled", "IOMMU enabled in the kernel", C::Iommu, Some(I::IommuFirmware), &[Inv], &[R::KernelArgs]),
    m(I::IommuMode, "iommu.mode", "IOMMU DMA mode fits the profile", C::Iommu, Some(I::IommuEnabled), &[Inv], &[R::KernelArgs]),
    m(I::IommuCmdline, "iommu.cmdline", "IOMMU kernel arguments valid", C::Iommu, None, &[Inv], &[R::KernelArgs]),
    m(I::KernelArgs, "kernel.args", "Kernel command line has the profile's arguments", C::Kernel, None, &[Inv, Cfg], &[R::KernelArgs]),
    m(I::Vsock, "vsock", "vhost-vsock available (Kata agent channel)", C::Kernel, None, &[Inv], &[R::Module]),
    m(I::Gpu, "gpu", "GPUs and NVSwitches", C::Gpu, None, &[Inv, Cfg], &[]),
    m(I::GpuCc, "gpu.cc", "GPUs support Confidential Computing", C::Gpu, Some(I::Gpu), &[Inv, Cfg], &[R::Hardware]),
    m(I::GpuIommuGroup, "gpu.iommu_group", "IOMMU groups fit passthrough (no foreign members, viable)", C::Gpu, Some(I::Gpu), &[Inv], &[R::Bios, R::Hardware]),
    m(I::GpuBootVga, "gpu.boot_vga", "No GPU drives the boot console", C::Gpu, Some(I::Gpu), &[Inv], &[R::Hardware, R::Bios]),
    m(I::GpuBarAccess, "gpu.bar_access", "GPU registers reachable for CC mode (no kernel lockdown)", C::Gpu, Some(I::Gpu), &[Inv], &[R::Environment]),
    m(I::GpuVfioModule, "gpu.vfio_module", "vfio-pci available", C::Gpu, Some(I::Gpu), &[Inv], &[R::Module]),
    m(I::GpuVfioBound, "gpu.vfio_bound", "GPUs bound to their vfio driver", C::Gpu, Some(I::Gpu), &[Inv, BindPlan], &[R::Bind]),
    m(I::DevicepluginReadable, "deviceplugin.readable", "Device plugin can read every matched PCI function", C::DevicePlugin, None, &[Inv], &[R::Hardware, R::Bind]),
    m(I::CdiConflicts, "cdi.conflicts", "No other CDI spec defines cchost's device kinds", C::DevicePlugin, None, &[Cfg, CdiSpecs], &[R::Service]),
    m(I::Dcap, "dcap", "Intel DCAP quote generation (QGS → PCCS)", C::Dcap, None, &[Inv, Cfg, Probe], &[R::Service]),
    m(I::DcapQgsConf, "dcap.qgs_conf", "QGS transport config (/etc/qgs.conf)", C::Dcap, Some(I::Dcap), &[Probe], &[R::Service]),
    m(I::DcapQgs, "dcap.qgs", "QGS answers GET_PLATFORM_INFO", C::Dcap, Some(I::Dcap), &[Probe], &[R::Service]),
    m(I::DcapQcnl, "dcap.qcnl", "QCNL config points QGS at a PCCS", C::Dcap, Some(I::Dcap), &[Probe], &[R::Service]),
    m(I::DcapPccs, "dcap.pccs", "PCCS reachable and serving collateral", C::Dcap, Some(I::Dcap), &[Probe], &[R::Service]),
    m(I::DcapRegistration, "dcap.registration", "Platform registered with PCCS", C::Dcap, Some(I::Dcap), &[Probe], &[R::Service]),
    m(I::DcapCollateral, "dcap.collateral", "QGS gets collateral (GET_COLLATERAL)", C::Dcap, Some(I::Dcap), &[Probe], &[R::Service]),
    m(I::DcapExpiry, "dcap.expiry", "Collateral not about to expire", C::Dcap, Some(I::Dcap), &[Probe], &[R::Service]),
    m(I::Inventory, "inventory", "Host facts readable", C::Inventory, None, &[Inv], &[R::Environment]),
];

impl CheckId {
    /// The metadata of this check.
    pub fn meta(self) -> &'static CheckMeta {
        CHECK_LIST
            .iter()
            .find(|m| m.id == self)
            .unwrap_or(&UNLISTED)
    }

    /// The id as it appears in the report (`tdx.bios`).
    pub fn name(self) -> &'static str {
        self.meta().name
    }

    pub fn title(self) -> &'static str {
        self.meta().title
    }
}

impl Serialize for CheckId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// `cchost check --list`: every check in tree order under a `[category]` line, children
/// indented under their parent, with its title (`--json` adds inputs and remedy kinds).
pub fn list_text() -> String {
    let mut out = String::new();
    let mut category = None;
    for m in CHECK_LIST {
        if category != Some(m.category) {
            category = Some(m.category);
            let name = serde_json::to_value(m.category)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!("[{name}]\n"));
        }
        let mut depth = 1;
        let mut p = m.needs;
        while let Some(id) = p {
            depth += 1;
            p = id.meta().needs;
        }
        let id = format!("{}{}", "  ".repeat(depth), m.name);
        out.push_str(&format!("{id:<24} {}\n", m.title));
    }
    out
}

/// Never returned for a listed id; `registry_lists_every_id_once` proves every id is
/// listed.
const UNLISTED: CheckMeta = m(
    CheckId::Inventory,
    "unlisted",
    "unlisted",
    C::Inventory,
    None,
    &[],
    &[],
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lists_every_id_once_parents_first() {
        let mut seen: Vec<CheckId> = Vec::new();
        for m in CHECK_LIST {
            assert!(!seen.contains(&m.id), "{:?} listed twice", m.id);
            if let Some(p) = m.needs {
                assert!(seen.contains(&p), "{} comes before its parent", m.name);
            }
            assert_eq!(m.id.meta().name, m.name);
            seen.push(m.id);
        }
        // Every variant: the last one's discriminant + 1 is the number of variants.
        assert_eq!(CHECK_LIST.len(), CheckId::Inventory as usize + 1);
        let names: std::collections::BTreeSet<&str> = CHECK_LIST.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), CHECK_LIST.len(), "names are unique");
    }

    #[test]
    fn list_shows_every_check_once_and_json_names_ids() {
        let text = list_text();
        let checks: Vec<&str> = text.lines().filter(|l| !l.starts_with('[')).collect();
        assert_eq!(checks.len(), CHECK_LIST.len());
        assert!(text.lines().any(|l| l.starts_with("    tdx.bios ")));
        assert!(text.lines().any(|l| l.starts_with("      tdx.kernel ")));
        assert!(text.lines().any(|l| l == "[dcap]"));
        assert!(text.lines().all(|l| l.chars().count() <= 82), "{text}");
        let v = serde_json::to_value(CHECK_LIST).unwrap();
        assert_eq!(v[0]["id"], "cpu");
        assert_eq!(v[1]["needs"], "cpu");
        assert!(v[1].get("name").is_none());
        assert_eq!(v[1]["remedies"][0], "bios");
    }

    #[test]
    fn a_child_id_is_prefixed_by_its_subtree() {
        for m in CHECK_LIST {
            if let Some(p) = m.needs {
                let parent = p.name();
                let sub = parent.split('.').next().unwrap_or(parent);
                // `kvm` under `cpu` is the one child outside its parent's prefix.
                if m.id != CheckId::Kvm {
                    assert!(m.name.starts_with(sub), "{} under {parent}", m.name);
                }
            }
        }
    }

    /// The `| \`id\` | checks | \`parent\` |` rows of docs/check-json.md's "Check ids".
    fn documented() -> Vec<(String, Option<String>)> {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/check-json.md"),
        )
        .unwrap();
        let section = doc
            .split("## Check ids")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap();
        section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                // ["", "`id`", "checks", "`parent` or —", ""]
                let id = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let parent = cells.get(cells.len().checked_sub(2)?)?;
                let parent = parent
                    .strip_prefix('`')
                    .and_then(|p| p.strip_suffix('`'))
                    .map(str::to_string);
                Some((id.to_string(), parent))
            })
            .collect()
    }

    #[test]
    fn check_json_md_lists_exactly_the_registry_with_its_parents() {
        let doc = documented();
        let mut doc_ids: Vec<&str> = doc.iter().map(|(i, _)| i.as_str()).collect();
        doc_ids.sort();
        let mut reg_ids: Vec<&str> = CHECK_LIST.iter().map(|m| m.name).collect();
        reg_ids.sort();
        assert_eq!(
            doc_ids, reg_ids,
            "docs/check-json.md vs check::registry::CHECK_LIST"
        );
        for (id, parent) in &doc {
            let m = CHECK_LIST.iter().find(|m| m.name == id).unwrap();
            assert_eq!(
                parent.as_deref(),
                m.needs.map(CheckId::name),
                "parent of {id} in docs/check-json.md"
            );
        }
    }
}
