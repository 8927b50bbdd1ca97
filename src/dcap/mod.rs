//! Intel DCAP helpers on TDX hosts: configure, probe and keep running the Quote
//! Generation Service (QGS) and the chain behind it (QCNL → PCCS → Intel PCS).
//!
//! - [`proto`]: the QGS wire protocol (framing, bounded parser).
//! - [`qgs`]: a client over the unix socket or vsock.
//! - [`files`]: `/etc/qgs.conf` and the QCNL config (render, read back, atomic write).
//! - [`pccs`]: the PCCS HTTPS probe that tells PCCS's answers apart.
//! - [`collateral`]: `nextUpdate` expiry of TCB info / QE identity.
//! - [`status`]: the chain QGS → PCCS as a list of verdicts (`cchost dcap status`; the
//!   DCAP checks of `cchost check`, in `check::dcap`, evaluate the same report).
//! - [`supervisor`]: run QGS as a child, or drive `qgsd.service` over D-Bus ([`systemd`]).

pub mod collateral;
pub mod configure;
pub mod files;
pub mod pccs;
pub mod proto;
pub mod qgs;
pub mod status;
pub mod supervisor;
pub mod systemd;

use std::path::PathBuf;

use crate::host::HostError;

#[derive(Debug, thiserror::Error)]
pub enum DcapError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{}: {what}", path.display())]
    Malformed { path: PathBuf, what: String },
    /// The message never contains the secret itself.
    #[error("secret: {what}")]
    Secret { what: String },
    #[error("{0}")]
    Config(String),
    #[error("QGS: {0}")]
    Qgs(#[from] qgs::QgsError),
    #[error("systemd: {0}")]
    Systemd(#[from] zbus::Error),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Host path of the kvm_intel TDX switch; on as `inventory::modules::param_on` says
/// (docs/facts/cpu-tee.md#kvm-params).
pub(crate) const KVM_INTEL_TDX: &str = "/sys/module/kvm_intel/parameters/tdx";

/// Is TDX enabled on this host? Returns the verdict and the evidence line.
pub(crate) fn tdx_enabled(host: &crate::host::HostRoot) -> (bool, String) {
    match host.read_string_opt(KVM_INTEL_TDX) {
        Ok(Some(v)) if crate::inventory::modules::param_on(&v) => {
            (true, format!("{KVM_INTEL_TDX} = {}", v.trim()))
        }
        Ok(Some(v)) => (false, format!("{KVM_INTEL_TDX} = {:?}", v.trim())),
        Ok(None) => (
            false,
            format!("{KVM_INTEL_TDX} is missing (kvm_intel not loaded, or no TDX support)"),
        ),
        Err(e) => (false, e.to_string()),
    }
}
