//! `/etc/default/grub` and `/etc/default/grub.d/*.cfg`: shell fragments that grub-mkconfig
//! sources in that order. cchost edits only the `GRUB_CMDLINE_LINUX` and
//! `GRUB_CMDLINE_LINUX_DEFAULT` assignments, token by token, and keeps every other byte.

use super::args::{ArgEdit, split};

pub const LINUX: &str = "GRUB_CMDLINE_LINUX";
pub const LINUX_DEFAULT: &str = "GRUB_CMDLINE_LINUX_DEFAULT";

/// One `VAR="value"` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub line: usize,
    pub var: String,
    pub value: String,
    /// Text before the value (indent, `export `, `VAR=`).
    head: String,
    quote: Option<char>,
    /// Text after the value (a comment).
    tail: String,
}

/// Finds the assignments of the two command-line variables. A value whose quote does
/// not close on its line is an error (cchost does not edit multi-line values).
pub fn assignments(text: &str) -> Result<Vec<Assignment>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let (export, rest) = match trimmed.strip_prefix("export ") {
            Some(r) => ("export ", r.trim_start()),
            None => ("", trimmed),
        };
        let Some((var, value_part)) = rest.split_once('=') else {
            continue;
        };
        if var != LINUX && var != LINUX_DEFAULT {
            continue;
        }
        let head = format!("{indent}{export}{var}=");
        let (quote, value, tail) = match value_part.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let body = &value_part[1..];
                let close = find_close(body, q).ok_or_else(|| {
                    format!("line {}: {var} value does not end on its line", i + 1)
                })?;
                (
                    Some(q),
                    body[..close].to_string(),
                    body[close + 1..].to_string(),
                )
            }
            _ => {
                let end = value_part
                    .find(|c: char| c.is_whitespace() || c == '#' || c == ';')
                    .unwrap_or(value_part.len());
                (
                    None,
                    value_part[..end].to_string(),
                    value_part[end..].to_string(),
                )
            }
        };
        out.push(Assignment {
            line: i,
            var: var.to_string(),
            value,
            head,
            quote,
            tail,
        });
    }
    Ok(out)
}

fn find_close(body: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if q == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == q && !escaped {
            return Some(i);
        }
        escaped = false;
    }
    None
}

/// Rewrites one assignment's value in `text`.
pub fn set_value(text: &str, a: &Assignment, value: &str) -> String {
    let q = a.quote.unwrap_or('"');
    let new_line = format!("{}{q}{value}{q}{}", a.head, a.tail);
    replace_line(text, a.line, &new_line)
}

fn replace_line(text: &str, idx: usize, new_line: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i == idx {
            out.push_str(new_line);
            if l.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(l);
        }
    }
    out
}

/// The arguments the files give the kernel: the last assignment of each variable wins,
/// `$GRUB_CMDLINE_LINUX` inside a value expands to the one before (as the shell does).
pub fn effective_args(files: &[(String, String)]) -> Result<Vec<String>, String> {
    let mut linux = String::new();
    let mut default = String::new();
    for (name, text) in files {
        for a in assignments(text).map_err(|e| format!("{name}: {e}"))? {
            let prev = if a.var == LINUX { &linux } else { &default };
            let v = expand(&a.value, &a.var, prev);
            if a.var == LINUX {
                linux = v;
            } else {
                default = v;
            }
        }
    }
    let mut t = split(&linux);
    t.extend(split(&default));
    Ok(t)
}

fn expand(value: &str, var: &str, prev: &str) -> String {
    value
        .replace(&format!("${{{var}}}"), prev)
        .replace(&format!("${var}"), prev)
}

/// Applies an edit to the grub files (given in source order): removals and replaced
/// values go from every assignment of both variables; additions go to the last
/// `GRUB_CMDLINE_LINUX` (appended to the first file when none exists). Returns the new
/// texts (unchanged files are returned unchanged).
pub fn edit_files(files: &[(String, String)], edit: &ArgEdit) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = files.iter().map(|(_, t)| t.clone()).collect();
    let mut last_linux: Option<(usize, usize)> = None;
    let strip = edit.removal_only();
    for (fi, (name, _)) in files.iter().enumerate() {
        let found = assignments(&out[fi]).map_err(|e| format!("{name}: {e}"))?;
        for a in found {
            let toks = split(&a.value);
            let kept = strip.apply(&toks);
            if kept != toks {
                out[fi] = set_value(&out[fi], &a, &kept.join(" "));
            }
            if a.var == LINUX {
                last_linux = Some((fi, a.line));
            }
        }
    }
    if edit.add.is_empty() {
        return Ok(out);
    }
    match last_linux {
        Some((fi, line)) => {
            let found = assignments(&out[fi]).map_err(|e| format!("{}: {e}", files[fi].0))?;
            let a = found
                .iter()
                .find(|a| a.line == line)
                .ok_or_else(|| format!("{}: assignment moved while editing", files[fi].0))?;
            let toks = split(&a.value);
            let add_only = ArgEdit {
                add: edit.add.clone(),
                remove: Vec::new(),
            };
            let new = add_only.apply(&toks);
            if new != toks {
                out[fi] = set_value(&out[fi], a, &new.join(" "));
            }
        }
        None => {
            let Some(first) = out.first_mut() else {
                return Err("no grub defaults file to edit".to_string());
            };
            if !first.is_empty() && !first.ends_with('\n') {
                first.push('\n');
            }
            let args: Vec<String> = edit.add.iter().map(|a| a.to_string()).collect();
            first.push_str(&format!("{LINUX}=\"{}\"\n", args.join(" ")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostcfg::args::{ArgMatch, KernelArg};

    // Debian 12's /etc/default/grub as installed.
    const DEBIAN: &str = r#"# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""

# If your computer has multiple video cards, the kernel may want
#GRUB_GFXMODE=640x480
"#;

    fn tdx_edit() -> ArgEdit {
        ArgEdit {
            add: vec![
                KernelArg::kv("kvm_intel.tdx", "1"),
                KernelArg::flag("nohibernate"),
            ],
            remove: vec![ArgMatch::Value("iommu".into(), "pt".into())],
        }
    }

    #[test]
    fn debian_defaults_get_the_arguments_in_grub_cmdline_linux() {
        let files = vec![("/etc/default/grub".to_string(), DEBIAN.to_string())];
        let out = edit_files(&files, &tdx_edit()).unwrap();
        let expected = DEBIAN.replace(
            "GRUB_CMDLINE_LINUX=\"\"",
            "GRUB_CMDLINE_LINUX=\"kvm_intel.tdx=1 nohibernate\"",
        );
        assert_eq!(out[0], expected);
        let again = edit_files(&[(files[0].0.clone(), out[0].clone())], &tdx_edit()).unwrap();
        assert_eq!(again[0], out[0], "idempotent");
        let args = effective_args(&[(files[0].0.clone(), out[0].clone())]).unwrap();
        assert_eq!(args, ["kvm_intel.tdx=1", "nohibernate", "quiet"]);
    }

    #[test]
    fn removals_reach_drop_ins_and_default_and_references_survive() {
        let main = "GRUB_CMDLINE_LINUX_DEFAULT='quiet iommu=pt'\nGRUB_CMDLINE_LINUX=\"console=ttyS0\" # serial\n";
        let dropin = "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX kvm_intel.tdx=0\"\n";
        let files = vec![
            ("/etc/default/grub".to_string(), main.to_string()),
            (
                "/etc/default/grub.d/50-x.cfg".to_string(),
                dropin.to_string(),
            ),
        ];
        let out = edit_files(&files, &tdx_edit()).unwrap();
        assert_eq!(
            out[0],
            "GRUB_CMDLINE_LINUX_DEFAULT='quiet'\nGRUB_CMDLINE_LINUX=\"console=ttyS0\" # serial\n"
        );
        assert_eq!(
            out[1],
            "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX kvm_intel.tdx=1 nohibernate\"\n"
        );
        let named: Vec<(String, String)> = files
            .iter()
            .map(|f| f.0.clone())
            .zip(out.iter().cloned())
            .collect();
        assert_eq!(
            effective_args(&named).unwrap(),
            ["console=ttyS0", "kvm_intel.tdx=1", "nohibernate", "quiet"]
        );
    }

    #[test]
    fn missing_variable_is_appended_and_unclosed_quote_refused() {
        let files = vec![(
            "/etc/default/grub".to_string(),
            "GRUB_TIMEOUT=5".to_string(),
        )];
        let out = edit_files(&files, &tdx_edit()).unwrap();
        assert_eq!(
            out[0],
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"kvm_intel.tdx=1 nohibernate\"\n"
        );
        let bad = vec![(
            "g".to_string(),
            "GRUB_CMDLINE_LINUX=\"quiet\n splash\"\n".to_string(),
        )];
        assert!(
            edit_files(&bad, &tdx_edit())
                .unwrap_err()
                .contains("line 1")
        );
    }
}
