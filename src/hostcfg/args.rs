//! Kernel command-line arguments as the kernel reads them: split on spaces outside
//! double quotes, `key=value` split at the first `=`, and `-` / `_` equal in names
//! (the kernel's `parameq`).

use std::fmt;

/// One argument: `key` or `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelArg {
    pub key: String,
    pub value: Option<String>,
}

impl KernelArg {
    pub fn parse(token: &str) -> KernelArg {
        match token.split_once('=') {
            Some((k, v)) => KernelArg {
                key: k.to_string(),
                value: Some(v.to_string()),
            },
            None => KernelArg {
                key: token.to_string(),
                value: None,
            },
        }
    }

    pub fn flag(key: &str) -> KernelArg {
        KernelArg {
            key: key.to_string(),
            value: None,
        }
    }

    pub fn kv(key: &str, value: &str) -> KernelArg {
        KernelArg {
            key: key.to_string(),
            value: Some(value.to_string()),
        }
    }

    /// Same parameter name (dashes and underscores are equal).
    pub(crate) fn same_key(&self, other: &str) -> bool {
        norm(&self.key) == norm(other)
    }

    /// Same name and value.
    pub(crate) fn same(&self, other: &KernelArg) -> bool {
        self.same_key(&other.key) && self.value == other.value
    }

    /// Comma-separated values (`iommu=pt,nobypass`).
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.value.as_deref().unwrap_or("").split(',')
    }
}

fn norm(k: &str) -> String {
    k.replace('-', "_")
}

impl fmt::Display for KernelArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}", self.key, v),
            None => f.write_str(&self.key),
        }
    }
}

/// Splits a command line into tokens; double quotes group spaces and stay in the token
/// (so a token is written back exactly as it was read).
pub fn split(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        if c == '"' {
            quoted = !quoted;
            cur.push(c);
        } else if c.is_whitespace() && !quoted {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What must change in a list of tokens so that every `add` is present (replacing other
/// values of the same key) and no token matched by `remove` is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgEdit {
    pub add: Vec<KernelArg>,
    pub remove: Vec<ArgMatch>,
}

/// Which tokens a removal takes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgMatch {
    /// Every value of this key (and the bare flag).
    Key(String),
    /// Exactly this `key=value` (or flag).
    Exact(KernelArg),
    /// `key=...` whose comma-separated values include this one (`iommu=pt,nobypass`).
    Value(String, String),
    /// Any value of this argument's key other than its own (what an added argument replaces).
    KeyExcept(KernelArg),
}

impl ArgMatch {
    pub fn parse(s: &str) -> ArgMatch {
        let a = KernelArg::parse(s);
        if a.value.is_some() {
            ArgMatch::Exact(a)
        } else {
            ArgMatch::Key(a.key)
        }
    }

    pub fn matches(&self, a: &KernelArg) -> bool {
        match self {
            ArgMatch::Key(k) => a.same_key(k),
            ArgMatch::Exact(x) => a.same(x),
            ArgMatch::Value(k, v) => a.same_key(k) && a.values().any(|x| x == v),
            ArgMatch::KeyExcept(x) => a.same_key(&x.key) && !a.same(x),
        }
    }
}

impl fmt::Display for ArgMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgMatch::Key(k) => write!(f, "{k}[=*]"),
            ArgMatch::Exact(a) => write!(f, "{a}"),
            ArgMatch::Value(k, v) => write!(f, "{k}={v}"),
            ArgMatch::KeyExcept(x) => {
                write!(f, "{}=(not {})", x.key, x.value.as_deref().unwrap_or(""))
            }
        }
    }
}

impl ArgEdit {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// The same edit without additions: removes what it removes plus other values of the
    /// keys it adds (for places that must not carry the arguments twice).
    pub(crate) fn removal_only(&self) -> ArgEdit {
        let mut remove = self.remove.clone();
        remove.extend(self.add.iter().cloned().map(ArgMatch::KeyExcept));
        ArgEdit {
            add: Vec::new(),
            remove,
        }
    }

    /// The tokens the edit takes out of `tokens` and the arguments it adds to them.
    pub fn diff(&self, tokens: &[String]) -> (Vec<String>, Vec<String>) {
        let after = self.apply(tokens);
        let removed = tokens
            .iter()
            .filter(|t| !after.contains(t))
            .cloned()
            .collect();
        let added = after
            .iter()
            .filter(|t| !tokens.contains(t))
            .cloned()
            .collect();
        (removed, added)
    }

    /// True when `tokens` already satisfy the edit.
    pub fn satisfied_by(&self, tokens: &[String]) -> bool {
        let args: Vec<KernelArg> = tokens.iter().map(|t| KernelArg::parse(t)).collect();
        self.add.iter().all(|want| {
            // Present, and no other value of the same key (which could win).
            args.iter().any(|a| a.same(want))
                && args
                    .iter()
                    .filter(|a| a.same_key(&want.key))
                    .all(|a| a.same(want))
        }) && !args
            .iter()
            .any(|a| self.remove.iter().any(|r| r.matches(a)))
    }

    /// Applies the edit: removed tokens and other values of added keys go; added
    /// arguments are appended once (kept in place when already there).
    pub fn apply(&self, tokens: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in tokens {
            let a = KernelArg::parse(t);
            if self.remove.iter().any(|r| r.matches(&a)) {
                continue;
            }
            if self.add.iter().any(|w| a.same_key(&w.key) && !a.same(w)) {
                continue;
            }
            if self.add.iter().any(|w| a.same(w))
                && out.iter().any(|o| KernelArg::parse(o).same(&a))
            {
                continue; // duplicate of an added argument
            }
            out.push(t.clone());
        }
        for w in &self.add {
            if !out.iter().any(|o| KernelArg::parse(o).same(w)) {
                out.push(w.to_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        split(s)
    }

    #[test]
    fn split_keeps_quoted_spaces() {
        assert_eq!(
            toks(r#"ro  root=UUID=ab "dyndbg=file x +p" quiet"#),
            vec!["ro", "root=UUID=ab", "\"dyndbg=file x +p\"", "quiet"]
        );
        assert_eq!(
            KernelArg::parse("root=UUID=ab").value.as_deref(),
            Some("UUID=ab")
        );
    }

    #[test]
    fn dashes_and_underscores_are_the_same_name() {
        assert!(KernelArg::parse("kvm-intel.tdx=1").same(&KernelArg::kv("kvm_intel.tdx", "1")));
    }

    #[test]
    fn edit_adds_replaces_removes_and_is_idempotent() {
        let e = ArgEdit {
            add: vec![
                KernelArg::kv("intel_iommu", "on"),
                KernelArg::flag("nohibernate"),
            ],
            remove: vec![ArgMatch::Value("iommu".into(), "pt".into())],
        };
        let before = toks("ro quiet intel_iommu=off iommu=pt,nobypass splash");
        assert!(!e.satisfied_by(&before));
        let after = e.apply(&before);
        assert_eq!(after, toks("ro quiet splash intel_iommu=on nohibernate"));
        assert!(e.satisfied_by(&after));
        assert_eq!(e.apply(&after), after);
        // Present in place: kept where it is.
        let t = toks("nohibernate ro intel_iommu=on");
        assert_eq!(e.apply(&t), t);
        // Duplicates collapse.
        assert_eq!(
            e.apply(&toks("nohibernate nohibernate")),
            toks("nohibernate intel_iommu=on")
        );
    }

    #[test]
    fn key_removal_takes_every_value() {
        let e = ArgEdit {
            add: vec![],
            remove: vec![ArgMatch::parse("amd_iommu"), ArgMatch::parse("iommu=pt")],
        };
        assert_eq!(
            e.apply(&toks("amd_iommu=on iommu=pt iommu=nopt amd-iommu=off x")),
            toks("iommu=nopt x")
        );
    }
}
