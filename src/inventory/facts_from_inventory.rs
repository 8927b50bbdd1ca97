//! Filling the node facts from the inventory.

use super::facts::{
    Duties, GpuFacts, IommuFacts, NodeFacts, SgxFacts, SnpFacts, TdxFacts, VirtFacts,
};
use crate::inventory::{GpuKind, Inventory, ModuleState};

fn on(v: Option<&str>) -> bool {
    v.is_some_and(super::modules::param_on)
}

impl NodeFacts {
    pub fn from_inventory(inv: &Inventory) -> NodeFacts {
        let cpu_vendor = inv.cpu.as_ref().map(|c| c.vendor);
        let flag = |f: &str| inv.cpu.as_ref().is_some_and(|c| c.has_flag(f));
        let tdx_on = on(inv.tdx.kvm_param.as_deref());
        let tdx = TdxFacts {
            capable: inv.tdx.host_platform_flag || tdx_on,
            enabled: tdx_on,
            keys: inv.tdx.keys,
        };
        let param = |p: &str| on(inv.sev.params.get(p).map(String::as_str));
        let snp_on = param("sev_snp");
        let snp = SnpFacts {
            capable: inv.cpu.as_ref().is_some_and(|c| c.has_flag("sev_snp")) || snp_on,
            enabled: snp_on,
            sev_enabled: param("sev"),
            sev_es_enabled: param("sev_es"),
            esids: inv.sev.es_asids,
        };
        let iommu = IommuFacts {
            present: inv.iommu.present.is_yes(),
            enabled: inv.iommu.enabled.is_yes(),
            mode: inv.iommu.mode,
        };
        let cmdline = inv
            .kernel
            .cmdline
            .params
            .iter()
            .map(|p| match &p.value {
                Some(v) => format!("{}={}", p.name, v),
                None => p.name.clone(),
            })
            .collect();
        let mut modules_loaded = std::collections::BTreeSet::new();
        let mut modules_builtin = std::collections::BTreeSet::new();
        for (name, state) in &inv.kernel.modules {
            let n = name.replace('-', "_");
            match state {
                ModuleState::Loaded => {
                    modules_loaded.insert(n);
                }
                ModuleState::BuiltIn => {
                    modules_builtin.insert(n);
                }
                _ => {}
            }
        }
        let gpus = inv
            .gpus
            .devices
            .iter()
            .filter(|d| d.kind == GpuKind::Gpu)
            .map(|d| GpuFacts {
                address: d.address.to_string(),
                model: d.model.clone(),
                chip: d.chip.clone(),
                cc_capable: d.cc_capable,
                // The inventory does not query firmware; `cchost gpu cc query` does.
                cc_mode: None,
            })
            .collect();
        NodeFacts {
            cpu_vendor,
            tdx,
            snp,
            iommu,
            cmdline,
            modules_loaded,
            modules_builtin,
            vhost_vsock_device: inv.kernel.node("/dev/vhost-vsock"),
            kvm_device: inv.kernel.node("/dev/kvm"),
            virt: VirtFacts {
                sse4_2: flag("sse4_2"),
                vmx: flag("vmx"),
                svm: flag("svm"),
            },
            sgx: SgxFacts {
                cpu: flag("sgx") && flag("sgx_lc"),
                enclave_device: inv.kernel.node("/dev/sgx_enclave"),
                provision_device: inv.kernel.node("/dev/sgx_provision"),
            },
            gpus,
            cc_pending: None,
            duties: Duties::default(),
        }
    }
}
