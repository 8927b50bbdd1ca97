//! `[kernel]`: kernel arguments and modules (docs/config.md, docs/kernel-args.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which TEE the kernel arguments are planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileChoice {
    /// From the CPU: Intel with TDX support -> `tdx`, AMD with SEV-SNP support -> `snp`.
    Auto,
    Tdx,
    Snp,
    /// No TEE arguments (GPU and module settings still apply).
    None,
}

/// Whether GPU passthrough needs are planned (IOMMU on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuChoice {
    /// When the inventory finds a matched GPU.
    Auto,
    On,
    Off,
}

/// How kernel arguments reach the boot configuration on a plain host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MechanismChoice {
    /// Detect it (docs/kernel-args.md says in which order).
    Auto,
    RpmOstree,
    Grubby,
    Bls,
    Grub,
    KernelCmdline,
    /// Plan the arguments but never touch the boot configuration.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelConfig {
    pub profile: ProfileChoice,
    pub gpu: GpuChoice,
    /// Manage kernel arguments at all (false: report only).
    pub manage_args: bool,
    pub mechanism: MechanismChoice,
    /// Arguments to add besides the profile's (`key` or `key=value`).
    pub extra_args: Vec<String>,
    /// Arguments to remove besides the profile's (`key` removes every value, `key=value` only that one).
    pub remove_args: Vec<String>,
    /// Load `vhost_vsock` now and at boot (the host side of Kata's agent channel).
    pub vhost_vsock: bool,
    /// Also load `vsock_loopback` (coco-pattern loads it on its nodes).
    pub vsock_loopback: bool,
    /// The modules-load.d file cchost owns (a host path).
    pub modules_load_file: PathBuf,
}

pub(crate) const DEFAULT_MODULES_LOAD_FILE: &str = "/etc/modules-load.d/cchost.conf";

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            profile: ProfileChoice::Auto,
            gpu: GpuChoice::Auto,
            manage_args: true,
            mechanism: MechanismChoice::Auto,
            extra_args: Vec::new(),
            remove_args: Vec::new(),
            vhost_vsock: true,
            vsock_loopback: false,
            modules_load_file: PathBuf::from(DEFAULT_MODULES_LOAD_FILE),
        }
    }
}

impl KernelConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        for a in self.extra_args.iter().chain(&self.remove_args) {
            // Arguments are written into shell files (/etc/default/grub) and kernel
            // command lines: nothing the shell expands or that ends a quoted word
            // (`$`, backquote, `\`, quotes), no blanks (issue 14.2).
            if a.is_empty()
                || a.chars().any(|c| {
                    c.is_whitespace()
                        || c.is_control()
                        || matches!(c, '"' | '\'' | '$' | '`' | '\\')
                })
            {
                return Err(format!(
                    "kernel: {a:?} is not a single kernel argument (no blanks, quotes, $, ` or \\)"
                ));
            }
        }
        // systemd-modules-load reads *.conf directly in modules-load.d
        // (modules-load.d(5)); a path is checked in normal form, so `..` cannot leave it.
        super::paths::file_in(
            "kernel.modules_load_file",
            &self.modules_load_file,
            "/etc/modules-load.d",
            Some(".conf"),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let c: KernelConfig =
            toml::from_str("profile = \"snp\"\ngpu = \"on\"\nextra_args = [\"quiet\"]\n").unwrap();
        assert_eq!(c.profile, ProfileChoice::Snp);
        assert_eq!(c.gpu, GpuChoice::On);
        assert!(c.validate().is_ok());
        let bad = KernelConfig {
            extra_args: vec!["a b".into()],
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("a b"));
        for shell in ["\\", "x=$(id -u)", "$GRUB_CMDLINE_LINUX=x", "a'b", "`id`"] {
            let bad = KernelConfig {
                extra_args: vec![shell.into()],
                ..Default::default()
            };
            assert!(bad.validate().is_err(), "{shell}");
        }
        let bad = KernelConfig {
            modules_load_file: "/etc/cchost.conf".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let escape = KernelConfig {
            modules_load_file: "/etc/modules-load.d/../../etc/shadow.conf".into(),
            ..Default::default()
        };
        let e = escape.validate().unwrap_err();
        assert!(e.contains("kernel.modules_load_file"), "{e}");
        assert!(toml::from_str::<KernelConfig>("profile = \"sgx\"").is_err());
    }
}
