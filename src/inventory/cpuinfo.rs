//! `/proc/cpuinfo`: the CPU vendor, model and feature flags of the first processor
//! (the kernel prints the same flags for every CPU; reading one block is enough).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::HostError;

/// CPU architecture family as far as TEEs care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuVendor {
    Intel,
    Amd,
    Arm,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub vendor: CpuVendor,
    /// `vendor_id` (x86) or `CPU implementer` (arm64) as printed.
    pub vendor_id: String,
    pub model_name: Option<String>,
    /// arm64 `CPU part` (e.g. `0xd4f`, Neoverse V2); `None` on x86.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// Logical CPUs (`processor` entries).
    pub logical_cpus: usize,
    /// Feature flags of the first CPU (`flags` on x86, `Features` on arm64).
    pub flags: BTreeSet<String>,
}

impl CpuInfo {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(flag)
    }

    /// Parses the text of /proc/cpuinfo; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, HostError> {
        let mut vendor_id: Option<String> = None;
        let mut implementer: Option<String> = None;
        let mut model_name = None;
        let mut part: Option<String> = None;
        let mut flags: Option<BTreeSet<String>> = None;
        let mut logical_cpus = 0usize;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim();
            let value = value.trim();
            match key {
                "processor" => logical_cpus += 1,
                "vendor_id" if vendor_id.is_none() => vendor_id = Some(value.to_string()),
                "CPU implementer" if implementer.is_none() => implementer = Some(value.to_string()),
                "model name" if model_name.is_none() => model_name = Some(value.to_string()),
                "CPU part" if part.is_none() => part = Some(value.to_ascii_lowercase()),
                "flags" | "Features" if flags.is_none() => {
                    flags = Some(value.split_whitespace().map(str::to_string).collect())
                }
                _ => {}
            }
        }
        let flags = flags.ok_or_else(|| {
            HostError::malformed(
                path,
                "no `flags` (or `Features`) line: truncated or not cpuinfo",
            )
        })?;
        let (vendor, vendor_id) = match (vendor_id, implementer) {
            (Some(v), _) => (
                match v.as_str() {
                    "GenuineIntel" => CpuVendor::Intel,
                    "AuthenticAMD" => CpuVendor::Amd,
                    _ => CpuVendor::Other,
                },
                v,
            ),
            (None, Some(i)) => (CpuVendor::Arm, i),
            (None, None) => {
                return Err(HostError::malformed(
                    path,
                    "no `vendor_id` or `CPU implementer` line",
                ));
            }
        };
        Ok(CpuInfo {
            vendor,
            vendor_id,
            model_name,
            part,
            logical_cpus,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/proc/cpuinfo";

    #[test]
    fn intel_with_tdx() {
        let t = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8580\n\
                 flags\t\t: fpu vmx tdx_host_platform sgx\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu\n";
        let c = CpuInfo::parse(Path::new(P), t).unwrap();
        assert_eq!(c.vendor, CpuVendor::Intel);
        assert_eq!(c.logical_cpus, 2);
        assert!(c.has_flag("tdx_host_platform"));
        assert!(c.has_flag("vmx"));
        assert!(!c.has_flag("tdx"), "whole flags only");
        assert_eq!(
            c.model_name.as_deref(),
            Some("Intel(R) Xeon(R) Platinum 8580")
        );
    }

    #[test]
    fn amd_and_arm() {
        let c = CpuInfo::parse(
            Path::new(P),
            "vendor_id : AuthenticAMD\nflags : svm sev sev_es sev_snp\n",
        )
        .unwrap();
        assert_eq!(c.vendor, CpuVendor::Amd);
        assert!(c.has_flag("sev_snp"));
        let c = CpuInfo::parse(
            Path::new(P),
            "processor : 0\nFeatures : fp asimd\nCPU implementer : 0x41\n",
        )
        .unwrap();
        assert_eq!(c.vendor, CpuVendor::Arm);
        assert_eq!(c.vendor_id, "0x41");
    }

    #[test]
    fn truncated_or_garbage_is_an_error_naming_the_file() {
        for t in [
            "",
            "processor : 0\nvendor_id : GenuineIntel\n",
            "\u{fffd}\u{fffd}",
            "flags : fpu\n",
        ] {
            let e = CpuInfo::parse(Path::new(P), t).unwrap_err();
            assert!(e.to_string().contains(P), "{e}");
        }
    }
}
