//! Kernel modules for Kata's vsock channel: loaded now with the host's modprobe and
//! persisted in modules-load.d (docs/facts/cpu-tee.md#kernel-args: `vhost_vsock` is the host
//! side, `/dev/vhost-vsock`; coco-pattern also loads `vsock_loopback`).

use std::path::Path;

use crate::config::KernelConfig;
use crate::host::{HostError, HostRoot};

/// The modules the config asks for, in load order.
pub fn wanted(cfg: &KernelConfig) -> Vec<String> {
    let mut m = Vec::new();
    if cfg.vhost_vsock {
        m.push("vhost_vsock".to_string());
    }
    if cfg.vsock_loopback {
        m.push("vsock_loopback".to_string());
    }
    m
}

/// The modules-load.d file cchost writes: one module per line.
pub(crate) fn load_file_content(modules: &[String]) -> String {
    let mut s = String::new();
    for m in modules {
        s.push_str(m);
        s.push('\n');
    }
    s
}

/// Loads a module through the host's own modprobe.
pub fn load(host: &HostRoot, module: &str) -> Result<(), HostError> {
    host.modprobe(module)
}

/// The file's current content, `None` when absent.
pub(crate) fn read_load_file(host: &HostRoot, path: &Path) -> Result<Option<String>, HostError> {
    host.read_string_opt(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Module names as systemd-modules-load(8) reads the file (comments `#`/`;` and
    /// blanks skipped).
    fn parse_load_file(text: &str) -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .map(|l| l.replace('-', "_"))
            .collect()
    }

    #[test]
    fn load_file_round_trips() {
        let cfg = KernelConfig {
            vsock_loopback: true,
            ..Default::default()
        };
        let m = wanted(&cfg);
        assert_eq!(m, ["vhost_vsock", "vsock_loopback"]);
        let text = load_file_content(&m);
        assert_eq!(text, "vhost_vsock\nvsock_loopback\n");
        assert_eq!(parse_load_file(&format!("# x\n\n{text}; y\n")), m);
    }

    #[test]
    fn an_absent_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let p = Path::new("/etc/modules-load.d/cchost.conf");
        assert_eq!(read_load_file(&host, p).unwrap(), None);
    }
}
