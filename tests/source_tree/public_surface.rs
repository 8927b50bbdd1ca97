//! The library's public surface is deliberate (issue 12 item 5). An item of src/ is
//! `pub` only when a consumer outside the library names it (the binary: src/main.rs and
//! src/cli/; the tests, benches and fuzz targets), or when a public signature shows it
//! and it is listed in `public_interface.txt` beside this file (the compiler's
//! `private_interfaces` lint names those). Everything else is `pub(crate)`, where the
//! dead-code lint sees it.
//!
//! By name, as text: an item counts as used outside when any consumer's code (comments
//! and strings blanked) holds its identifier. That errs towards keeping things public
//! (a method called `new` is named everywhere), never towards a false failure.
//! Test support (`fixture`, the firmware simulator `gpu::cc::sim`) and the fuzz entry
//! points (`fuzzing`) are public on purpose and not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::layers::code_only;

/// Library files whose items are public by purpose.
const PUBLIC_BY_PURPOSE: &[&str] = &[
    "src/lib.rs",
    "src/main.rs",
    "src/fuzzing.rs",
    "src/cli/",
    "src/fixture/",
    "src/gpu/cc/sim",
];

const ITEM_KINDS: &[&str] = &[
    "fn", "struct", "enum", "const", "static", "type", "trait", "union",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, without following links (the fixture hosts under
/// tests/ hold sysfs-style link cycles) and without the fixture trees themselves.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | "host" | "host-captured" | ".cache" | "artifacts" | "corpus"
            ) {
                rust_files(&p, out);
            }
        } else if meta.is_file() && name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn identifiers(code: &str, into: &mut BTreeSet<String>) {
    let mut cur = String::new();
    for c in code.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            cur.push(c);
        } else if !cur.is_empty() {
            if !cur.as_bytes()[0].is_ascii_digit() {
                into.insert(std::mem::take(&mut cur));
            }
            cur.clear();
        }
    }
}

/// The identifiers the library's outside consumers name in code.
fn outside_names(root: &Path) -> BTreeSet<String> {
    let mut files = vec![root.join("src/main.rs"), root.join("build.rs")];
    rust_files(&root.join("src/cli"), &mut files);
    for d in ["tests", "benches", "fuzz", "examples"] {
        rust_files(&root.join(d), &mut files);
    }
    let mut names = BTreeSet::new();
    for f in files {
        if let Ok(src) = std::fs::read_to_string(&f) {
            identifiers(&code_only(&src), &mut names);
        }
    }
    names
}

/// The `pub` items of one library file: (line, name). Stops at the file's unit-test
/// module (`#[cfg(test)] mod tests`), whose items are the tests' own.
pub fn pub_items(src: &str) -> Vec<(usize, String)> {
    let code = code_only(src);
    let mut out = Vec::new();
    let mut prev = "";
    for (n, line) in code.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("mod tests") && prev.contains("#[cfg(test)]") {
            break;
        }
        if !t.is_empty() {
            prev = t;
        }
        let Some(mut rest) = t.strip_prefix("pub ") else {
            continue;
        };
        for q in ["async ", "unsafe ", "const ", "extern \"C\" "] {
            // `pub const fn`: `const` is a qualifier only when a kind follows.
            if let Some(r) = rest.strip_prefix(q)
                && ITEM_KINDS.iter().any(|k| r.starts_with(&format!("{k} ")))
            {
                rest = r;
            }
        }
        for kind in ITEM_KINDS {
            if let Some(r) = rest.strip_prefix(&format!("{kind} ")) {
                let name: String = r
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
                break;
            }
        }
    }
    out
}

/// Every public item of the library that the check applies to: name -> where.
fn library_pub_items(root: &Path) -> BTreeMap<String, Vec<String>> {
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut items: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if PUBLIC_BY_PURPOSE.iter().any(|p| rel.starts_with(p)) || rel.ends_with("tests.rs") {
            continue;
        }
        let src = std::fs::read_to_string(&f).unwrap();
        for (line, name) in pub_items(&src) {
            items.entry(name).or_default().push(format!("{rel}:{line}"));
        }
    }
    items
}

fn listed_interface(root: &Path) -> BTreeSet<String> {
    let path = root.join("tests/source_tree/public_interface.txt");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_public_item_has_a_consumer_outside_the_library() {
    let root = root();
    let outside = outside_names(&root);
    let listed = listed_interface(&root);
    let unused: Vec<String> = library_pub_items(&root)
        .into_iter()
        .filter(|(name, _)| !outside.contains(name) && !listed.contains(name))
        .map(|(name, at)| format!("{name} ({})", at.join(", ")))
        .collect();
    assert!(
        unused.is_empty(),
        "public items nothing outside the library names: make them pub(crate), or, when \
         a public signature shows them (the compiler's private_interfaces lint says so), \
         list them in tests/source_tree/public_interface.txt:\n  {}",
        unused.join("\n  ")
    );
}

#[test]
fn the_interface_list_holds_only_items_that_need_it() {
    let root = root();
    let outside = outside_names(&root);
    let items = library_pub_items(&root);
    let stale: Vec<String> = listed_interface(&root)
        .into_iter()
        .filter(|name| !items.contains_key(name) || outside.contains(name))
        .collect();
    assert!(
        stale.is_empty(),
        "listed in tests/source_tree/public_interface.txt, but no longer a public item \
         of the library, or now named outside it anyway: remove {stale:?}"
    );
}

#[test]
fn pub_items_are_found_and_tests_and_narrower_items_are_not() {
    let src = r#"
pub struct Shown;
pub(crate) struct Inside;
pub const fn konst() {}
pub const LIMIT: usize = 1;
    pub async fn method() {}
// pub fn in_a_comment() {}
const S: &str = "pub fn in_a_string() {}";
pub mod sub;
pub use other::Thing;
#[cfg(test)]
mod tests {
    pub fn helper() {}
}
"#;
    let names: Vec<String> = pub_items(src).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["Shown", "konst", "LIMIT", "method"]);
}
