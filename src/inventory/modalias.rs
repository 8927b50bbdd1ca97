//! Which vfio driver a PCI device's modalias selects.
//!
//! vfio variant drivers (`nvgrace_gpu_vfio_pci` for Grace-Hopper/Blackwell C2C parts)
//! publish `alias vfio_pci:v…d…sv…sd…bc…sc…i… <module>` lines in
//! `/lib/modules/<release>/modules.alias`; plain `vfio_pci` publishes an all-wildcard
//! one. Like NVIDIA's vfio-manage (and libvirt), the pattern with the fewest `*`
//! wildcards wins and `vfio-pci` is the fallback (docs/facts/gpu.md#vfio-driver-choice).

use serde::{Deserialize, Serialize};

/// Prefix of the aliases that vfio variant drivers publish.
const VFIO_ALIAS_PREFIX: &str = "alias vfio_pci:";

/// The `vfio_pci:` aliases of one kernel, read once per inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfioAliases {
    /// (pattern without the `vfio_pci:` prefix, module name), in file order.
    entries: Vec<(String, String)>,
    /// Why there is no alias list (modules.alias missing), for the fallback's reason.
    unavailable: Option<String>,
}

/// How the vfio driver for a device was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum VfioChoiceSource {
    /// A `vfio_pci:` alias in modules.alias matched the device's modalias.
    Alias { pattern: String },
    /// Nothing matched (or modules.alias / the modalias was unreadable): `vfio-pci`.
    Fallback { reason: String },
}

/// The vfio driver a device would be bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfioChoice {
    /// Module to load (`vfio_pci`, `nvgrace_gpu_vfio_pci`).
    pub module: String,
    /// Name of the driver directory under /sys/bus/pci/drivers for the plain vfio-pci
    /// case; variant drivers register under their own name, which the binder looks up
    /// as `module` first and then with `_` replaced by `-` (docs/facts/gpu.md#vfio-driver-choice).
    pub driver: String,
    #[serde(flatten)]
    pub source: VfioChoiceSource,
}

impl VfioChoice {
    pub(crate) fn fallback(reason: impl Into<String>) -> Self {
        VfioChoice {
            module: "vfio_pci".to_string(),
            driver: "vfio-pci".to_string(),
            source: VfioChoiceSource::Fallback {
                reason: reason.into(),
            },
        }
    }

    /// Driver directory names to look for under /sys/bus/pci/drivers, in order.
    pub fn driver_candidates(&self) -> Vec<String> {
        let mut v = vec![self.driver.clone()];
        for c in [self.module.clone(), self.module.replace('_', "-")] {
            if !v.contains(&c) {
                v.push(c);
            }
        }
        v
    }
}

impl VfioAliases {
    /// Parses the text of modules.alias, keeping only `vfio_pci:` lines. Lines that
    /// are not well-formed (no module name) are skipped: the file is the kernel
    /// packager's, and one bad line must not hide the others.
    pub fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(VFIO_ALIAS_PREFIX) else {
                continue;
            };
            let mut parts = rest.split_whitespace();
            if let (Some(pattern), Some(module), None) = (parts.next(), parts.next(), parts.next())
            {
                match supported_pattern(pattern.as_bytes()) {
                    Ok(()) => entries.push((pattern.to_string(), module.to_string())),
                    Err(why) => tracing::warn!(
                        "modules.alias: vfio_pci:{pattern} ({module}) skipped: {why}"
                    ),
                }
            }
        }
        VfioAliases {
            entries,
            unavailable: None,
        }
    }

    /// No alias list at all; every device falls back to vfio-pci, giving `why`.
    pub fn unavailable(why: impl Into<String>) -> Self {
        VfioAliases {
            entries: Vec::new(),
            unavailable: Some(why.into()),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Picks the vfio driver for a device modalias (`pci:v000010DEd…`).
    pub fn choose(&self, modalias: &str) -> VfioChoice {
        let Some(body) = modalias.strip_prefix("pci:") else {
            return VfioChoice::fallback(format!("modalias {modalias:?} is not a pci: alias"));
        };
        let best = self
            .entries
            .iter()
            .filter(|(pattern, _)| glob_match(pattern.as_bytes(), body.as_bytes()))
            // min_by_key keeps the first of equals: file order breaks ties.
            .min_by_key(|(pattern, _)| pattern.bytes().filter(|&b| b == b'*').count());
        match best {
            Some((pattern, module)) => VfioChoice {
                module: module.clone(),
                driver: if module == "vfio_pci" {
                    "vfio-pci".to_string()
                } else {
                    module.clone()
                },
                source: VfioChoiceSource::Alias {
                    pattern: format!("vfio_pci:{pattern}"),
                },
            },
            None => VfioChoice::fallback(
                self.unavailable
                    .clone()
                    .unwrap_or_else(|| "no vfio_pci: alias in modules.alias matches".to_string()),
            ),
        }
    }
}

/// Whether [`glob_match`] matches `pattern` exactly as fnmatch(3) does.
///
/// libkmod matches wildcard aliases with `fnmatch(pattern, modalias, 0)`
/// (libkmod/libkmod-index.c, `index_searchwild__all`): POSIX XCU §2.13 "Pattern
/// Matching Notation" with glibc's extensions. modpost (scripts/mod/file2alias.c,
/// `do_pci_entry`) writes `vfio_pci:` patterns of ASCII letters, digits and `*` only,
/// so cchost implements `*`, `?` and classes of plain characters and refuses the rest
/// rather than guess: a backslash escape, `[[:class:]]`, `[=x=]` and `[.x.]` forms (any `[` inside a
/// class), an unterminated `[` (glibc does not match it literally), and any byte that
/// is not printable ASCII. A refused alias is skipped with a warning naming it.
pub fn supported_pattern(p: &[u8]) -> Result<(), &'static str> {
    if p.iter().any(|b| !b.is_ascii_graphic()) {
        return Err("a byte that is not printable ASCII");
    }
    if p.contains(&b'\\') {
        return Err("a backslash escape (not written by modpost)");
    }
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'[' {
            let mut j = i + 1;
            if matches!(p.get(j), Some(b'!' | b'^')) {
                j += 1;
            }
            if p.get(j) == Some(&b']') {
                j += 1; // a leading `]` is a member
            }
            loop {
                match p.get(j) {
                    None => return Err("an unterminated [ (fnmatch does not match it literally)"),
                    Some(b']') => break,
                    Some(b'[') => return Err("a [ inside a class ([:class:], [=x=], [.x.])"),
                    Some(_) => j += 1,
                }
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// fnmatch(3) without flags, as libkmod uses for aliases, for the patterns that
/// [`supported_pattern`] accepts: `*`, `?` and `[...]` classes (with `!`/`^` negation
/// and ranges).
pub(crate) fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear in practice.
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pat, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        // Unterminated class: a literal '['.
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against the class starting at `pat[start] == b'['`. Returns
/// (matched, index after the class), or None when the class is unterminated.
fn class_match(pat: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = start + 1;
    let negate = matches!(pat.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &b = pat.get(j)?;
        if b == b']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        if pat.get(j + 1) == Some(&b'-') && pat.get(j + 2).is_some_and(|&e| e != b']') {
            let e = pat[j + 2];
            if b <= c && c <= e {
                matched = true;
            }
            j += 3;
        } else {
            if b == c {
                matched = true;
            }
            j += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIASES: &str = "\
alias pci:v000010DEd*sv*sd*bc03sc*i* nvidia
alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci
alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci
alias vfio_pci:v000010DEd00002941sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci
alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci
alias vfio_pci:broken-line-without-module
";

    const H100: &str = "pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00";
    const GH200: &str = "pci:v000010DEd00002342sv000010DEsd000016EBbc03sc02i00";

    #[test]
    fn fewest_wildcards_wins() {
        let a = VfioAliases::parse(ALIASES);
        assert_eq!(a.len(), 4, "the line without a module is skipped");
        let c = a.choose(GH200);
        assert_eq!(c.module, "nvgrace_gpu_vfio_pci");
        assert_eq!(
            c.source,
            VfioChoiceSource::Alias {
                pattern: "vfio_pci:v000010DEd00002342sv*sd*bc*sc*i*".into()
            }
        );
        let c = a.choose(H100);
        assert_eq!(c.module, "vfio_pci");
        assert_eq!(c.driver, "vfio-pci");
        assert!(matches!(c.source, VfioChoiceSource::Alias { .. }));
    }

    #[test]
    fn falls_back_to_vfio_pci() {
        let a = VfioAliases::parse("alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace\n");
        let c = a.choose(H100);
        assert_eq!(c.driver, "vfio-pci");
        assert!(matches!(c.source, VfioChoiceSource::Fallback { .. }));
        let c = a.choose("usb:v1234");
        assert!(matches!(c.source, VfioChoiceSource::Fallback { .. }));
        assert_eq!(
            VfioAliases::default().choose(H100).module,
            "vfio_pci",
            "no aliases at all"
        );
    }

    #[test]
    fn driver_candidates_try_dash_form() {
        let c = VfioChoice {
            module: "nvgrace_gpu_vfio_pci".into(),
            driver: "nvgrace_gpu_vfio_pci".into(),
            source: VfioChoiceSource::Fallback { reason: "x".into() },
        };
        assert_eq!(
            c.driver_candidates(),
            vec!["nvgrace_gpu_vfio_pci", "nvgrace-gpu-vfio-pci"]
        );
    }

    #[test]
    fn glob_semantics() {
        assert!(glob_match(b"a*b", b"axxb"));
        assert!(glob_match(b"a*b*c", b"abbbc"));
        assert!(!glob_match(b"a*b", b"axxc"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"v[0-9]x", b"v5x"));
        assert!(!glob_match(b"v[!0-9]x", b"v5x"));
        assert!(glob_match(b"v[!0-9]x", b"vAx"));
        assert!(glob_match(b"a[b", b"a[b"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"", b"a"));
    }

    /// Issue 14.8: the forms where cchost and fnmatch(3) disagreed are refused.
    #[test]
    fn patterns_fnmatch_reads_differently_are_refused() {
        for p in [
            "a\\*",
            "v[[:digit:]]",
            "v[{-",
            "v[[=a=]]",
            "v[[.a.]]",
            "a[b",
            "v\u{e9}*",
        ] {
            assert!(supported_pattern(p.as_bytes()).is_err(), "{p}");
            let a = VfioAliases::parse(&format!("alias vfio_pci:{p} m\n"));
            assert!(a.is_empty(), "{p}");
        }
        for p in [
            "v*d*sv*sd*bc*sc*i*",
            "v[]a]",
            "v[!]]x",
            "v[a-]",
            "[^a-c]*",
            "a?b",
        ] {
            assert!(supported_pattern(p.as_bytes()).is_ok(), "{p}");
        }
    }

    /// The matcher against glibc's fnmatch(3) (flags 0, as libkmod calls it) on every
    /// accepted pattern built from a small alphabet.
    #[test]
    fn matcher_agrees_with_libc_fnmatch() {
        let alphabet: &[&str] = &[
            "a", "b", "-", "*", "?", "[a-c]", "[!b]", "[]a]", "[^]]", "]", "[a-]", "[c-a]",
        ];
        let subjects: Vec<String> = {
            let chars = ["", "a", "b", "c", "-", "]", "^", "!"];
            let mut v = Vec::new();
            for x in chars {
                for y in chars {
                    for z in chars {
                        v.push(format!("{x}{y}{z}"));
                    }
                }
            }
            v
        };
        let mut n = 0;
        for x in alphabet {
            for y in alphabet {
                for z in alphabet {
                    let pat = format!("{x}{y}{z}");
                    if supported_pattern(pat.as_bytes()).is_err() {
                        continue;
                    }
                    let cp = std::ffi::CString::new(pat.clone()).unwrap();
                    for s in &subjects {
                        let cs = std::ffi::CString::new(s.clone()).unwrap();
                        // SAFETY: both are NUL-terminated C strings that outlive the call.
                        let libc_says = unsafe { libc::fnmatch(cp.as_ptr(), cs.as_ptr(), 0) } == 0;
                        assert_eq!(
                            glob_match(pat.as_bytes(), s.as_bytes()),
                            libc_says,
                            "{pat:?} vs {s:?}"
                        );
                        n += 1;
                    }
                }
            }
        }
        assert!(n > 100_000, "{n}");
    }
}
