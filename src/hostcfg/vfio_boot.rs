//! Boot-time binding (`[vfio] boot_bind`): what makes vfio-pci, not nvidia, take the
//! matched GPUs when the host boots (docs/facts/vfio-boot.md).
//!
//! - the kernel argument `vfio-pci.ids=<vendor:device,...>`: vfio-pci's `ids` module
//!   parameter, read from the command line by a built-in vfio-pci at boot, and by
//!   modprobe (which passes `module.param=` words of /proc/cmdline on) when vfio-pci is
//!   a module;
//! - a modprobe.d file with the same `options vfio-pci ids=...` and a `softdep <m> pre:
//!   vfio-pci` for each driver that would claim them first (nvidia, nouveau), so that
//!   loading nvidia loads vfio-pci before it.
//!
//! Both are written through the node plan and journaled like the other kernel arguments
//! and module files (`cchost undo` restores them).

use crate::hostcfg::args::KernelArg;

/// The kernel argument key (module `vfio_pci`, parameter `ids`).
pub(crate) const IDS_KEY: &str = "vfio-pci.ids";

/// The drivers that would claim an NVIDIA GPU before vfio-pci.
pub(crate) const CLAIMED_FIRST_BY: [&str; 2] = ["nvidia", "nouveau"];

/// `vendor:device` of each id, sorted, each once (vfio-pci's `ids` format is
/// `vendor:device[:subvendor[:subdevice[:class[:class_mask]]]]`, comma separated).
pub(crate) fn id_list(ids: &[(u16, u16)]) -> Vec<String> {
    let mut v: Vec<String> = ids
        .iter()
        .map(|(v, d)| format!("{v:04x}:{d:04x}"))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// `vfio-pci.ids=10de:2330,10de:22a3`.
pub(crate) fn ids_arg(ids: &[String]) -> KernelArg {
    KernelArg {
        key: IDS_KEY.to_string(),
        value: Some(ids.join(",")),
    }
}

/// The modprobe.d file: vfio-pci's ids, and vfio-pci loaded before each of `before`.
pub fn modprobe_content(ids: &[String], before: &[&str]) -> String {
    let mut s = String::from(
        "# Written by cchost ([vfio] boot_bind); `cchost undo` removes it.\n\
         # vfio-pci takes these devices when it loads, and loads before the drivers\n\
         # that would take them first (modprobe.d(5): options, softdep).\n",
    );
    s.push_str(&format!("options vfio-pci ids={}\n", ids.join(",")));
    for m in before {
        s.push_str(&format!("softdep {m} pre: vfio-pci\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sorted_once_each_in_vfio_pci_format() {
        let ids = id_list(&[(0x10de, 0x2330), (0x10de, 0x22a3), (0x10de, 0x2330)]);
        assert_eq!(ids, ["10de:22a3", "10de:2330"]);
        assert_eq!(
            ids_arg(&ids).to_string(),
            "vfio-pci.ids=10de:22a3,10de:2330"
        );
        let text = modprobe_content(&ids, &CLAIMED_FIRST_BY);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "options vfio-pci ids=10de:22a3,10de:2330",
                "softdep nvidia pre: vfio-pci",
                "softdep nouveau pre: vfio-pci",
            ]
        );
    }
}
