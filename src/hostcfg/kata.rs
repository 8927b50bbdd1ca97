//! The Kata drop-in that tells a TDX guest's QEMU where QGS listens:
//! `[hypervisor.qemu] tdx_quote_generation_service_socket_port` (Kata's
//! src/runtime/pkg/katautils/config.go `QgsPort`; the Rust runtime's `qgs_port`). Port 0
//! means QGS's unix socket, which Kata's QEMU command line names at the fixed path
//! `/var/run/tdx-qgs/qgs.socket`; any other value is the vsock port QGS listens on
//! (host CID 2). It must agree with `[dcap] transport`, or every quote request of every
//! TD times out. coco-pattern ships the same file as a MachineConfig
//! (charts/all/baremetal/templates/vsock-mco.yaml, `96-kata-kernel-config`).

use std::path::{Path, PathBuf};

use crate::config::{DcapConfig, KataConfig, QgsTransport};

/// The file name cchost owns in each `config.d` directory. No extension, as the
/// coco-pattern file Kata is known to read.
pub(crate) const DROPIN_NAME: &str = "96-cchost-qgs";

/// The unix socket path Kata's QEMU uses when the port is 0.
pub(crate) const KATA_QGS_SOCKET: &str = "/var/run/tdx-qgs/qgs.socket";

/// The port Kata must be given for this QGS configuration, or why none works.
pub(crate) fn qgs_port(dcap: &DcapConfig) -> Result<u32, String> {
    match dcap.transport {
        QgsTransport::Unix if dcap.socket == Path::new(KATA_QGS_SOCKET) => Ok(0),
        QgsTransport::Unix => Err(format!(
            "dcap.socket is {}, but Kata's QEMU only reaches QGS's unix socket at {KATA_QGS_SOCKET}; use that path or transport = \"vsock\"",
            dcap.socket.display()
        )),
        QgsTransport::Vsock if dcap.vsock_port == 0 => {
            Err("dcap.vsock_port is 0, which Kata reads as the unix socket".to_string())
        }
        QgsTransport::Vsock => Ok(dcap.vsock_port),
    }
}

/// The drop-in's text.
pub(crate) fn dropin_content(dcap: &DcapConfig) -> Result<String, String> {
    let port = qgs_port(dcap)?;
    Ok(format!(
        "# Written by cchost from [dcap] transport: 0 = QGS unix socket {KATA_QGS_SOCKET}, else its vsock port.\n[hypervisor.qemu]\ntdx_quote_generation_service_socket_port = {port}\n"
    ))
}

/// Where the drop-in goes: `<dir>/96-cchost-qgs` for each configured `config.d`.
pub(crate) fn dropin_paths(kata: &KataConfig) -> Vec<PathBuf> {
    kata.tdx_config_dirs
        .iter()
        .map(|d| d.join(DROPIN_NAME))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_follows_the_transport() {
        let mut d = DcapConfig::default();
        assert_eq!(qgs_port(&d), Ok(0));
        assert!(
            dropin_content(&d)
                .unwrap()
                .contains("[hypervisor.qemu]\ntdx_quote_generation_service_socket_port = 0\n")
        );
        d.transport = QgsTransport::Vsock;
        d.vsock_port = 4050;
        assert_eq!(qgs_port(&d), Ok(4050));
        d.vsock_port = 0;
        assert!(qgs_port(&d).is_err());
        d.transport = QgsTransport::Unix;
        d.socket = PathBuf::from("/run/qgs/other.socket");
        let e = qgs_port(&d).unwrap_err();
        assert!(e.contains(KATA_QGS_SOCKET), "{e}");
    }
}
