//! The kernel command line (`/proc/cmdline`), split the way the kernel splits it
//! (lib/cmdline.c `next_arg`): whitespace separates parameters except inside double
//! quotes; `param="a b"` and `"param=a b"` both give the value `a b`; the first `=`
//! (even inside quotes) separates name and value; everything after a lone `--` goes to init.
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
pub fn name_eq(a: &str, b: &str) -> bool {
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
        if text.len() > MAX_CMDLINE {
            return Err(HostError::malformed(
                path,
                format!(
                    "{} bytes is longer than any kernel command line",
                    text.len()
                ),
            ));
        }
        if text.contains('\0') {
            return Err(HostError::malformed(path, "contains a NUL byte"));
        }
        let raw = text.trim_end_matches('\n').to_string();
        let mut params = Vec::new();
        let mut init_args = Vec::new();
        let mut after_dashes = false;
        for token in split_args(&raw) {
            if after_dashes {
                init_args.push(token.0);
                continue;
            }
            let (name, value) = token.into_param();
            if name == "--" && value.is_none() {
                after_dashes = true;
                continue;
            }
            params.push(Param { name, value });
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

/// A raw token with its quote structure, before the name/value split.
struct Token(String, Option<usize>);

impl Token {
    fn into_param(self) -> (String, Option<String>) {
        let Token(text, equals) = self;
        match equals {
            None => (text, None),
            Some(i) => (text[..i].to_string(), Some(text[i + 1..].to_string())),
        }
    }
}

/// Splits like the kernel's `next_arg`: quotes group, and are removed.
fn split_args(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut text = String::new();
        let mut in_quote = false;
        let mut equals: Option<usize> = None;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !in_quote {
                break;
            }
            chars.next();
            if c == '"' {
                in_quote = !in_quote;
                continue; // quotes are never part of a name or value
            }
            if c == '=' && equals.is_none() {
                equals = Some(text.len());
            }
            text.push(c);
        }
        out.push(Token(text, equals));
    }
    out
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
}
