//! The evidence lives in the repository: every `docs/….md` a source file names (and
//! every `….md` a doc links to) exists, with the `#section` it names; and nothing
//! cites files outside the repository (`../shared`, the founders' notes, which a clone
//! does not have).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One reference that does not resolve, or one citation of a file outside the repository.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub file: String,
    pub line: usize,
    pub what: String,
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(md: &str) -> Vec<String> {
    md.lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let h = t.trim_start_matches('#');
            (t.starts_with('#') && h.starts_with(' ')).then(|| anchor_of(h))
        })
        .collect()
}

fn is_ref_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-')
}

fn anchor_chars(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// `(path, anchors)` of the `docs/….md` references on one line of a source file:
/// `docs/facts/gpu.md#cc-registers` and the `, #more` anchors that follow it.
fn refs_in_source_line(line: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (k, _) in line.match_indices("docs/") {
        if k > 0 && is_ref_char(line[..k].chars().last().unwrap_or(' ')) {
            continue;
        }
        let rest = &line[k..];
        let end = rest.find(|c: char| !is_ref_char(c)).unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches('.');
        if !path.ends_with(".md") {
            continue;
        }
        let mut anchors = Vec::new();
        let mut tail = &rest[path.len()..];
        if let Some(a) = tail.strip_prefix('#') {
            let a = anchor_chars(a);
            anchors.push(a.to_string());
            tail = &tail[1 + a.len()..];
            while let Some(more) = tail.strip_prefix(", #") {
                let a = anchor_chars(more);
                anchors.push(a.to_string());
                tail = &more[a.len()..];
            }
        }
        out.push((path.to_string(), anchors));
    }
    out
}

/// The targets of markdown links on one line of a doc: `[x](path.md#a)`, not URLs.
fn links_in_md_line(line: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (k, _) in line.match_indices("](") {
        let rest = &line[k + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = &rest[..end];
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, vec![a.to_string()]),
            None => (target, Vec::new()),
        };
        if path.ends_with(".md") || (path.is_empty() && !anchor.is_empty()) {
            out.push((path.to_string(), anchor));
        }
    }
    out
}

/// Checks one file. `rel` is its path from the repository root; `read` gives the text of
/// a repository file by path from the root (`None`: no such file).
pub fn check_text(rel: &str, text: &str, read: &dyn Fn(&str) -> Option<String>) -> Vec<Broken> {
    let mut out = Vec::new();
    let is_md = rel.ends_with(".md");
    let dir = Path::new(rel).parent().unwrap_or(Path::new(""));
    for (n, line) in text.lines().enumerate() {
        let mut bad = |what: String| {
            out.push(Broken {
                file: rel.to_string(),
                line: n + 1,
                what,
            })
        };
        if line.contains("../shared") || line.contains("shared/facts") {
            bad("cites a file outside the repository (../shared); cite docs/ instead".into());
        }
        let refs = if is_md {
            links_in_md_line(line)
                .into_iter()
                .map(|(p, a)| {
                    let p = if p.is_empty() {
                        rel.to_string()
                    } else {
                        normalize(&dir.join(&p))
                    };
                    (p, a)
                })
                .collect()
        } else {
            refs_in_source_line(line)
        };
        for (path, wanted) in refs {
            let Some(target) = read(&path) else {
                bad(format!("{path} does not exist"));
                continue;
            };
            let have = anchors(&target);
            for a in wanted {
                if !have.contains(&a) {
                    bad(format!("{path} has no section #{a}"));
                }
            }
        }
    }
    out
}

/// `a/b/../c.md` -> `a/c.md` (no file system access).
fn normalize(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// Files under `dir` ending in one of `exts`, not following symlinks (fixture host trees
/// hold sysfs-style link cycles), skipping the `skip` directories.
fn files(dir: &Path, exts: &[&str], skip: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if meta.is_dir() {
            if !skip.contains(&name.as_str()) {
                files(&p, exts, skip, out);
            }
        } else if meta.is_file() && exts.iter().any(|e| name.ends_with(e)) {
            out.push(p);
        }
    }
}

#[test]
fn every_doc_reference_resolves_and_nothing_cites_outside_the_repository() {
    let root = root();
    let mut all = Vec::new();
    files(&root.join("src"), &[".rs"], &[], &mut all);
    files(
        &root.join("tests"),
        &[".rs", ".sh"],
        &["host", "host-captured"],
        &mut all,
    );
    files(&root.join("benches"), &[".rs"], &[], &mut all);
    files(&root.join("docs"), &[".md"], &[], &mut all);
    files(
        &root.join("deploy"),
        &[".yaml", ".md", ".service", ".toml"],
        &[],
        &mut all,
    );
    all.push(root.join("build.rs"));
    all.push(root.join("README.md"));
    assert!(all.len() > 100, "found only {} files", all.len());
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    let mut broken = Vec::new();
    let mut cited = 0;
    for f in &all {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "tests/source_tree/doc_refs.rs" {
            continue; // this file names ../shared in its own rule
        }
        let text = std::fs::read_to_string(f).unwrap();
        cited += text.matches("docs/facts/").count();
        broken.extend(check_text(&rel, &text, &read));
    }
    assert!(
        cited > 40,
        "only {cited} citations of docs/facts/ found: did the scan miss src/?"
    );
    let list: Vec<String> = broken
        .iter()
        .map(|b| format!("{}:{}: {}", b.file, b.line, b.what))
        .collect();
    assert!(
        list.is_empty(),
        "references that do not resolve:\n{}",
        list.join("\n")
    );
}

// The checker, on synthetic input: it must catch what it is for.

fn repo(path: &str) -> Option<String> {
    match path {
        "docs/facts/gpu.md" => Some("# GPU\n\n## cc-registers\ntext\n## In use, P2\n".into()),
        "docs/testing.md" => Some("# Testing\n## Tiers\n".into()),
        _ => None,
    }
}

fn whats(rel: &str, text: &str) -> Vec<String> {
    check_text(rel, text, &repo)
        .into_iter()
        .map(|b| b.what)
        .collect()
}

#[test]
fn a_missing_doc_a_missing_section_and_shared_fail() {
    assert_eq!(
        whats("src/a.rs", "//! see docs/facts/cpu.md\n"),
        ["docs/facts/cpu.md does not exist"]
    );
    assert_eq!(
        whats("src/a.rs", "/// (docs/facts/gpu.md#cc-register).\n"),
        ["docs/facts/gpu.md has no section #cc-register"]
    );
    assert_eq!(
        whats("src/a.rs", "// docs/facts/gpu.md#cc-registers, #nope\n"),
        ["docs/facts/gpu.md has no section #nope"]
    );
    let w = whats("src/a.rs", "//! (../shared/facts/gpu.md §2.2)\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("outside the repository"), "{w:?}");
    assert_eq!(
        whats(
            "docs/gpu.md",
            "see [x](facts/gpu.md#nope) and [t](testing.md)\n"
        ),
        ["docs/facts/gpu.md has no section #nope"]
    );
    assert_eq!(
        whats("docs/gpu.md", "[gone](gone.md)\n"),
        ["docs/gone.md does not exist"]
    );
}

#[test]
fn references_that_resolve_pass() {
    let src = "//! (docs/facts/gpu.md#cc-registers, #in-use-p2), docs/testing.md.\n\
               let _ = \"cdocs/x.md\"; // not a reference: part of a longer name\n";
    assert!(
        whats("src/a.rs", src).is_empty(),
        "{:?}",
        whats("src/a.rs", src)
    );
    let md = "[t](testing.md#tiers) [g](facts/gpu.md) [w](https://x.org/a.md) [s](#tiers)\n";
    assert!(
        whats("docs/testing.md", md).is_empty(),
        "{:?}",
        whats("docs/testing.md", md)
    );
    assert_eq!(anchor_of(" In use, P2"), "in-use-p2");
}
