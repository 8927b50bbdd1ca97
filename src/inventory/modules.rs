//! Kernel modules: loaded (`/proc/modules`), built in
//! (`/lib/modules/<release>/modules.builtin`) and their parameters
//! (`/sys/module/<name>/parameters/<param>`).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::{HostError, HostRoot};

pub(crate) const PROC_MODULES: &str = "/proc/modules";

/// Module names compare with `-` and `_` equal; the kernel reports `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Names of loaded modules. Each line is `name size refcount deps state address`.
pub fn parse_proc_modules(path: &Path, text: &str) -> Result<BTreeSet<String>, HostError> {
    let mut out = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(name), Some(size)) = (it.next(), it.next()) else {
            return Err(HostError::malformed(
                path,
                format!("line {}: expected `name size …`, got {line:?}", i + 1),
            ));
        };
        if size.parse::<u64>().is_err() {
            return Err(HostError::malformed(
                path,
                format!("line {}: module size {size:?} is not a number", i + 1),
            ));
        }
        out.insert(normalize(name));
    }
    Ok(out)
}

/// Names of built-in modules. Each line is a path like `kernel/net/vmw_vsock/vsock.ko`.
pub fn parse_modules_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let file = l.trim().rsplit('/').next()?;
            let name = file.strip_suffix(".ko")?;
            (!name.is_empty()).then(|| normalize(name))
        })
        .collect()
}

/// A module parameter as read from sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleParam {
    pub path: String,
    pub raw: String,
}

impl ModuleParam {
    /// Is this switch on? See [`param_on`].
    pub(crate) fn is_on(&self) -> bool {
        param_on(&self.raw)
    }
}

/// Is a module parameter that is a switch (kvm_intel `tdx`, kvm_amd `sev`, `sev_es`,
/// `sev_snp`) on, given what its sysfs file holds? The one answer cchost uses.
///
/// The file holds what the kernel's getter prints (kernel/params.c): `param_get_bool`
/// prints `Y` or `N`, `param_get_int` the number (kvm_amd's `sev` and `sev_es` were `int`
/// parameters in older kernels, arch/x86/kvm/svm/svm.c), each followed by a newline. So
/// a switch is on exactly when it reads `Y` or `1`; the kernel never prints `y`
/// (docs/facts/cpu-tee.md#kvm-params).
pub(crate) fn param_on(raw: &str) -> bool {
    matches!(raw.strip_suffix('\n').unwrap_or(raw), "Y" | "1")
}

/// What the kernel prints for a switch parameter, on or off (see [`param_on`]).
fn is_switch_value(raw: &str) -> bool {
    matches!(raw.strip_suffix('\n').unwrap_or(raw), "Y" | "N" | "1" | "0")
}

/// Reads `/sys/module/<module>/parameters/<param>`; `Ok(None)` when the module is not
/// loaded or has no such parameter.
pub(crate) fn read_param(
    host: &HostRoot,
    module: &str,
    param: &str,
) -> Result<Option<ModuleParam>, HostError> {
    let path = format!("/sys/module/{module}/parameters/{param}");
    Ok(host
        .read_attr_opt(&path)?
        .map(|raw| ModuleParam { path, raw }))
}

/// Reads a boolean parameter and insists that it looks like one.
pub(crate) fn read_bool_param(
    host: &HostRoot,
    module: &str,
    param: &str,
) -> Result<Option<ModuleParam>, HostError> {
    match read_param(host, module, param)? {
        Some(p) if is_switch_value(&p.raw) => Ok(Some(p)),
        Some(p) => Err(HostError::malformed(
            &p.path,
            format!("expected a boolean (Y/N/1/0), got {:?}", p.raw),
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_is_on_exactly_as_the_kernel_prints_it() {
        // param_get_bool: "Y\n" / "N\n"; param_get_int (older kvm_amd sev): "1\n" / "0\n".
        for on in ["Y\n", "Y", "1\n", "1"] {
            assert!(param_on(on), "{on:?}");
        }
        for off in ["N\n", "N", "0\n", "0", "y", "yes", " Y", "Y\n\n", "", "2"] {
            assert!(!param_on(off), "{off:?}");
        }
    }

    #[test]
    fn proc_modules() {
        let t = "vhost_vsock 24576 0 - Live 0x0000000000000000\nkvm_intel 487424 0 - Live 0x0\nkvm 1409024 1 kvm_intel, Live 0x0\n";
        let m = parse_proc_modules(Path::new(PROC_MODULES), t).unwrap();
        assert!(m.contains("vhost_vsock") && m.contains("kvm"));
        assert_eq!(m.len(), 3);
        let e = parse_proc_modules(Path::new(PROC_MODULES), "kvm\n").unwrap_err();
        assert!(e.to_string().contains("/proc/modules"), "{e}");
        assert!(parse_proc_modules(Path::new(PROC_MODULES), "kvm big 0\n").is_err());
    }

    #[test]
    fn builtin() {
        let m = parse_modules_builtin(
            "kernel/net/vmw_vsock/vsock.ko\nkernel/drivers/vfio/pci/vfio-pci.ko\ngarbage\n",
        );
        assert!(m.contains("vsock"));
        assert!(m.contains("vfio_pci"), "dash normalised");
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn bool_params() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sys/module/kvm_amd/parameters");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("sev"), "1\n").unwrap();
        std::fs::write(p.join("sev_es"), "N\n").unwrap();
        std::fs::write(p.join("sev_snp"), "maybe\n").unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        assert!(
            read_bool_param(&host, "kvm_amd", "sev")
                .unwrap()
                .unwrap()
                .is_on()
        );
        assert!(
            !read_bool_param(&host, "kvm_amd", "sev_es")
                .unwrap()
                .unwrap()
                .is_on()
        );
        let e = read_bool_param(&host, "kvm_amd", "sev_snp").unwrap_err();
        assert!(e.to_string().contains("kvm_amd/parameters/sev_snp"), "{e}");
        assert!(
            read_bool_param(&host, "kvm_intel", "tdx")
                .unwrap()
                .is_none()
        );
    }
}
