//! Config + facts + what the boot configuration and modules-load.d hold now -> the plan.
//! Pure: the same inputs give the same plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, GpuChoice, ProfileChoice};
use crate::hostcfg::args::ArgEdit;
use crate::hostcfg::boot::{BootConfig, BootStep, Mechanism};
use crate::hostcfg::modules;
use crate::hostcfg::profile::{ArgFinding, ArgProfile, Platform};
use crate::hostcfg::vfio_boot;
use crate::inventory::facts::{CpuVendor, NodeFacts};
use crate::labels::{self, NodeLabels};

/// What the planner reads besides config and facts.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    pub facts: NodeFacts,
    /// The boot configuration; `Err` carries why it could not be read.
    pub boot: Result<Option<BootConfig>, String>,
    /// The current content of the modules-load.d file cchost owns (None: absent).
    pub modules_file: Option<String>,
    /// Each Kata `config.d` drop-in path ([`crate::hostcfg::kata`]): its current
    /// content, and whether the runtime's directory (the parent of `config.d`) exists.
    pub kata_dropins: Vec<KataDropinState>,
    /// `[vfio] boot_bind`: the ids (`vendor:device`) of the devices vfio-pci is to take
    /// at boot, and the devices left out (`address: why`).
    pub boot_bind: BootBindState,
}

/// What `[vfio] boot_bind` reads from the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootBindState {
    pub ids: Vec<String>,
    pub skipped: Vec<String>,
    /// The current content of cchost's modprobe.d file (None: absent).
    pub modprobe_file: Option<String>,
}

/// A Kata drop-in as the host has it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KataDropinState {
    pub path: PathBuf,
    pub current: Option<String>,
    pub runtime_dir: bool,
}

/// One change `apply` makes, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Make the next boot get the profile's kernel arguments.
    KernelArgs {
        mechanism: Mechanism,
        evidence: String,
        add: Vec<String>,
        remove: Vec<String>,
        steps: Vec<BootStep>,
    },
    /// Load a kernel module now with the host's modprobe.
    LoadModule { module: String, why: String },
    /// Load the modules at every boot (systemd-modules-load).
    PersistModules {
        path: PathBuf,
        modules: Vec<String>,
        content: String,
    },
    /// Write a Kata `config.d` drop-in (the QGS port of TDX guests).
    KataDropin { path: PathBuf, content: String },
    /// Write the modprobe.d file of `[vfio] boot_bind` (vfio-pci's ids, loaded before
    /// nvidia).
    ModprobeFile {
        path: PathBuf,
        ids: Vec<String>,
        content: String,
    },
}

impl Action {
    /// One line for humans.
    pub fn summary(&self) -> String {
        match self {
            Action::KernelArgs {
                mechanism,
                add,
                remove,
                ..
            } => {
                let mut parts = Vec::new();
                if !add.is_empty() {
                    parts.push(format!("add {}", add.join(" ")));
                }
                if !remove.is_empty() {
                    parts.push(format!("remove {}", remove.join(" ")));
                }
                format!(
                    "kernel arguments ({}): {}",
                    mechanism.as_str(),
                    parts.join("; ")
                )
            }
            Action::LoadModule { module, .. } => format!("load module {module} (modprobe)"),
            Action::PersistModules { path, modules, .. } => {
                format!("write {} ({})", path.display(), modules.join(", "))
            }
            Action::KataDropin { path, .. } => {
                format!(
                    "write {} (Kata: where TDX guests reach QGS)",
                    path.display()
                )
            }
            Action::ModprobeFile { path, ids, .. } => format!(
                "write {} (vfio-pci takes {} at boot, before nvidia)",
                path.display(),
                ids.join(",")
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileChoiceMade {
    pub platform: Platform,
    pub gpu: bool,
    pub why: String,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub profile: ProfileChoiceMade,
    /// The profile's arguments, each with the fact it comes from.
    pub arguments: ArgProfile,
    pub actions: Vec<Action>,
    /// The running kernel lacks (or has forbidden) arguments: a reboot is needed after
    /// the boot configuration is right. cchost never reboots.
    pub reboot_required: bool,
    /// The running command line checked against the profile.
    pub running_findings: Vec<ArgFinding>,
    /// What else an operator should know (no mechanism found, an argument left alone ...).
    pub notes: Vec<String>,
    /// The labels `cchost run` keeps on the node (for review; not written by `apply`).
    pub labels: BTreeMap<String, String>,
    pub extended_resources: BTreeMap<String, String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The kernel profile `kernel.profile` and `kernel.gpu` ask for, `auto` resolved from the facts.
pub fn choose(cfg: &Config, f: &NodeFacts) -> ProfileChoiceMade {
    let (platform, why) = match cfg.kernel.profile {
        ProfileChoice::Tdx => (Platform::Tdx, "kernel.profile = \"tdx\"".to_string()),
        ProfileChoice::Snp => (Platform::Snp, "kernel.profile = \"snp\"".to_string()),
        ProfileChoice::None => (Platform::None, "kernel.profile = \"none\"".to_string()),
        ProfileChoice::Auto => {
            if f.tdx.enabled || (f.cpu_vendor == Some(CpuVendor::Intel) && f.tdx.capable) {
                (
                    Platform::Tdx,
                    "Intel CPU whose platform supports TDX (cpuinfo tdx_host_platform or kvm_intel tdx=Y)"
                        .to_string(),
                )
            } else if f.snp.enabled || (f.cpu_vendor == Some(CpuVendor::Amd) && f.snp.capable) {
                (
                    Platform::Snp,
                    "AMD CPU with SEV-SNP (cpuinfo sev_snp or kvm_amd sev_snp=Y)".to_string(),
                )
            } else {
                (
                    Platform::None,
                    "no TDX or SEV-SNP support found on this CPU (set kernel.profile to force one)"
                        .to_string(),
                )
            }
        }
    };
    let gpu = match cfg.kernel.gpu {
        GpuChoice::On => true,
        GpuChoice::Off => false,
        GpuChoice::Auto => !f.gpus.is_empty(),
    };
    ProfileChoiceMade { platform, gpu, why }
}

pub fn build(cfg: &Config, inputs: &PlanInputs) -> Plan {
    let f = &inputs.facts;
    let choice = choose(cfg, f);
    let profile = ArgProfile::new(choice.platform, choice.gpu, f.cpu_vendor, &cfg.kernel);
    let mut edit: ArgEdit = profile.edit(Some(f));
    let mut actions = Vec::new();
    let mut notes = Vec::new();
    let boot_bind = cfg.vfio.boot_bind && !inputs.boot_bind.ids.is_empty();
    if cfg.vfio.boot_bind {
        for s in &inputs.boot_bind.skipped {
            notes.push(format!("[vfio] boot_bind leaves {s}"));
        }
        if boot_bind {
            edit.add.push(vfio_boot::ids_arg(&inputs.boot_bind.ids));
        } else {
            notes.push("[vfio] boot_bind: no matched device for vfio-pci to take at boot".into());
        }
    }

    let running_ok = edit.satisfied_by(&f.cmdline);
    let running_findings = profile.findings(&f.cmdline, Some(f));
    let mut boot_pending = false;
    if !cfg.kernel.manage_args {
        if !running_ok {
            notes.push(
                "kernel.manage_args = false: the boot configuration is left alone; the running kernel's findings are listed"
                    .to_string(),
            );
        }
    } else {
        match &inputs.boot {
            Err(e) => notes.push(format!("boot configuration not readable: {e}")),
            Ok(None) => {
                if !running_ok {
                    notes.push(
                        "no boot-configuration mechanism found (rpm-ostree, grubby, /etc/kernel/cmdline, BLS entries, /etc/default/grub); set the arguments by hand or set kernel.mechanism"
                            .to_string(),
                    )
                }
            }
            Ok(Some(boot)) => match boot.change(&edit) {
                Err(e) => notes.push(format!("kernel arguments: {e}")),
                Ok(steps) if steps.is_empty() => {
                    if !running_ok {
                        boot_pending = true;
                        notes.push(format!(
                            "the boot configuration ({}) already has the arguments; the running kernel does not yet",
                            boot.mechanism.as_str()
                        ));
                    }
                }
                Ok(steps) => {
                    let (remove, add) = boot.diff(&edit);
                    boot_pending = true;
                    actions.push(Action::KernelArgs {
                        mechanism: boot.mechanism,
                        evidence: boot.evidence.clone(),
                        add,
                        remove,
                        steps,
                    });
                }
            },
        }
    }

    // Arguments in place but the TEE still off: the cause is elsewhere (BIOS, firmware,
    // the TDX module); `cchost check` says which.
    if running_ok {
        let off = match choice.platform {
            Platform::Tdx if !f.tdx.enabled => Some("TDX"),
            Platform::Snp if !f.snp.enabled => Some("SEV-SNP"),
            _ => None,
        };
        if let Some(tee) = off {
            notes.push(format!(
                "the running kernel has the {tee} arguments but {tee} is not enabled: the cause is not the command line; see `cchost check`"
            ));
        }
    }

    let wanted = modules::wanted(&cfg.kernel);
    for m in &wanted {
        if !f.module_active(m) {
            actions.push(Action::LoadModule {
                module: m.clone(),
                why: if m == "vhost_vsock" {
                    "the host end of Kata's vsock channel (/dev/vhost-vsock)".to_string()
                } else {
                    "kernel.vsock_loopback = true".to_string()
                },
            });
        }
    }
    if wanted.iter().any(|m| m == "vhost_vsock")
        && f.module_active("vhost_vsock")
        && !f.vhost_vsock_device
    {
        notes.push("vhost_vsock is loaded but /dev/vhost-vsock is missing (udev/devtmpfs?)".into());
    }
    let persist: Vec<String> = wanted
        .iter()
        .filter(|m| !f.modules_builtin.contains(*m))
        .cloned()
        .collect();
    if !persist.is_empty() {
        let content = modules::load_file_content(&persist);
        if inputs.modules_file.as_deref() != Some(content.as_str()) {
            actions.push(Action::PersistModules {
                path: cfg.kernel.modules_load_file.clone(),
                modules: persist,
                content,
            });
        }
    }

    if boot_bind {
        let ids = &inputs.boot_bind.ids;
        let content = vfio_boot::modprobe_content(ids, &vfio_boot::CLAIMED_FIRST_BY);
        if inputs.boot_bind.modprobe_file.as_deref() != Some(content.as_str()) {
            actions.push(Action::ModprobeFile {
                path: cfg.vfio.modprobe_file.clone(),
                ids: ids.clone(),
                content,
            });
            notes.push(format!(
                "[vfio] boot_bind: if nvidia is loaded from the initramfs, rebuild it (update-initramfs -u / dracut -f) so that {} is in it too; cchost does not rebuild initramfs images",
                cfg.vfio.modprobe_file.display()
            ));
        }
    }

    kata_dropins(cfg, inputs, choice.platform, &mut actions, &mut notes);

    let NodeLabels {
        labels,
        extended_resources,
        problems,
    } = labels::compute(f, &cfg.labels);
    notes.extend(problems);
    Plan {
        profile: choice,
        arguments: profile,
        actions,
        reboot_required: !running_ok && boot_pending,
        running_findings,
        notes,
        labels,
        extended_resources,
    }
}

/// The Kata QGS drop-ins on a TDX host with DCAP on: written where the runtime's
/// directory exists and the content differs; a QGS setting Kata cannot reach is a note.
fn kata_dropins(
    cfg: &Config,
    inputs: &PlanInputs,
    platform: Platform,
    actions: &mut Vec<Action>,
    notes: &mut Vec<String>,
) {
    use crate::config::DcapEnable;
    let dcap_on = match cfg.dcap.enable {
        DcapEnable::On => true,
        DcapEnable::Off => false,
        DcapEnable::Auto => inputs.facts.tdx.enabled,
    };
    if !cfg.kata.qgs_dropin || platform != Platform::Tdx || !dcap_on {
        return;
    }
    let content = match crate::hostcfg::kata::dropin_content(&cfg.dcap) {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("Kata QGS drop-in not written: {e}"));
            return;
        }
    };
    for d in &inputs.kata_dropins {
        if !d.runtime_dir {
            continue;
        }
        if d.current.as_deref() != Some(content.as_str()) {
            actions.push(Action::KataDropin {
                path: d.path.clone(),
                content: content.clone(),
            });
        }
    }
}

/// Reads what the planner needs from the host besides the facts: the boot
/// configuration and cchost's modules-load.d file.
pub fn gather(
    host: &crate::host::HostRoot,
    tools: &dyn crate::hostcfg::boot::HostTools,
    cfg: &Config,
    facts: NodeFacts,
) -> PlanInputs {
    let boot = if cfg.kernel.manage_args {
        crate::hostcfg::boot::read(host, tools, cfg.kernel.mechanism).map_err(|e| e.to_string())
    } else {
        Ok(None)
    };
    let modules_file = match modules::read_load_file(host, &cfg.kernel.modules_load_file) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the modules-load.d file");
            None
        }
    };
    let kata_dropins = crate::hostcfg::kata::dropin_paths(&cfg.kata)
        .into_iter()
        .map(|path| {
            let runtime_dir = path
                .parent()
                .and_then(Path::parent)
                .is_some_and(|d| host.kind_followed(d) == Some(crate::host::NodeKind::Dir));
            let current = host.read_string_opt(&path).ok().flatten();
            KataDropinState {
                path,
                current,
                runtime_dir,
            }
        })
        .collect();
    PlanInputs {
        facts,
        boot,
        modules_file,
        kata_dropins,
        boot_bind: gather_boot_bind(host, cfg),
    }
}

/// `[vfio] boot_bind`: the devices `gpu bind --all` would move whose vfio driver is
/// plain vfio-pci (a variant driver such as nvgrace-gpu-vfio-pci is not what
/// `vfio-pci.ids` loads), and cchost's modprobe.d file.
fn gather_boot_bind(host: &crate::host::HostRoot, cfg: &Config) -> BootBindState {
    if !cfg.vfio.boot_bind {
        return BootBindState::default();
    }
    let inv = crate::inventory::gpu::discover_gpus(host, &cfg.matching);
    let mut ids = Vec::new();
    let mut skipped = Vec::new();
    for d in &inv.devices {
        if d.kind != crate::inventory::GpuKind::Gpu && !cfg.vfio.bind_nvswitches {
            continue;
        }
        if d.vfio.module.replace('-', "_") == "vfio_pci" {
            ids.push((d.vendor, d.device));
        } else {
            skipped.push(format!(
                "{} out: its vfio driver is {}, not vfio-pci (bind it after boot with `cchost gpu bind`)",
                d.address, d.vfio.module
            ));
        }
    }
    let modprobe_file = match host.read_string_opt(&cfg.vfio.modprobe_file) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the modprobe.d file");
            None
        }
    };
    BootBindState {
        ids: vfio_boot::id_list(&ids),
        skipped,
        modprobe_file,
    }
}
