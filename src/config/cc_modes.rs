//! `[[cc.modes]]`: the CC mode of each GPU on a mixed node (some GPUs confidential,
//! some not), by PCI address, NUMA node, model, or a count (docs/config.md).
//!
//! Two checks: [`CcModes::validate`] at load (what the file alone can show: one
//! selector per entry, only `on` and `off`, no entry naming the same thing twice), and
//! [`resolve`] against the host's GPUs (a selector that matches nothing, two entries
//! that reach the same GPU, a count larger than the GPUs left, a GPU left without a
//! mode). Either failure is an error naming the entry; nothing is switched or served
//! from a half-understood plan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cc::RequestedMode;
use crate::host::pci::PciAddress;

/// One `[[cc.modes]]` entry: a mode and exactly one selector. The mode is of the one
/// vocabulary ([`RequestedMode`]); only `on` and `off` are accepted per GPU, the others
/// parse so that the refusal can say why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuModeEntry {
    pub mode: RequestedMode,
    /// One GPU by PCI address (`0000:41:00.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Every GPU whose sysfs `numa_node` is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<u32>,
    /// Every GPU whose model name (pci.ids, e.g. `GH100 [H100 SXM5 80GB]`) contains
    /// this text, case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// This many of the GPUs no other entry names, lowest PCI address first (entries
    /// with a count are applied after the others, in file order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// The per-GPU modes as configured (empty: no per-GPU modes, the node has one mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CcModes(pub Vec<GpuModeEntry>);

/// What the resolver needs to know of one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuSlot {
    pub address: PciAddress,
    pub numa: Option<u32>,
    /// pci.ids model name; empty when unknown.
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cc.modes: {0}")]
pub struct ModesError(pub String);

/// How one entry selects.
enum Selector<'a> {
    Address(PciAddress),
    Numa(u32),
    Model(&'a str),
    Count(u32),
}

impl GpuModeEntry {
    fn selector(&self) -> Result<Selector<'_>, String> {
        let given = [
            self.address.is_some(),
            self.numa.is_some(),
            self.model.is_some(),
            self.count.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            return Err(format!(
                "give exactly one of address, numa, model, count (this entry has {given})"
            ));
        }
        if let Some(a) = &self.address {
            return a
                .parse()
                .map(Selector::Address)
                .map_err(|e| format!("address: {e}"));
        }
        if let Some(n) = self.numa {
            return Ok(Selector::Numa(n));
        }
        if let Some(m) = &self.model {
            if m.trim().is_empty() {
                return Err("model must not be empty".to_string());
            }
            return Ok(Selector::Model(m.trim()));
        }
        match self.count {
            Some(0) => Err("count must be at least 1".to_string()),
            Some(n) => Ok(Selector::Count(n)),
            None => Err("no selector".to_string()),
        }
    }

    /// The entry as the operator wrote it, for messages.
    fn describe(&self, i: usize) -> String {
        let sel = if let Some(a) = &self.address {
            format!("address = {a:?}")
        } else if let Some(n) = self.numa {
            format!("numa = {n}")
        } else if let Some(m) = &self.model {
            format!("model = {m:?}")
        } else if let Some(c) = self.count {
            format!("count = {c}")
        } else {
            "no selector".to_string()
        };
        format!("cc.modes[{i}] (mode = {:?}, {sel})", self.mode.as_str())
    }
}

impl CcModes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What the file alone shows to be wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (i, e) in self.0.iter().enumerate() {
            match e.mode {
                RequestedMode::On | RequestedMode::Off => {}
                RequestedMode::Keep => {
                    return Err(format!(
                        "{}: per GPU only \"on\" and \"off\" are accepted; an entry must \
                         name a mode, and keep names none (with cc.modes every GPU gets a \
                         mode, which decides the resource it is served as)",
                        e.describe(i)
                    ));
                }
                RequestedMode::Devtools => {
                    return Err(format!(
                        "{}: per GPU only \"on\" and \"off\" are accepted; devtools is a \
                         whole-node mode (cc.mode_on_start, or the nvidia.com/cc.mode label)",
                        e.describe(i)
                    ));
                }
                RequestedMode::Ppcie => {
                    return Err(format!(
                        "{}: Protected PCIe covers a whole board (every GPU and NVSwitch, all \
                         or nothing), so it cannot be set per GPU; use `cchost gpu cc ppcie \
                         set` or nvidia.com/cc.mode=ppcie for the whole node",
                        e.describe(i)
                    ));
                }
            }
            e.selector()
                .map_err(|m| format!("{}: {m}", e.describe(i)))?;
        }
        // Two entries with the same address, NUMA node or model always overlap.
        for (i, a) in self.0.iter().enumerate() {
            for (j, b) in self.0.iter().enumerate().skip(i + 1) {
                let same = match (a.selector(), b.selector()) {
                    (Ok(Selector::Address(x)), Ok(Selector::Address(y))) => x == y,
                    (Ok(Selector::Numa(x)), Ok(Selector::Numa(y))) => x == y,
                    (Ok(Selector::Model(x)), Ok(Selector::Model(y))) => x.eq_ignore_ascii_case(y),
                    _ => false,
                };
                if same {
                    return Err(format!(
                        "{} and {} select the same GPUs; each GPU gets one mode",
                        a.describe(i),
                        b.describe(j)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Each GPU's mode under `modes` on a host with these GPUs. Empty `modes`: an empty map
/// (no per-GPU modes). Every GPU must end up with exactly one mode.
pub fn resolve(
    modes: &CcModes,
    gpus: &[GpuSlot],
) -> Result<BTreeMap<PciAddress, RequestedMode>, ModesError> {
    let mut out: BTreeMap<PciAddress, (RequestedMode, usize)> = BTreeMap::new();
    if modes.is_empty() {
        return Ok(BTreeMap::new());
    }
    modes.validate().map_err(ModesError)?;
    let mut sorted: Vec<&GpuSlot> = gpus.iter().collect();
    sorted.sort_by_key(|g| g.address);
    let all = || {
        sorted
            .iter()
            .map(|g| g.address.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut counts = Vec::new();
    for (i, e) in modes.0.iter().enumerate() {
        let sel = e.selector().map_err(ModesError)?;
        let matched: Vec<PciAddress> = match sel {
            Selector::Count(n) => {
                counts.push((i, e, n));
                continue;
            }
            Selector::Address(a) => sorted
                .iter()
                .filter(|g| g.address == a)
                .map(|g| g.address)
                .collect(),
            Selector::Numa(n) => sorted
                .iter()
                .filter(|g| g.numa == Some(n))
                .map(|g| g.address)
                .collect(),
            Selector::Model(m) => {
                let m = m.to_ascii_lowercase();
                sorted
                    .iter()
                    .filter(|g| g.model.to_ascii_lowercase().contains(&m))
                    .map(|g| g.address)
                    .collect()
            }
        };
        if matched.is_empty() {
            return Err(ModesError(format!(
                "{} matches no GPU of this host (GPUs: {})",
                e.describe(i),
                all()
            )));
        }
        for a in matched {
            if let Some((_, j)) = out.get(&a) {
                return Err(ModesError(format!(
                    "GPU {a} is selected by both {} and {}; each GPU gets one mode",
                    modes.0[*j].describe(*j),
                    e.describe(i)
                )));
            }
            out.insert(a, (e.mode, i));
        }
    }
    for (i, e, n) in counts {
        let free: Vec<PciAddress> = sorted
            .iter()
            .map(|g| g.address)
            .filter(|a| !out.contains_key(a))
            .take(n as usize)
            .collect();
        if free.len() < n as usize {
            return Err(ModesError(format!(
                "{} asks for {n} GPUs, but only {} of this host's {} GPUs are left without a mode",
                e.describe(i),
                free.len(),
                sorted.len()
            )));
        }
        for a in free {
            out.insert(a, (e.mode, i));
        }
    }
    let missing: Vec<String> = sorted
        .iter()
        .filter(|g| !out.contains_key(&g.address))
        .map(|g| g.address.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ModesError(format!(
            "GPU {} has no mode: when cc.modes is set every GPU needs one (add an entry, \
             or a count for the rest)",
            missing.join(", ")
        )));
    }
    Ok(out.into_iter().map(|(a, (m, _))| (a, m)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("c.toml")).map_err(|e| e.to_string())
    }

    fn modes(text: &str) -> CcModes {
        load(text).unwrap().cc.modes
    }

    /// Eight H100s, four on NUMA node 0 and four on node 1; the last one an H200.
    fn eight() -> Vec<GpuSlot> {
        ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"]
            .iter()
            .enumerate()
            .map(|(i, b)| GpuSlot {
                address: format!("0000:{b}:00.0").parse().unwrap(),
                numa: Some((i / 4) as u32),
                model: if i == 7 {
                    "GH100 [H200 SXM 141GB]".to_string()
                } else {
                    "GH100 [H100 SXM5 80GB]".to_string()
                },
            })
            .collect()
    }

    fn by_mode(m: &BTreeMap<PciAddress, RequestedMode>, mode: RequestedMode) -> Vec<String> {
        m.iter()
            .filter(|(_, v)| **v == mode)
            .map(|(a, _)| a.to_string())
            .collect()
    }

    #[test]
    fn no_entries_means_no_per_gpu_modes() {
        let c = load("").unwrap();
        assert!(c.cc.modes.is_empty());
        assert!(resolve(&c.cc.modes, &eight()).unwrap().is_empty());
    }

    #[test]
    fn four_on_four_off_by_count_takes_the_lowest_addresses_first() {
        let m = modes(
            "[[cc.modes]]\nmode = \"on\"\ncount = 4\n[[cc.modes]]\nmode = \"off\"\ncount = 4\n",
        );
        let r = resolve(&m, &eight()).unwrap();
        assert_eq!(
            by_mode(&r, RequestedMode::On),
            [
                "0000:18:00.0",
                "0000:2a:00.0",
                "0000:3a:00.0",
                "0000:5d:00.0"
            ]
        );
        assert_eq!(by_mode(&r, RequestedMode::Off).len(), 4);
    }

    #[test]
    fn numa_address_and_model_select_and_counts_take_the_rest() {
        let m = modes(
            "[cc]\nmodes = [{ mode = \"on\", numa = 1 }, { mode = \"off\", address = \"0000:18:00.0\" }, \
             { mode = \"off\", count = 3 }]\n",
        );
        let r = resolve(&m, &eight()).unwrap();
        assert_eq!(
            by_mode(&r, RequestedMode::On),
            [
                "0000:9a:00.0",
                "0000:ab:00.0",
                "0000:ba:00.0",
                "0000:db:00.0"
            ]
        );
        assert_eq!(by_mode(&r, RequestedMode::Off).len(), 4);
        let m = modes(
            "[cc]\nmodes = [{ mode = \"on\", model = \"h200\" }, { mode = \"off\", count = 7 }]\n",
        );
        let r = resolve(&m, &eight()).unwrap();
        assert_eq!(by_mode(&r, RequestedMode::On), ["0000:db:00.0"]);
    }

    #[test]
    fn load_refuses_what_the_file_alone_shows_wrong() {
        for (text, want) in [
            (
                "[[cc.modes]]\nmode = \"ppcie\"\ncount = 8\n",
                "Protected PCIe covers a whole board",
            ),
            (
                "[[cc.modes]]\nmode = \"devtools\"\nnuma = 0\n",
                "whole-node mode",
            ),
            (
                "[[cc.modes]]\nmode = \"on\"\nnuma = 0\ncount = 2\n",
                "exactly one of address, numa, model, count (this entry has 2)",
            ),
            ("[[cc.modes]]\nmode = \"on\"\n", "exactly one of"),
            ("[[cc.modes]]\nmode = \"on\"\ncount = 0\n", "at least 1"),
            (
                "[[cc.modes]]\nmode = \"on\"\naddress = \"41:00\"\n",
                "not a PCI address",
            ),
            (
                "[[cc.modes]]\nmode = \"on\"\nmodel = \" \"\n",
                "model must not be empty",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", numa = 0 }, { mode = \"off\", numa = 0 }]\n",
                "cc.modes[0] (mode = \"on\", numa = 0) and cc.modes[1] (mode = \"off\", numa = 0) select the same GPUs",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", address = \"0000:18:00.0\" }, { mode = \"on\", address = \"18:00.0\" }]\n",
                "select the same GPUs",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", model = \"H100\" }, { mode = \"off\", model = \"h100\" }]\n",
                "select the same GPUs",
            ),
            ("[[cc.modes]]\nmode = \"maybe\"\ncount = 1\n", "maybe"),
            ("[[cc.modes]]\nmode = \"on\"\nbus = 3\n", "bus"),
            (
                "[cc]\nfollow_label = true\n[[cc.modes]]\nmode = \"on\"\ncount = 1\n",
                "cc.follow_label",
            ),
            (
                "[cc]\nmode_on_start = \"on\"\n[[cc.modes]]\nmode = \"on\"\ncount = 1\n",
                "cc.mode_on_start",
            ),
            (
                "[device_plugin]\ngpu_resource = \"\"\n[[cc.modes]]\nmode = \"on\"\ncount = 1\n",
                "per-model",
            ),
            (
                "[device_plugin]\nnon_cc_gpu_resource = \"nvidia.com/pgpu\"\n",
                "must differ",
            ),
            (
                "[device_plugin]\nnon_cc_gpu_resource = \"pgpu\"\n",
                "non_cc_gpu_resource",
            ),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(want), "{text}\n-> {e}");
            assert!(e.contains("c.toml"), "{e}");
        }
    }

    /// `mode` takes the one vocabulary of `[cc]`; per GPU only `on` and `off`. Each
    /// refusal names the entry and its field (`cc.modes[i] (mode = ...)`) and says why.
    #[test]
    fn per_gpu_modes_other_than_on_and_off_are_refused_naming_the_entry() {
        for (mode, why) in [
            ("keep", "an entry must name a mode, and keep names none"),
            ("devtools", "devtools is a whole-node mode"),
            ("ppcie", "Protected PCIe covers a whole board"),
        ] {
            let text = format!(
                "[[cc.modes]]\nmode = \"on\"\ncount = 1\n[[cc.modes]]\nmode = \"{mode}\"\ncount = 1\n"
            );
            let e = load(&text).unwrap_err();
            assert!(
                e.contains(&format!("cc.modes[1] (mode = \"{mode}\", count = 1)")),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
            assert!(e.contains("c.toml"), "{e}");
        }
        for mode in ["on", "off"] {
            let m = modes(&format!("[[cc.modes]]\nmode = \"{mode}\"\ncount = 1\n"));
            assert_eq!(m.0[0].mode.as_str(), mode);
        }
    }

    #[test]
    fn resolving_on_the_host_refuses_overlaps_short_counts_and_leftovers() {
        let g = eight();
        for (text, want) in [
            (
                "[cc]\nmodes = [{ mode = \"on\", count = 6 }, { mode = \"off\", count = 4 }]\n",
                "cc.modes[1] (mode = \"off\", count = 4) asks for 4 GPUs, but only 2 of this host's 8 GPUs are left",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", count = 9 }]\n",
                "asks for 9 GPUs, but only 8",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", numa = 0 }, { mode = \"off\", address = \"0000:2a:00.0\" }, { mode = \"off\", count = 3 }]\n",
                "GPU 0000:2a:00.0 is selected by both cc.modes[0] (mode = \"on\", numa = 0) and cc.modes[1]",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", model = \"H1\" }, { mode = \"off\", numa = 1 }]\n",
                "is selected by both",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", numa = 3 }]\n",
                "cc.modes[0] (mode = \"on\", numa = 3) matches no GPU of this host (GPUs: 0000:18:00.0,",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", address = \"0000:19:00.0\" }]\n",
                "matches no GPU",
            ),
            (
                "[cc]\nmodes = [{ mode = \"on\", count = 4 }, { mode = \"off\", count = 3 }]\n",
                "GPU 0000:db:00.0 has no mode",
            ),
        ] {
            let e = resolve(&modes(text), &g).unwrap_err().to_string();
            assert!(e.contains(want), "{text}\n-> {e}");
        }
    }
}
