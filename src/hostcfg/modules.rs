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
pub fn load_file_content(modules: &[String]) -> String {
    let mut s = String::new();
    for m in modules {
        s.push_str(m);
        s.push('\n');
    }
    s
}

/// Module names listed in a modules-load.d file (comments `#`/`;` and blanks skipped).
pub fn parse_load_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|l| l.replace('-', "_"))
        .collect()
}

/// Loads a module through the host's own modprobe.
pub fn load(host: &HostRoot, module: &str) -> Result<(), HostError> {
    host.modprobe(module)
}

/// The file's current content, `None` when absent.
pub fn read_load_file(host: &HostRoot, path: &Path) -> Result<Option<String>, HostError> {
    host.read_string_opt(path)
}

/// Writes the modules-load.d file (atomically, 0644).
pub fn write_load_file(host: &HostRoot, path: &Path, modules: &[String]) -> Result<(), HostError> {
    host.write_atomic(path, load_file_content(modules).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn file_is_written_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        let p = Path::new("/etc/modules-load.d/cchost.conf");
        assert_eq!(read_load_file(&host, p).unwrap(), None);
        write_load_file(&host, p, &["vhost_vsock".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/modules-load.d/cchost.conf")).unwrap(),
            "vhost_vsock\n"
        );
    }
}
