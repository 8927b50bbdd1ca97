#!/usr/bin/env bash
# Issue 13: the crash-test hook (CCHOST_TEST_KILL_AFTER_STEP, src/cli/test_hooks.rs)
# is compiled only into the binary the tests build (`test-hooks` feature, turned on by
# the package's dev-dependency on itself), never into a plain `cargo build`'s.
# Run after `cargo test`: it checks that the tests' binary has the hook (so the search
# below can find it), then builds the plain binary and checks that it has not.
set -euo pipefail
cd "$(dirname "$0")/.."
hook=CCHOST_TEST_KILL_AFTER_STEP
bin=target/debug/cchost

# One small test target is enough: cargo builds the binary the tests run with it.
cargo test --no-run --quiet --test discipline
if ! grep -qa "$hook" "$bin"; then
  echo "FAIL: the tests' build of $bin lacks $hook: the crash tests cannot kill it" >&2
  exit 1
fi
cargo build --quiet --bin cchost
if grep -qa "$hook" "$bin"; then
  echo "FAIL: the plain build of $bin contains $hook (a test hook in a product binary)" >&2
  exit 1
fi
echo "ok: $hook is in the tests' binary only"
