#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, and every test tier (unit and
# fixture-host tests, protocol tests, and the real-kernel VM tests in tests/vm/).
# Installs the Debian packages listed in tests/debian-packages.txt first when some are
# missing (needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -d "$HOME/.cargo/bin" ]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi

mapfile -t packages < <(grep -v '^\s*\(#\|$\)' tests/debian-packages.txt)
if command -v dpkg-query >/dev/null; then
  missing=()
  for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${missing[@]}"
  fi
else
  echo "==> not a Debian system: make sure these are installed: ${packages[*]}" >&2
fi

if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

# Incremental caches double the target directory and CI builds each crate once.
export CARGO_INCREMENTAL=0

step() {
  echo "==> $*  [disk free: $(df -h --output=avail . | tail -1 | tr -d ' ')]"
  local start=$SECONDS
  "$@"
  echo "==> done in $((SECONDS - start)) s: $*"
}

step cargo fmt --check
step cargo clippy --all-targets -- -D warnings
# The product (library and binary) without the `test-support` feature the tests turn
# on: it must build with no fixture trees and no firmware simulator in it.
step cargo clippy --lib --bins -- -D warnings
# The optional libudev event source (needs libudev-dev): lint it and run its unit tests
# (they need no udevd; events from a running udevd are not tested here).
step cargo clippy --all-targets --features udev -- -D warnings
step cargo test --lib --features udev -- host::udev host::device_events config::
step cargo test
# Fuzz targets (fuzz/, docs/testing.md "Fuzzing"): libFuzzer on the stable toolchain,
# each target 20 s on its seed corpus; a crash, failed assertion or hang fails the run.
step bash fuzz/run.sh smoke 20
# Last: it rebuilds target/debug/cchost without the test hooks.
step bash tests/no-test-hooks.sh
# Tier 4: a real one-node Kubernetes cluster built from its Go modules (docs/testing.md
# "Tier 4"); it fails, never skips, when the cluster cannot start.
step bash tests/k8s/run.sh
