//! The kernel command line (`/proc/cmdline`), split the way the kernel splits it,
//! byte for byte: lib/cmdline.c `next_arg` and kernel/params.c `parse_args`.
//! The line is bytes, not UTF-8. Whitespace is the kernel's `isspace` (lib/ctype.c:
//! bytes 9–13, 32 and 160, Latin-1 NBSP; never a multi-byte UTF-8 space) and separates
//! parameters except inside double quotes. A quote that opens the token is dropped
//! with one at its very end (`"param=a b"`); a value that starts with a quote is
//! dropped with one at the token's end (`param="a b"`); every other quote stays
//! (`a"b`, `x="a b"c` gives `a b"c`). The first `=` at an index above 0 splits name and
//! value (`=foo` is a flag named `=foo`). Parameters end at a token that is exactly
//! `--` after that (so `--` or `"--"`, not `--""`); the rest goes to init.
//! Parameter names compare with `-` and `_` equal (`kvm-amd.sev` is `kvm_amd.sev`),
//! as the kernel's `parameq` does. When a parameter repeats, handlers run in order and
//! the last one wins; [`Cmdline::last`] gives that one, [`Cmdline::all`] all of them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::HostError;

/// One parameter as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    /// `None` for a bare flag (`nohibernate`); `Some("")` for `name=`.
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmdline {
    /// The line as read (trailing newline removed).
    pub raw: String,
    /// Kernel parameters, in order.
    pub params: Vec<Param>,
    /// Arguments after `--` (passed to init).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_args: Vec<String>,
}

/// `-` and `_` are the same in parameter names.
pub(crate) fn name_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let n = |c: u8| if c == b'-' { b'_' } else { c };
            n(x) == n(y)
        })
}

/// The longest command line any architecture accepts is 4 KiB (x86 COMMAND_LINE_SIZE
/// 2048, arm64 4096); 64 KiB is generous and still rejects garbage.
const MAX_CMDLINE: usize = 64 * 1024;

impl Cmdline {
    /// Parses the content of `/proc/cmdline` (`path` names the file in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, HostError> {
        Self::parse_bytes(path, text.as_bytes())
    }

    /// Parses the command line as the bytes the kernel reads. Names and values that
    /// are not UTF-8 (a token cut inside a multi-byte character at byte 160) are kept
    /// with U+FFFD in place of the bad bytes; every name cchost looks up is ASCII.
    pub fn parse_bytes(path: &Path, text: &[u8]) -> Result<Self, HostError> {
        if text.len() > MAX_CMDLINE {
            return Err(HostError::malformed(
                path,
                format!(
                    "{} bytes is longer than any kernel command line",
                    text.len()
                ),
            ));
        }
        if text.contains(&0) {
            return Err(HostError::malformed(path, "contains a NUL byte"));
        }
        let line = text.strip_suffix(b"\n").unwrap_or(text);
        let raw = String::from_utf8_lossy(line).into_owned();
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut params = Vec::new();
        let mut init_args = Vec::new();
        let mut args = skip_spaces(line);
        while !args.is_empty() {
            let (param, value, rest) = next_arg(args);
            args = rest;
            if value.is_none() && param == b"--" {
                // init/main.c hands the rest to init, `name=value` rejoined.
                while !args.is_empty() {
                    let (param, value, rest) = next_arg(args);
                    args = rest;
                    init_args.push(match value {
                        Some(v) => format!("{}={}", lossy(&param), lossy(&v)),
                        None => lossy(&param),
                    });
                }
                break;
            }
            params.push(Param {
                name: lossy(&param),
                value: value.as_deref().map(lossy),
            });
        }
        Ok(Cmdline {
            raw,
            params,
            init_args,
        })
    }

    /// Every occurrence of a parameter, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Param> + 'a {
        self.params.iter().filter(move |p| name_eq(&p.name, name))
    }

    /// The last occurrence of a parameter (the effective one).
    pub fn last(&self, name: &str) -> Option<&Param> {
        self.params.iter().rev().find(|p| name_eq(&p.name, name))
    }

    /// The effective value of `name=value` (`None` if absent or a bare flag).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.last(name).and_then(|p| p.value.as_deref())
    }

    /// Is the parameter present at all (flag or with a value)?
    pub fn has(&self, name: &str) -> bool {
        self.last(name).is_some()
    }

    /// Values of a comma-separated option list across all occurrences
    /// (`amd_iommu=off,fullflush`; each occurrence's options are applied in turn).
    pub fn options<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        self.all(name)
            .filter_map(|p| p.value.as_deref())
            .flat_map(|v| v.split(',').filter(|s| !s.is_empty()))
            .collect()
    }

    /// The parameter as written, for evidence (`iommu=pt`).
    pub fn render(p: &Param) -> String {
        match &p.value {
            None => p.name.clone(),
            Some(v) if v.contains(char::is_whitespace) => format!("{}=\"{v}\"", p.name),
            Some(v) => format!("{}={v}", p.name),
        }
    }
}

/// The kernel's `isspace` (lib/ctype.c `_ctype`: `_S` on 9–13, 32 and 160).
fn is_space(b: u8) -> bool {
    matches!(b, 9..=13 | 32 | 160)
}

/// lib/string.c `skip_spaces`.
fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_space(b)).count();
    &s[n..]
}

/// lib/cmdline.c `next_arg`, step for step: the C code ends strings by writing NULs
/// into the token (at the `=`, over a closing quote, after the token), so this copies
/// the token, writes the same NULs and reads the same C strings back.
/// Returns the parameter, its value (`None` without an `=` past index 0) and the rest
/// of the line after trailing spaces.
fn next_arg(line: &[u8]) -> (Vec<u8>, Option<Vec<u8>>, &[u8]) {
    let mut args = line;
    let (mut in_quote, mut quoted) = (false, false);
    if args.first() == Some(&b'"') {
        args = &args[1..];
        in_quote = true;
        quoted = true;
    }
    let mut equals = 0;
    let mut i = 0;
    while i < args.len() {
        let c = args[i];
        if is_space(c) && !in_quote {
            break;
        }
        if equals == 0 && c == b'=' {
            equals = i;
        }
        if c == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    let mut tok = args[..i].to_vec();
    let val_start = if equals == 0 {
        None
    } else {
        tok[equals] = 0;
        let mut v = equals + 1;
        // "Don't include quotes in value."
        if tok.get(v) == Some(&b'"') {
            v += 1;
            if tok[i - 1] == b'"' {
                tok[i - 1] = 0;
            }
        }
        Some(v)
    };
    if quoted && i > 0 && tok[i - 1] == b'"' {
        tok[i - 1] = 0;
    }
    let c_str = |from: usize| -> Vec<u8> {
        let t = &tok[from.min(tok.len())..];
        t[..t.iter().position(|&b| b == 0).unwrap_or(t.len())].to_vec()
    };
    let param = c_str(0);
    let value = val_start.map(c_str);
    let rest = if i < args.len() {
        &args[i + 1..]
    } else {
        &args[i..]
    };
    (param, value, skip_spaces(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Cmdline {
        Cmdline::parse(Path::new("/proc/cmdline"), s).unwrap()
    }

    #[test]
    fn plain_flags_and_values() {
        let c = p("BOOT_IMAGE=/vmlinuz-6.8 root=UUID=ab-cd ro quiet iommu=pt nohibernate\n");
        assert_eq!(c.value("root"), Some("UUID=ab-cd"), "first = splits");
        assert!(c.has("ro"));
        assert_eq!(c.last("ro").unwrap().value, None);
        assert_eq!(c.value("iommu"), Some("pt"));
        assert!(c.has("nohibernate"));
        assert!(!c.has("nohib"));
        assert_eq!(
            c.raw,
            "BOOT_IMAGE=/vmlinuz-6.8 root=UUID=ab-cd ro quiet iommu=pt nohibernate"
        );
    }

    #[test]
    fn quotes_group_and_are_removed() {
        let c = p(r#"dyndbg="file foo.c +p" "acpi_osi=Windows 2020" x="""#);
        assert_eq!(c.value("dyndbg"), Some("file foo.c +p"));
        assert_eq!(c.value("acpi_osi"), Some("Windows 2020"));
        assert_eq!(c.value("x"), Some(""));
        assert_eq!(c.params.len(), 3);
        assert_eq!(
            Cmdline::render(c.last("dyndbg").unwrap()),
            r#"dyndbg="file foo.c +p""#
        );
    }

    #[test]
    fn repeats_last_wins_and_dash_underscore_equal() {
        let c = p("iommu=pt kvm-amd.sev_snp=0 iommu=nopt kvm_amd.sev-snp=1");
        assert_eq!(c.value("iommu"), Some("nopt"));
        assert_eq!(c.all("iommu").count(), 2);
        assert_eq!(c.value("kvm_amd.sev_snp"), Some("1"));
        assert_eq!(c.all("kvm-amd.sev-snp").count(), 2);
    }

    #[test]
    fn double_dash_separates_init_args() {
        let c = p("ro quiet -- single iommu=pt");
        assert_eq!(c.init_args, ["single", "iommu=pt"]);
        assert!(!c.has("iommu"), "init's args are not kernel params");
        assert!(!c.has("--"));
    }

    #[test]
    fn option_lists() {
        let c = p("amd_iommu=off,fullflush amd_iommu=pgtbl_v1");
        assert_eq!(c.options("amd_iommu"), ["off", "fullflush", "pgtbl_v1"]);
    }

    #[test]
    fn bad_input_is_a_typed_error_naming_the_file() {
        let e = Cmdline::parse(Path::new("/proc/cmdline"), "a\0b").unwrap_err();
        assert!(e.to_string().contains("/proc/cmdline"), "{e}");
        let long = "x".repeat(MAX_CMDLINE + 1);
        assert!(Cmdline::parse(Path::new("/proc/cmdline"), &long).is_err());
        // Unterminated quote: like the kernel, it runs to the end of the line.
        let c = p(r#"a="b c"#);
        assert_eq!(c.value("a"), Some("b c"));
        assert!(p("").params.is_empty());
        assert!(p("   \n").params.is_empty());
    }

    fn params(c: &Cmdline) -> Vec<(&str, Option<&str>)> {
        c.params
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_deref()))
            .collect()
    }

    /// Issue 14.6: the inputs where cchost and lib/cmdline.c disagreed.
    #[test]
    fn reads_like_the_kernel_next_arg() {
        // Only bytes 9-13, 32 and 160 separate: no Unicode spaces.
        for cp in ["\u{2003}", "\u{85}", "\u{2028}"] {
            let line = format!("nohi{cp}bernate");
            assert_eq!(params(&p(&line)), [(line.as_str(), None)], "{cp:?}");
        }
        // U+00A0 is c2 a0: the kernel splits at the a0 byte and keeps the c2.
        let c = Cmdline::parse_bytes(Path::new("/proc/cmdline"), b"a\xc2\xa0b").unwrap();
        assert_eq!(params(&c), [("a\u{fffd}", None), ("b", None)]);
        let c = Cmdline::parse_bytes(Path::new("/proc/cmdline"), b"x=\xe9 y").unwrap();
        assert_eq!(params(&c), [("x", Some("\u{fffd}")), ("y", None)]);
        // Quotes inside a token stay.
        assert_eq!(params(&p(r#"a"b"#)), [(r#"a"b"#, None)]);
        assert_eq!(params(&p(r#"x="a b"c"#)), [("x", Some(r#"a b"c"#))]);
        assert_eq!(params(&p(r#"x"y z"=1"#)), [(r#"x"y z""#, Some("1"))]);
        // `=` at index 0 is no separator; a later one is.
        assert_eq!(params(&p("=foo")), [("=foo", None)]);
        assert_eq!(params(&p("=a=b")), [("=a", Some("b"))]);
        // Only `--` or `"--"` end the parameters.
        for not_end in [r#"--"""#, r#"-"-""#] {
            let c = p(&format!("{not_end} iommu=pt"));
            assert_eq!(params(&c), [(not_end, None), ("iommu", Some("pt"))]);
            assert!(c.init_args.is_empty(), "{not_end}");
        }
        // An open quote runs to the end of the line, across the blank.
        let c = p(r#"--" iommu=pt"#);
        assert_eq!(params(&c), [(r#"--" iommu"#, Some("pt"))]);
        assert!(c.init_args.is_empty());
        let c = p(r#"ro "--" single x="1 2""#);
        assert_eq!(params(&c), [("ro", None)]);
        assert_eq!(c.init_args, ["single", "x=1 2"]);
        // A lone quote, quoted empty values, tabs and newlines.
        assert_eq!(params(&p("\"")), [("", None)]);
        assert_eq!(params(&p("x=\"")), [("x", Some(""))]);
        assert_eq!(
            params(&p("a\tb\x0bc")),
            [("a", None), ("b", None), ("c", None)]
        );
    }
}
