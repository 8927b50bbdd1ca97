//! A verdict: yes / no / unknown, the evidence it was made from, and for a negative
//! one the reason and what stands in the way ([`Blocker`]). The inventory observes; what
//! to do about a blocker is the checks' to say (`check::remedy`).

use serde::{Deserialize, Serialize};

use super::cpuinfo::CpuVendor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Yes,
    No,
    /// The host does not let us tell (no interface to probe, unreadable evidence).
    Unknown,
    /// The question does not apply (SNP on an Intel CPU).
    NotApplicable,
}

/// A CPU TEE, or one level of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tee {
    Tdx,
    Sev,
    SevEs,
    SevSnp,
}

/// What stands in the way of a `yes`: a fact about the host, not advice. Every `no`
/// verdict has one; `check::remedy` turns it into what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// This is a virtual machine (cpuinfo flag `hypervisor`); a TEE host is bare metal.
    VirtualMachine,
    /// `module` is neither loaded nor built in; `args` are the parameters the verdict
    /// needs it loaded with (empty: none).
    ModuleNotLoaded {
        module: &'static str,
        args: &'static str,
    },
    /// The running kernel has no host support for `tee` (kvm's parameter is missing).
    KernelLacks { tee: Tee },
    /// The CPU does not report `tee`: off in the BIOS, or not supported.
    BiosOff { tee: Tee },
    /// Hibernation is enabled (`nohibernate` missing), so TDX refuses to initialise.
    HibernationOn,
    /// `tee` failed to initialise (the TDX module, or the SEV firmware), per the kernel log.
    InitFailed { tee: Tee },
    /// No TDX module is loaded (the SEAM loader found none).
    TdxModuleAbsent,
    /// `kvm_intel.tdx=1` is on the command line, yet TDX is off: initialisation failed
    /// for a reason the kernel log does not give (or could not be read).
    TdxAskedButOff,
    /// The kvm module `module` has its parameter `param` off.
    ParamOff {
        module: &'static str,
        param: &'static str,
    },
    /// The IOMMU is in passthrough: asked for by `argument` on the kernel command line,
    /// or (`None`) the kernel's default domain is identity without one.
    IommuPassthrough { argument: Option<String> },
    /// The IOMMU is switched off by `argument` on the kernel command line.
    IommuOff { argument: String },
    /// Firmware describes an IOMMU, but the kernel did not enable it (no IOMMU groups).
    IommuNotEnabled { vendor: Option<CpuVendor> },
    /// Firmware describes no IOMMU (no ACPI DMAR/IVRS/IORT table).
    NoIommuTables { vendor: Option<CpuVendor> },
    /// The CPU has no Realm Management Extension (no CPU TEE at all on this Arm core).
    NoRme,
}

/// One observation: where it was seen and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// A host path (`/sys/module/kvm_intel/parameters/tdx`), `kernel log` or `cmdline`.
    pub source: String,
    pub observed: String,
}

impl Evidence {
    pub fn new(source: impl Into<String>, observed: impl Into<String>) -> Self {
        Evidence {
            source: source.into(),
            observed: observed.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub state: State,
    pub evidence: Vec<Evidence>,
    /// Why the answer is not `yes` (always set unless `state` is `yes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What stands in the way (always set when `state` is `no`). Not serialized: the
    /// JSON carries the remedy text instead, so an inventory read back from JSON has none.
    #[serde(skip)]
    pub blocker: Option<Blocker>,
    /// What to do about it. The inventory never sets it: `check::remedy::annotate` fills
    /// it from `blocker` for `cchost inventory` (text and JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Verdict {
    pub(crate) fn yes(evidence: Vec<Evidence>) -> Self {
        Verdict {
            state: State::Yes,
            evidence,
            reason: None,
            blocker: None,
            remedy: None,
        }
    }

    pub(crate) fn no(evidence: Vec<Evidence>, reason: impl Into<String>, blocker: Blocker) -> Self {
        Verdict {
            state: State::No,
            evidence,
            reason: Some(reason.into()),
            blocker: Some(blocker),
            remedy: None,
        }
    }

    pub(crate) fn unknown(evidence: Vec<Evidence>, reason: impl Into<String>) -> Self {
        Verdict {
            state: State::Unknown,
            evidence,
            reason: Some(reason.into()),
            blocker: None,
            remedy: None,
        }
    }

    pub(crate) fn not_applicable(evidence: Vec<Evidence>, reason: impl Into<String>) -> Self {
        Verdict {
            state: State::NotApplicable,
            evidence,
            reason: Some(reason.into()),
            blocker: None,
            remedy: None,
        }
    }

    pub fn is_yes(&self) -> bool {
        self.state == State::Yes
    }
}
