//! Writes the committed fixture hosts: `cargo run --example make_fixtures -- tests/host`.
//! Each scenario directory is replaced; tests/host/README.md is left alone. The test
//! `tests/fixture_hosts/fixture_trees.rs` fails when the committed trees differ from what this writes.
// Test support: may unwrap, expect and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: make_fixtures DIR   (normally tests/host)");
        return ExitCode::from(2);
    };
    match cchost::fixture::scenarios::write_all(&dir) {
        Ok(()) => {
            for name in cchost::fixture::scenarios::NAMES {
                println!("wrote {}", dir.join(name).display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
