//! `cchost inventory` as text: every fact, and for every verdict its evidence and,
//! when negative, the reason and the remedy (which `check::remedy::annotate` fills in
//! from the blocker before `cchost inventory` renders).

use std::fmt::Write as _;

use super::verdict::{State, Verdict};
use super::{GpuKind, Inventory};

pub fn text(inv: &Inventory) -> String {
    let mut o = String::new();
    let w = &mut o;
    match &inv.cpu {
        Some(c) => line(
            w,
            "CPU",
            &format!(
                "{} ({}), {} logical CPUs",
                c.model_name.as_deref().unwrap_or("unknown model"),
                c.vendor_id,
                c.logical_cpus
            ),
        ),
        None => line(w, "CPU", "unreadable (see problems)"),
    }
    let k = &inv.kernel;
    line(
        w,
        "Kernel",
        k.release.as_deref().unwrap_or("release unknown"),
    );
    line(w, "Cmdline", &k.cmdline.raw);
    let mods: Vec<String> = k
        .modules
        .iter()
        .map(|(m, s)| format!("{m}={}", serde_plain(s)))
        .collect();
    line(w, "Modules", &mods.join(" "));
    let nodes: Vec<String> = k
        .device_nodes
        .iter()
        .map(|(p, present)| format!("{p}={}", if *present { "yes" } else { "no" }))
        .collect();
    line(w, "Devices", &nodes.join(" "));
    if !k.vfio_groups.is_empty() || !k.vfio_cdevs.is_empty() {
        line(
            w,
            "VFIO",
            &format!(
                "groups [{}], cdevs [{}]",
                k.vfio_groups.join(" "),
                k.vfio_cdevs.join(" ")
            ),
        );
    }
    line(
        w,
        "Kernel log",
        &if inv.kernel_log.readable {
            format!("{} relevant line(s)", inv.kernel_log.relevant.len())
        } else {
            "unreadable".to_string()
        },
    );
    for l in &inv.kernel_log.relevant {
        let _ = writeln!(w, "             | {l}");
    }
    w.push('\n');

    let t = &inv.tdx;
    verdict(w, "TDX", &t.verdict);
    if t.verdict.state != State::NotApplicable {
        line(
            w,
            "",
            &format!(
                "kvm_intel tdx={} tdx_host_platform={} module={} keys={} nohibernate={}",
                t.kvm_param.as_deref().unwrap_or("-"),
                t.host_platform_flag,
                serde_plain(&t.module),
                t.keys.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
                t.nohibernate
            ),
        );
    }
    let s = &inv.sev;
    verdict(w, "SEV", &s.sev);
    verdict(w, "SEV-ES", &s.sev_es);
    verdict(w, "SEV-SNP", &s.snp);
    if s.snp.state != State::NotApplicable {
        line(
            w,
            "",
            &format!(
                "/dev/sev={} asids={} es_asids={} firmware={}",
                s.dev_sev,
                s.asids.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
                s.es_asids
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.firmware.last().map(String::as_str).unwrap_or("-")
            ),
        );
    }
    verdict(w, "Arm CCA", &inv.cca.verdict);
    w.push('\n');

    let i = &inv.iommu;
    verdict(w, "IOMMU fw", &i.present);
    verdict(w, "IOMMU on", &i.enabled);
    let types: Vec<String> = i
        .group_types
        .iter()
        .map(|(t, n)| format!("{t}={n}"))
        .collect();
    line(
        w,
        "IOMMU",
        &format!(
            "mode={} groups={} [{}] iommufd={} args=[{}]",
            serde_plain(&i.mode),
            i.groups,
            types.join(" "),
            i.iommufd,
            i.cmdline_args.join(" ")
        ),
    );
    for warn in &i.cmdline_warnings {
        line(w, "", &format!("warning: {warn}"));
    }
    if let Some(l) = &i.default_domain_log {
        line(w, "", &format!("log: {l}"));
    }
    w.push('\n');

    if inv.gpus.devices.is_empty() {
        line(w, "GPUs", "none matched by [match]");
    }
    for d in &inv.gpus.devices {
        let kind = match d.kind {
            GpuKind::Gpu => "GPU",
            GpuKind::NvSwitch => "NVSwitch",
        };
        line(
            w,
            kind,
            &format!(
                "{} {:04x}:{:04x} {} chip={} arch={} cc={} ppcie={}",
                d.address,
                d.vendor,
                d.device,
                d.model.as_deref().unwrap_or("(unknown model)"),
                d.chip.as_deref().unwrap_or("-"),
                d.architecture
                    .map(|a| serde_plain(&a))
                    .unwrap_or_else(|| "-".into()),
                d.cc_capable,
                d.ppcie_capable
            ),
        );
        let group = match &d.iommu_group {
            None => "none".to_string(),
            Some(g) => {
                let others: Vec<String> = g
                    .others
                    .iter()
                    .map(|o| {
                        format!(
                            "{}({})",
                            o.address,
                            o.driver.as_deref().unwrap_or("no driver")
                        )
                    })
                    .collect();
                format!("{} [{}]", g.number, others.join(" "))
            }
        };
        line(
            w,
            "",
            &format!(
                "numa={} iommu_group={} driver={} override={} vfio={} ({}) boot_vga={}",
                d.numa_node
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                group,
                d.driver.as_deref().unwrap_or("-"),
                d.driver_override.as_deref().unwrap_or("-"),
                d.vfio.module,
                match &d.vfio.source {
                    super::modalias::VfioChoiceSource::Alias { pattern } => pattern.clone(),
                    super::modalias::VfioChoiceSource::Fallback { reason } =>
                        format!("fallback: {reason}"),
                },
                d.boot_vga
            ),
        );
        if !d.slot_functions.is_empty() || d.vfio_dev.is_some() {
            let f: Vec<String> = d
                .slot_functions
                .iter()
                .map(|s| s.address.to_string())
                .collect();
            line(
                w,
                "",
                &format!(
                    "slot functions [{}] vfio cdev {}",
                    f.join(" "),
                    d.vfio_dev.as_deref().unwrap_or("-")
                ),
            );
        }
    }
    let problems: Vec<_> = inv.problems.iter().chain(&inv.gpus.problems).collect();
    if !problems.is_empty() {
        w.push('\n');
        line(w, "Problems", &format!("{}", problems.len()));
        for p in problems {
            line(w, "", &format!("{}: {}", p.path.display(), p.message));
        }
    }
    o
}

fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

fn line(w: &mut String, label: &str, text: &str) {
    let _ = writeln!(w, "{label:<12} {text}");
}

fn verdict(w: &mut String, label: &str, v: &Verdict) {
    let state = match v.state {
        State::Yes => "yes",
        State::No => "NO",
        State::Unknown => "unknown",
        State::NotApplicable => "n/a",
    };
    match &v.reason {
        Some(r) => line(w, label, &format!("{state}: {r}")),
        None => line(w, label, state),
    }
    if v.state == State::NotApplicable {
        return;
    }
    for e in &v.evidence {
        line(w, "", &format!("  {}: {}", e.source, e.observed));
    }
    if let Some(r) = &v.remedy {
        line(w, "", &format!("  remedy: {r}"));
    }
}
