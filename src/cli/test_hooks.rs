//! Crash-test hooks. With the `test-hooks` cargo feature (on in the binary that
//! `cargo test` and `cargo bench` build, through the package's dev-dependency on
//! itself: Cargo.toml), `CCHOST_TEST_KILL_AFTER_STEP=N` makes cchost SIGKILL itself
//! right after the N-th journaled step of `gpu bind`/`unbind` or `gpu cc set`, so a
//! test can stop it at every point deterministically (tests/vm_vfio.rs). Without the feature (`cargo build`, the release binary)
//! none of it is compiled: the variable is not read and its name is not in the binary
//! (tests/no-test-hooks.sh checks the built file).

/// The step to die after, from the environment (`None`: no hook).
#[cfg(feature = "test-hooks")]
pub fn kill_after_step() -> anyhow::Result<Option<u32>> {
    use anyhow::Context as _;
    match std::env::var("CCHOST_TEST_KILL_AFTER_STEP") {
        Ok(v) => Ok(Some(v.parse().with_context(|| {
            format!("CCHOST_TEST_KILL_AFTER_STEP={v:?}: not a number")
        })?)),
        Err(_) => Ok(None),
    }
}

/// Without the `test-hooks` feature there is no hook.
#[cfg(not(feature = "test-hooks"))]
pub fn kill_after_step() -> anyhow::Result<Option<u32>> {
    Ok(None)
}

/// SIGKILLs this process after saying which step it was.
#[cfg(feature = "test-hooks")]
pub fn kill_self(step: u32, what: &str) {
    eprintln!("CCHOST_TEST_KILL_AFTER_STEP: killing myself after step {step} ({what})");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

#[cfg(not(feature = "test-hooks"))]
pub fn kill_self(_step: u32, _what: &str) {}
