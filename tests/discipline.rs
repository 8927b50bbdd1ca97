//! Issue 13: the discipline the compiler keeps. Cargo.toml's `[lints]` table denies
//! `unwrap_used`, `expect_used`, `panic` and `undocumented_unsafe_blocks` for the
//! product code (`cargo clippy --all-targets -- -D warnings` in tests/run.sh enforces
//! them; tests, benches and examples allow the first three at their crate root), and
//! the crash-test hook is a feature only the tests' build turns on
//! (tests/no-test-hooks.sh checks the binaries themselves).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn manifest() -> toml::Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    toml::from_str(&text).unwrap()
}

#[test]
fn clippy_denies_unwrap_expect_panic_and_unexplained_unsafe() {
    let m = manifest();
    let clippy = &m["lints"]["clippy"];
    for lint in [
        "unwrap_used",
        "expect_used",
        "panic",
        "undocumented_unsafe_blocks",
    ] {
        assert_eq!(
            clippy.get(lint).and_then(|v| v.as_str()),
            Some("deny"),
            "[lints.clippy] {lint}"
        );
    }
    // Unit tests may: the allowance is for cfg(test) only.
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(lib.contains(
        "#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]"
    ));
}

#[test]
fn the_crash_test_hook_is_a_feature_that_only_the_tests_turn_on() {
    let m = manifest();
    assert!(m["features"].get("test-hooks").is_some());
    let default: Vec<&str> = m["features"]["default"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(!default.contains(&"test-hooks"), "not a default feature");
    let me = &m["dev-dependencies"]["cchost"];
    assert_eq!(me["path"].as_str(), Some("."));
    assert!(
        me["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str() == Some("test-hooks"))
    );
    // That the tests' binary has the hook and the plain one has not is checked on
    // the binaries themselves by tests/no-test-hooks.sh.
}
