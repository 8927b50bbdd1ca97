//! Boot Loader Specification entries (`/boot/loader/entries/*.conf`): `key value` lines;
//! the kernel arguments are the `options` line(s). Fedora/RHEL write one per kernel.

use super::args::{ArgEdit, split};

pub(crate) const ENTRIES_DIR: &str = "/boot/loader/entries";

/// The kernel arguments of an entry (all `options` lines joined, as the spec says).
pub fn options(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(rest) = option_value(l) {
            out.extend(split(rest));
        }
    }
    out
}

fn option_value(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let rest = t.strip_prefix("options")?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

/// Applies an edit to an entry: removals from every `options` line, additions to the
/// last one (an `options` line is added when there is none). Other lines are kept as is.
pub(crate) fn edit_entry(text: &str, edit: &ArgEdit) -> String {
    let strip = edit.removal_only();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let last = lines.iter().rposition(|l| option_value(l).is_some());
    let mut out = String::with_capacity(text.len() + 64);
    for (i, l) in lines.iter().enumerate() {
        let Some(v) = option_value(l) else {
            out.push_str(l);
            continue;
        };
        let toks = split(v);
        let new = if Some(i) == last {
            edit.apply(&toks)
        } else {
            strip.apply(&toks)
        };
        out.push_str("options ");
        out.push_str(&new.join(" "));
        if l.ends_with('\n') {
            out.push('\n');
        }
    }
    if last.is_none() && !edit.add.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let args: Vec<String> = edit.add.iter().map(|a| a.to_string()).collect();
        out.push_str(&format!("options {}\n", args.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostcfg::args::{ArgMatch, KernelArg};

    // A Fedora 39 entry as the kernel package writes it.
    pub const FEDORA: &str = "title Fedora Linux (6.5.6-300.fc39.x86_64) 39 (Server Edition)
version 6.5.6-300.fc39.x86_64
linux /vmlinuz-6.5.6-300.fc39.x86_64
initrd /initramfs-6.5.6-300.fc39.x86_64.img
options root=/dev/mapper/fedora-root ro rd.lvm.lv=fedora/root iommu=pt rhgb quiet
grub_users $grub_users
grub_arg --unrestricted
grub_class fedora
";

    #[test]
    fn options_line_is_edited_and_nothing_else() {
        let e = ArgEdit {
            add: vec![KernelArg::kv("kvm_amd.sev_snp", "1")],
            remove: vec![ArgMatch::Value("iommu".into(), "pt".into())],
        };
        assert!(options(FEDORA).contains(&"iommu=pt".to_string()));
        let out = edit_entry(FEDORA, &e);
        assert_eq!(
            out,
            FEDORA.replace("iommu=pt rhgb quiet", "rhgb quiet kvm_amd.sev_snp=1")
        );
        assert_eq!(edit_entry(&out, &e), out);
        assert!(e.satisfied_by(&options(&out)));
    }

    #[test]
    fn entry_without_options_gets_one() {
        let e = ArgEdit {
            add: vec![KernelArg::flag("nohibernate")],
            remove: vec![],
        };
        assert_eq!(
            edit_entry("title x\nlinux /v", &e),
            "title x\nlinux /v\noptions nohibernate\n"
        );
    }
}
