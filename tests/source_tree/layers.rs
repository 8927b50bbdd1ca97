//! The layer order of docs/architecture.md, enforced: a module may import (`crate::…`,
//! `use crate::{…}`, `super::…` that climbs out of it) only modules of a lower layer.
//!
//! Top-level modules of the library, bottom up. Modules of one layer do not import each
//! other either. A new top-level module must be placed here (the test fails until it
//! is), and docs/architecture.md says why it sits where it does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const LAYERS: &[&[&str]] = &[
    // Leaves: the door to the host's files, and the process-wide health and metrics
    // registry (neither imports anything of the crate).
    &["host", "observe"],
    // The configuration: reads its file through the host door's non-blocking open.
    // The fixture hosts the tests build (test support; they write trees and open them
    // through the host door, and every layer's unit tests may build one).
    &["config", "fixture"],
    // What the host is (inventory, node facts, the passthrough-device model), and the
    // journal of changes.
    &["inventory", "journal"],
    // Actuators: each knows one subsystem (how to read it, edit it, change it).
    &["gpu", "hostcfg", "cdi"],
    // Services `cchost run` keeps running.
    &["labels", "deviceplugin", "dcap"],
    // Deciding: the node plan and the vfio bind plans (changes nothing).
    &["plan"],
    // Acting on a plan; judging readiness.
    &["apply", "check"],
    // Entry points of the library.
    &["daemon", "capture", "fuzzing"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// One import against the order.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    pub from: String,
    pub to: String,
    pub why: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {} imports {}: {}",
            self.file, self.line, self.from, self.to, self.why
        )
    }
}

/// Blanks comments, string and char literals (keeping newlines, so line numbers hold).
pub fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#')) && !ident_before(b, i) {
            // Raw string r"…" / r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.resize(out.len() + (j + 1 - i), b' ');
            i = j + 1;
            while i < b.len() {
                if b[i] == b'"'
                    && b[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == b'#')
                        .count()
                        == hashes
                {
                    out.resize(out.len() + 1 + hashes, b' ');
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                blank(&mut out, b[i]);
                i += 1;
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.resize(out.len() + (e + 1 - i), b' ');
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named by one `crate::` path: `crate::a::b` names `a`;
/// `crate::{a::x, b}` names `a` and `b`.
fn targets_after_crate(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        // The top-level items of the group, split at commas outside nested braces.
        let mut out = Vec::new();
        let mut depth = 0;
        let mut start = true;
        for (k, ch) in group.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && !c.is_whitespace() => {
                    start = false;
                    let id = ident_at(&group[k..]);
                    if !id.is_empty() && id != "self" {
                        out.push(id.to_string());
                    }
                }
                _ => {}
            }
        }
        out
    } else {
        let id = ident_at(rest);
        if id.is_empty() {
            Vec::new()
        } else {
            vec![id.to_string()]
        }
    }
}

/// The module path of a file under src/ (`src/a/b.rs` -> `[a, b]`, `src/a/mod.rs` ->
/// `[a]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_string();
    }
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// Checks one file of the library; `rel` is its path under src/.
pub fn check_file(rel: &Path, src: &str) -> Vec<Violation> {
    let path = module_path(rel);
    let Some(from) = path.first().cloned() else {
        return Vec::new();
    };
    if matches!(from.as_str(), "lib" | "main" | "cli") {
        // The crate root declares the modules; the binary (main.rs, cli/) is the top.
        return Vec::new();
    }
    let file = format!("src/{}", rel.display());
    let mut out = Vec::new();
    let Some(from_layer) = layer_of(&from) else {
        out.push(Violation {
            file,
            line: 1,
            from: from.clone(),
            to: String::new(),
            why: "module not in the layer order (tests/source_tree/layers.rs)".into(),
        });
        return out;
    };
    let code = code_only(src);
    for (n, line) in code.lines().enumerate() {
        let mut targets = Vec::new();
        for (k, _) in line.match_indices("crate::") {
            let b = line.as_bytes();
            if k > 0 && (b[k - 1].is_ascii_alphanumeric() || b[k - 1] == b'_' || b[k - 1] == b'$') {
                continue; // `$crate::` in a macro, or a longer identifier.
            }
            targets.extend(targets_after_crate(&line[k + "crate::".len()..]));
        }
        // `super::` chains that climb to the crate root (counted from the file; an
        // inline `mod` adds one level, which only makes this stricter).
        for (k, _) in line.match_indices("super::") {
            let b = line.as_bytes();
            if k > 0 && (b[k - 1].is_ascii_alphanumeric() || b[k - 1] == b'_' || b[k - 1] == b':') {
                continue; // counted from the first `super` of the chain
            }
            let mut rest = &line[k..];
            let mut ups = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                ups += 1;
                rest = r;
            }
            if ups >= path.len() {
                targets.extend(targets_after_crate(rest));
            }
        }
        let mut seen = BTreeSet::new();
        for to in targets {
            if to == from || !seen.insert(to.clone()) {
                continue;
            }
            let why = match layer_of(&to) {
                None if matches!(to.as_str(), "cli") => {
                    "the binary's modules are not the library's".to_string()
                }
                None => continue, // an item of the crate root, not a module of ours
                Some(l) if l == from_layer => format!("same layer ({})", LAYERS[l].join(", ")),
                Some(l) if l > from_layer => {
                    format!("{to} is in layer {l}, above {from} (layer {from_layer})")
                }
                Some(_) => continue,
            };
            out.push(Violation {
                file: file.clone(),
                line: n + 1,
                from: from.clone(),
                to,
                why,
            });
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        bad.extend(check_file(f.strip_prefix(&src).unwrap(), &text));
    }
    let list: Vec<String> = bad.iter().map(ToString::to_string).collect();
    assert!(
        list.is_empty(),
        "imports against the layer order:\n{}",
        list.join("\n")
    );
}

#[test]
fn every_module_of_the_crate_root_has_a_layer() {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let code = code_only(&lib);
    let declared: Vec<&str> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';')
        })
        .collect();
    assert!(declared.len() > 10, "{declared:?}");
    let missing: Vec<&&str> = declared.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(missing.is_empty(), "modules with no layer: {missing:?}");
    for layer in LAYERS {
        for m in *layer {
            assert!(
                declared.contains(m),
                "{m} is in the layer order but not in lib.rs"
            );
        }
    }
}

// The checker, on synthetic input: it must catch what it is for.

fn check(path: &str, src: &str) -> Vec<String> {
    check_file(Path::new(path), src)
        .iter()
        .map(|v| format!("{}->{}", v.from, v.to))
        .collect()
}

#[test]
fn a_back_up_import_fails() {
    assert_eq!(
        check("host/x.rs", "use crate::config::EventSource;\n"),
        ["host->config"]
    );
    assert_eq!(
        check("config/cc.rs", "use crate::gpu::cc::TargetMode;\n"),
        ["config->gpu"]
    );
    assert_eq!(
        check(
            "hostcfg/profile.rs",
            "use crate::plan::facts::{CpuVendor, NodeFacts};\n"
        ),
        ["hostcfg->plan"]
    );
    assert_eq!(
        check(
            "cdi/mod.rs",
            "fn f(d: &crate::deviceplugin::devices::Discovery) {}\n"
        ),
        ["cdi->deviceplugin"]
    );
    assert_eq!(
        check("dcap/check.rs", "use crate::check::{Check, Ctx};\n"),
        ["dcap->check"]
    );
}

#[test]
fn grouped_nested_and_super_imports_are_seen() {
    assert_eq!(
        check(
            "labels/compute.rs",
            "use crate::{\n    config::LabelsConfig,\n};\nuse crate::{host::{self, HostRoot}, plan::{Plan, build}};\n"
        ),
        ["labels->plan"]
    );
    // super:: climbing out of src/gpu/cc/x.rs to the root and into another module.
    assert_eq!(
        check("gpu/cc/x.rs", "use super::super::super::daemon::run;\n"),
        ["gpu->daemon"]
    );
    // super:: that stays inside the module is fine.
    assert!(check("gpu/cc/x.rs", "use super::super::vfio::bind;\n").is_empty());
}

#[test]
fn same_layer_and_unknown_modules_fail() {
    assert_eq!(
        check("gpu/vfio.rs", "use crate::hostcfg::boot;\n"),
        ["gpu->hostcfg"]
    );
    assert_eq!(
        check("host/mod.rs", "use crate::config::Config;\n"),
        ["host->config"]
    );
    let v = check_file(Path::new("newthing/mod.rs"), "use crate::host::HostRoot;\n");
    assert_eq!(v.len(), 1);
    assert!(v[0].why.contains("not in the layer order"), "{}", v[0]);
}

#[test]
fn downward_imports_comments_and_strings_pass() {
    let src = r##"
//! See crate::daemon for the loop.
use crate::host::HostRoot; // crate::plan in a comment
use crate::inventory::{self, Inventory};
/* crate::check::Report in a block comment /* nested crate::apply */ */
const S: &str = "crate::daemon::run";
const R: &str = r#"crate::labels"#;
fn f<'a>(x: &'a str) -> char { let _ = $crate::x; '"' }
"##;
    assert!(
        check("gpu/x.rs", src).is_empty(),
        "{:?}",
        check("gpu/x.rs", src)
    );
    assert!(
        check(
            "daemon/mod.rs",
            "use crate::{apply, check::Report, plan};\n"
        )
        .is_empty()
    );
    // The line number points at the import.
    let v = check_file(Path::new("inventory/x.rs"), "\n\nuse crate::gpu::usage;\n");
    assert_eq!(v[0].line, 3);
}
