//! What to do about what stands in the way. The inventory says what blocks a verdict
//! ([`Blocker`], a fact); this file alone says what to do about it, so one cause reads
//! as one fix in `cchost check` and `cchost inventory` alike.

use crate::inventory::{Blocker, CpuVendor, Inventory, Tee, Verdict};

/// The remedy for `b` on this host (the text can depend on other facts: whether the
/// kernel loads modules at all).
pub fn remedy(b: &Blocker, inv: &Inventory) -> String {
    match b {
        Blocker::VirtualMachine => "run cchost on the bare-metal host".into(),
        Blocker::ModuleNotLoaded { module, args } if inv.kernel.modules_supported => {
            if args.is_empty() {
                format!("modprobe {module}")
            } else {
                format!("modprobe {module} {args}")
            }
        }
        Blocker::ModuleNotLoaded { module, .. } => {
            format!("this kernel cannot load modules: boot one with {module} built in or loadable")
        }
        Blocker::KernelLacks { tee: Tee::Tdx } => "boot a TDX host kernel (Linux 6.16+ with CONFIG_INTEL_TDX_HOST, or a distribution TDX kernel)".into(),
        Blocker::KernelLacks {
            tee: Tee::Sev | Tee::SevEs,
        } => "boot a kernel built with CONFIG_KVM_AMD_SEV".into(),
        Blocker::KernelLacks { tee: Tee::SevSnp } => {
            "boot Linux 6.11 or newer (SEV-SNP host support) built with CONFIG_KVM_AMD_SEV".into()
        }
        Blocker::BiosOff { tee: Tee::Tdx } => {
            "enable TME, TME-MT, TDX, the SEAM loader and a TME-MT/TDX key split > 0 in the BIOS"
                .into()
        }
        Blocker::BiosOff {
            tee: Tee::Sev | Tee::SevEs,
        } => "enable SMEE and SEV (with ASIDs for SEV-ES) in the BIOS".into(),
        Blocker::BiosOff { tee: Tee::SevSnp } => "enable SMEE, SEV-SNP, SNP memory coverage and the IOMMU in the BIOS (EPYC 7003 or newer)".into(),
        Blocker::HibernationOn => "add nohibernate to the kernel command line and reboot".into(),
        Blocker::InitFailed { tee: Tee::Tdx } => "update the TDX module (a BIOS/firmware update); error -5 usually means the module is too old".into(),
        Blocker::InitFailed {
            tee: Tee::Sev | Tee::SevEs,
        } => "update the SEV firmware (usually a BIOS update) and check the kernel log".into(),
        Blocker::InitFailed { tee: Tee::SevSnp } => "update the SEV firmware (SNP needs 1.51 or newer; usually a BIOS update) and check the kernel log".into(),
        Blocker::TdxModuleAbsent => {
            "enable the SEAM loader in the BIOS and install a TDX module (BIOS/firmware update)"
                .into()
        }
        // kvm_intel turns its tdx parameter back to N when TDX initialisation fails
        // (arch/x86/kvm/vmx/tdx.c, tdx_bringup): asking for tdx=1 again is no remedy.
        Blocker::TdxAskedButOff => "read the kernel log as root (`dmesg | grep -i tdx`) for the reason TDX did not initialise, then fix that (BIOS TDX settings, TDX module)".into(),
        Blocker::ParamOff { module, param } => format!(
            "add {module}.{param}=1 to the kernel command line (or `options {module} {param}=1` in /etc/modprobe.d/) and reboot"
        ),
        Blocker::IommuPassthrough {
            argument: Some(argument),
        }
        | Blocker::IommuOff { argument } => {
            format!("remove {argument} from the kernel command line and reboot")
        }
        Blocker::IommuPassthrough { argument: None } => "boot with translated DMA: remove iommu=pt / iommu.passthrough=1 and rebuild the kernel without CONFIG_IOMMU_DEFAULT_PASSTHROUGH".into(),
        Blocker::IommuNotEnabled {
            vendor: Some(CpuVendor::Intel),
        } => "add intel_iommu=on to the kernel command line and reboot".into(),
        Blocker::IommuNotEnabled { .. } => "check the kernel log for AMD-Vi/DMAR errors; the kernel needs CONFIG_AMD_IOMMU / CONFIG_INTEL_IOMMU".into(),
        Blocker::NoIommuTables {
            vendor: Some(CpuVendor::Amd),
        } => "enable the IOMMU (AMD-Vi) in the BIOS".into(),
        Blocker::NoIommuTables {
            vendor: Some(CpuVendor::Intel),
        } => "enable VT-d in the BIOS".into(),
        Blocker::NoIommuTables { .. } => {
            "enable the IOMMU (VT-d / AMD-Vi / SMMU) in the BIOS".into()
        }
        Blocker::NoRme => "confidential containers need an Intel TDX, AMD SEV-SNP or RME-capable Arm host; this one can run Kata without a TEE only".into(),
    }
}

/// The remedy for a verdict (`None` when nothing blocks it).
pub fn of_verdict(v: &Verdict, inv: &Inventory) -> Option<String> {
    v.blocker.as_ref().map(|b| remedy(b, inv))
}

/// Fills every verdict's `remedy` from its blocker, for `cchost inventory` to show.
pub fn annotate(inv: &mut Inventory) {
    let texts = inv.verdicts().map(|(_, v)| of_verdict(v, inv));
    for (v, text) in inv.verdicts_mut().into_iter().zip(texts) {
        v.remedy = text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Profile, Report};
    use crate::config::Config;
    use crate::fixture::Tree;

    /// An inventory of an empty host, with `modules_supported` as given.
    fn inv(modules_supported: bool) -> Inventory {
        let mut i = Inventory::collect(&Tree::new().host, &Config::default());
        i.kernel.modules_supported = modules_supported;
        i
    }

    /// The variant's number. The match has no wildcard, so a new variant does not
    /// compile until it is numbered here, and then [`every_blocker_has_a_remedy`] fails
    /// until an example of it is in [`examples`].
    fn variant(b: &Blocker) -> usize {
        match b {
            Blocker::VirtualMachine => 0,
            Blocker::ModuleNotLoaded { .. } => 1,
            Blocker::KernelLacks { .. } => 2,
            Blocker::BiosOff { .. } => 3,
            Blocker::HibernationOn => 4,
            Blocker::InitFailed { .. } => 5,
            Blocker::TdxModuleAbsent => 6,
            Blocker::TdxAskedButOff => 7,
            Blocker::ParamOff { .. } => 8,
            Blocker::IommuPassthrough { .. } => 9,
            Blocker::IommuOff { .. } => 10,
            Blocker::IommuNotEnabled { .. } => 11,
            Blocker::NoIommuTables { .. } => 12,
            Blocker::NoRme => 13,
        }
    }
    const VARIANTS: usize = 14;

    const TEES: [Tee; 4] = [Tee::Tdx, Tee::Sev, Tee::SevEs, Tee::SevSnp];
    const VENDORS: [Option<CpuVendor>; 4] = [
        Some(CpuVendor::Intel),
        Some(CpuVendor::Amd),
        Some(CpuVendor::Arm),
        None,
    ];

    /// Every variant, with every value its text depends on.
    fn examples() -> Vec<Blocker> {
        let mut all = vec![
            Blocker::VirtualMachine,
            Blocker::ModuleNotLoaded {
                module: "kvm_intel",
                args: "tdx=1",
            },
            Blocker::ModuleNotLoaded {
                module: "kvm_amd",
                args: "",
            },
            Blocker::HibernationOn,
            Blocker::TdxModuleAbsent,
            Blocker::TdxAskedButOff,
            Blocker::ParamOff {
                module: "kvm_intel",
                param: "tdx",
            },
            Blocker::ParamOff {
                module: "kvm_amd",
                param: "sev_snp",
            },
            Blocker::IommuPassthrough {
                argument: Some("iommu.passthrough=1".into()),
            },
            Blocker::IommuPassthrough { argument: None },
            Blocker::IommuOff {
                argument: "amd_iommu=off".into(),
            },
            Blocker::NoRme,
        ];
        for tee in TEES {
            all.push(Blocker::KernelLacks { tee });
            all.push(Blocker::BiosOff { tee });
            all.push(Blocker::InitFailed { tee });
        }
        for vendor in VENDORS {
            all.push(Blocker::IommuNotEnabled { vendor });
            all.push(Blocker::NoIommuTables { vendor });
        }
        all
    }

    #[test]
    fn every_blocker_has_a_remedy() {
        let mut seen = [false; VARIANTS];
        for modules in [true, false] {
            let inv = inv(modules);
            for b in examples() {
                seen[variant(&b)] = true;
                let r = remedy(&b, &inv);
                assert!(!r.trim().is_empty(), "{b:?}");
                assert!(!r.contains('\n'), "one line: {b:?}");
            }
        }
        assert!(
            seen.iter().all(|s| *s),
            "a variant has no example: {seen:?}"
        );
    }

    /// The texts the inventory and the checks gave before the remedies moved here,
    /// word for word.
    #[test]
    fn texts_as_before() {
        let on = inv(true);
        let off = inv(false);
        let cases: Vec<(Blocker, &Inventory, &str)> = vec![
            (
                Blocker::VirtualMachine,
                &on,
                "run cchost on the bare-metal host",
            ),
            (
                Blocker::ModuleNotLoaded {
                    module: "kvm_intel",
                    args: "tdx=1",
                },
                &on,
                "modprobe kvm_intel tdx=1",
            ),
            (
                Blocker::ModuleNotLoaded {
                    module: "vhost_vsock",
                    args: "",
                },
                &on,
                "modprobe vhost_vsock",
            ),
            (
                Blocker::ModuleNotLoaded {
                    module: "kvm_intel",
                    args: "tdx=1",
                },
                &off,
                "this kernel cannot load modules: boot one with kvm_intel built in or loadable",
            ),
            (
                Blocker::KernelLacks { tee: Tee::Tdx },
                &on,
                "boot a TDX host kernel (Linux 6.16+ with CONFIG_INTEL_TDX_HOST, or a distribution TDX kernel)",
            ),
            (
                Blocker::KernelLacks { tee: Tee::SevEs },
                &on,
                "boot a kernel built with CONFIG_KVM_AMD_SEV",
            ),
            (
                Blocker::KernelLacks { tee: Tee::SevSnp },
                &on,
                "boot Linux 6.11 or newer (SEV-SNP host support) built with CONFIG_KVM_AMD_SEV",
            ),
            (
                Blocker::BiosOff { tee: Tee::Tdx },
                &on,
                "enable TME, TME-MT, TDX, the SEAM loader and a TME-MT/TDX key split > 0 in the BIOS",
            ),
            (
                Blocker::BiosOff { tee: Tee::Sev },
                &on,
                "enable SMEE and SEV (with ASIDs for SEV-ES) in the BIOS",
            ),
            (
                Blocker::BiosOff { tee: Tee::SevSnp },
                &on,
                "enable SMEE, SEV-SNP, SNP memory coverage and the IOMMU in the BIOS (EPYC 7003 or newer)",
            ),
            (
                Blocker::HibernationOn,
                &on,
                "add nohibernate to the kernel command line and reboot",
            ),
            (
                Blocker::InitFailed { tee: Tee::Tdx },
                &on,
                "update the TDX module (a BIOS/firmware update); error -5 usually means the module is too old",
            ),
            (
                Blocker::InitFailed { tee: Tee::SevEs },
                &on,
                "update the SEV firmware (usually a BIOS update) and check the kernel log",
            ),
            (
                Blocker::InitFailed { tee: Tee::SevSnp },
                &on,
                "update the SEV firmware (SNP needs 1.51 or newer; usually a BIOS update) and check the kernel log",
            ),
            (
                Blocker::TdxModuleAbsent,
                &on,
                "enable the SEAM loader in the BIOS and install a TDX module (BIOS/firmware update)",
            ),
            (
                Blocker::TdxAskedButOff,
                &on,
                "read the kernel log as root (`dmesg | grep -i tdx`) for the reason TDX did not initialise, then fix that (BIOS TDX settings, TDX module)",
            ),
            (
                Blocker::ParamOff {
                    module: "kvm_intel",
                    param: "tdx",
                },
                &on,
                "add kvm_intel.tdx=1 to the kernel command line (or `options kvm_intel tdx=1` in /etc/modprobe.d/) and reboot",
            ),
            (
                Blocker::ParamOff {
                    module: "kvm_amd",
                    param: "sev",
                },
                &on,
                "add kvm_amd.sev=1 to the kernel command line (or `options kvm_amd sev=1` in /etc/modprobe.d/) and reboot",
            ),
            (
                Blocker::IommuPassthrough {
                    argument: Some("iommu=pt".into()),
                },
                &on,
                "remove iommu=pt from the kernel command line and reboot",
            ),
            (
                Blocker::IommuPassthrough { argument: None },
                &on,
                "boot with translated DMA: remove iommu=pt / iommu.passthrough=1 and rebuild the kernel without CONFIG_IOMMU_DEFAULT_PASSTHROUGH",
            ),
            (
                Blocker::IommuOff {
                    argument: "intel_iommu=off".into(),
                },
                &on,
                "remove intel_iommu=off from the kernel command line and reboot",
            ),
            (
                Blocker::IommuNotEnabled {
                    vendor: Some(CpuVendor::Intel),
                },
                &on,
                "add intel_iommu=on to the kernel command line and reboot",
            ),
            (
                Blocker::IommuNotEnabled {
                    vendor: Some(CpuVendor::Amd),
                },
                &on,
                "check the kernel log for AMD-Vi/DMAR errors; the kernel needs CONFIG_AMD_IOMMU / CONFIG_INTEL_IOMMU",
            ),
            (
                Blocker::NoIommuTables {
                    vendor: Some(CpuVendor::Amd),
                },
                &on,
                "enable the IOMMU (AMD-Vi) in the BIOS",
            ),
            (
                Blocker::NoIommuTables {
                    vendor: Some(CpuVendor::Intel),
                },
                &on,
                "enable VT-d in the BIOS",
            ),
            (
                Blocker::NoIommuTables { vendor: None },
                &on,
                "enable the IOMMU (VT-d / AMD-Vi / SMMU) in the BIOS",
            ),
            (
                Blocker::NoRme,
                &on,
                "confidential containers need an Intel TDX, AMD SEV-SNP or RME-capable Arm host; this one can run Kata without a TEE only",
            ),
        ];
        for (b, inv, want) in cases {
            assert_eq!(remedy(&b, inv), want, "{b:?}");
        }
    }

    /// The substrings the inventory's own tests held the remedy text to, before it moved.
    #[test]
    fn remedies_say_what_the_inventory_tests_said() {
        let inv = inv(true);
        let says = |b: Blocker, what: &str| {
            let r = remedy(&b, &inv);
            assert!(r.contains(what), "{b:?}: {r}");
        };
        says(Blocker::InitFailed { tee: Tee::SevSnp }, "1.51");
        says(
            Blocker::ParamOff {
                module: "kvm_amd",
                param: "sev",
            },
            "kvm_amd.sev=1",
        );
        says(
            Blocker::ParamOff {
                module: "kvm_amd",
                param: "sev_snp",
            },
            "kvm_amd.sev_snp=1",
        );
        says(
            Blocker::ParamOff {
                module: "kvm_intel",
                param: "tdx",
            },
            "kvm_intel.tdx=1",
        );
        says(Blocker::BiosOff { tee: Tee::SevSnp }, "BIOS");
        says(Blocker::NoIommuTables { vendor: None }, "BIOS");
        says(Blocker::HibernationOn, "nohibernate");
        says(
            Blocker::InitFailed { tee: Tee::Tdx },
            "update the TDX module",
        );
        says(
            Blocker::IommuPassthrough {
                argument: Some("iommu=pt".into()),
            },
            "remove iommu=pt",
        );
        says(
            Blocker::IommuNotEnabled {
                vendor: Some(CpuVendor::Intel),
            },
            "intel_iommu=on",
        );
        says(
            Blocker::IommuOff {
                argument: "intel_iommu=off".into(),
            },
            "remove intel_iommu=off",
        );
    }

    /// Issue 13 item 8, end to end: with kvm_intel.tdx=1 already on the command line
    /// and TDX still off, neither `cchost inventory` nor `cchost check` says "add
    /// kvm_intel.tdx=1".
    #[test]
    fn tdx_asked_for_but_off_never_says_add_it() {
        let t = Tree::new();
        t.file(
            "/proc/cpuinfo",
            "processor : 0\nvendor_id : GenuineIntel\nflags : vmx tdx_host_platform\n",
        )
        .file("/proc/cmdline", "nohibernate kvm_intel.tdx=1\n")
        .file("/proc/modules", "kvm_intel 1 0 - Live 0x0\n")
        .file("/sys/module/kvm_intel/parameters/tdx", "N\n");
        let mut inv = Inventory::collect(&t.host, &Config::default());
        assert_eq!(inv.tdx.verdict.blocker, Some(Blocker::TdxAskedButOff));
        let report = Report::new(&inv, &Config::default(), Profile::Tdx);
        let check = report
            .find("tdx.kvm")
            .and_then(|n| n.outcome.remedy.clone())
            .unwrap_or_default();
        annotate(&mut inv);
        let shown = inv.tdx.verdict.remedy.clone().unwrap_or_default();
        assert_eq!(shown, check);
        assert!(shown.contains("dmesg"), "{shown}");
        assert!(!shown.contains("add kvm_intel.tdx=1"), "{shown}");
    }

    /// A kernel that cannot load modules is never told to modprobe: the TDX kernel
    /// check, the /dev/kvm check and the inventory give the one remedy for the one cause
    /// (before, `tdx.kernel` said `modprobe kvm_intel tdx=1` there).
    #[test]
    fn no_module_loading_means_no_modprobe() {
        let t = Tree::new();
        t.file(
            "/proc/cpuinfo",
            "processor : 0\nvendor_id : GenuineIntel\nflags : vmx tdx_host_platform\n",
        )
        .file("/proc/cmdline", "nohibernate\n");
        let mut inv = Inventory::collect(&t.host, &Config::default());
        assert!(!inv.kernel.modules_supported);
        let report = Report::new(&inv, &Config::default(), Profile::Tdx);
        let fix = |id: &str| {
            report
                .find(id)
                .and_then(|n| n.outcome.remedy.clone())
                .unwrap_or_else(|| panic!("{id} has no remedy"))
        };
        let want = "this kernel cannot load modules: boot one with kvm_intel built in or loadable";
        assert_eq!(fix("tdx.kernel"), want);
        assert_eq!(fix("kvm"), want);
        annotate(&mut inv);
        assert_eq!(inv.tdx.verdict.remedy.as_deref(), Some(want));
    }

    #[test]
    fn annotate_fills_every_no_and_nothing_else() {
        let mut inv = inv(true);
        annotate(&mut inv);
        for (name, v) in inv.verdicts() {
            assert_eq!(v.remedy.is_some(), v.blocker.is_some(), "{name}: {v:?}");
        }
        // An empty host: no IOMMU tables, no groups.
        assert_eq!(
            inv.iommu.enabled.remedy.as_deref(),
            Some("enable the IOMMU (VT-d / AMD-Vi / SMMU) in the BIOS")
        );
    }
}
