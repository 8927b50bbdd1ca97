//! The committed fixture hosts in tests/host/ must be exactly what the builder writes
//! (`cargo run --example make_fixtures -- tests/host` regenerates them): same paths,
//! same kinds, same file bytes, same symlink targets.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cchost::fixture::scenarios;

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let ft = e.file_type().unwrap();
            let entry = if ft.is_symlink() {
                Entry::Link(fs::read_link(&path).unwrap())
            } else if ft.is_dir() {
                stack.push(path.clone());
                Entry::Dir
            } else {
                Entry::File(fs::read(&path).unwrap())
            };
            out.insert(rel, entry);
        }
    }
    out
}

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host")
}

fn differences(name: &str, want: &Path, have: &Path) -> Vec<String> {
    let want = snapshot(want);
    let have = snapshot(have);
    let mut out = Vec::new();
    for (p, w) in &want {
        match have.get(p) {
            None => out.push(format!("{name}/{}: missing", p.display())),
            Some(h) if h != w => out.push(format!("{name}/{}: differs", p.display())),
            Some(_) => {}
        }
    }
    for p in have.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("{name}/{}: not generated", p.display()));
    }
    out
}

#[test]
fn committed_fixture_trees_match_the_builder() {
    let tmp = tempfile::tempdir().unwrap();
    scenarios::write_all(tmp.path()).unwrap();
    let mut problems = Vec::new();
    for name in scenarios::NAMES {
        let have = committed().join(name);
        if !have.is_dir() {
            problems.push(format!("{name}: not committed"));
            continue;
        }
        problems.extend(differences(name, &tmp.path().join(name), &have));
    }
    for e in fs::read_dir(committed()).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() && !scenarios::NAMES.contains(&n.as_str()) {
            problems.push(format!(
                "{n}: a committed scenario the builder does not know"
            ));
        }
    }
    problems.truncate(20);
    assert!(
        problems.is_empty(),
        "tests/host drifted from the builder; regenerate with \
         `cargo run --example make_fixtures -- tests/host`:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_comparison_notices_a_changed_link_target_or_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    scenarios::scenario("no-iommu", &a)
        .unwrap()
        .build()
        .unwrap();
    scenarios::scenario("no-iommu", &b)
        .unwrap()
        .build()
        .unwrap();
    assert!(differences("x", &a, &b).is_empty());

    let link = b.join("sys/bus/pci/devices/0000:16:00.0");
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("../../../devices/pci0000:16/0000:16:00.0", &link).unwrap();
    assert_eq!(
        differences("x", &a, &b),
        ["x/sys/bus/pci/devices/0000:16:00.0: differs"]
    );

    fs::remove_dir_all(&b).unwrap();
    scenarios::scenario("no-iommu", &b)
        .unwrap()
        .build()
        .unwrap();
    fs::write(b.join("proc/cmdline"), "changed\n").unwrap();
    fs::write(b.join("proc/extra"), "").unwrap();
    assert_eq!(
        differences("x", &a, &b),
        ["x/proc/cmdline: differs", "x/proc/extra: not generated"]
    );
}
