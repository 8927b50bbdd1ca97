#!/usr/bin/env bash
# The real-cluster benchmarks (docs/performance.md, "On a real cluster"): builds what is
# missing (build.sh, cchost, tests/k8s/cmd/k8sbench), then runs k8sbench, which starts
# its own cluster. Flags go before the benchmark's name:
#
#   bash tests/k8s/bench.sh -runs 5 ready
#   CCHOST_K8S_STEADY=10m bash tests/k8s/bench.sh steady       # or -window 10m
#   CCHOST_K8S_FOLLOW=10m bash tests/k8s/bench.sh -n 200 fleet  # or -after 10m
#
# The windows default to 1 minute. Needs root, as tests/k8s/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi
if [ -d /usr/local/go/bin ]; then PATH="/usr/local/go/bin:$PATH"; fi
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$repo/$target ;; esac
bash tests/k8s/build.sh
cargo build --bin cchost
cd tests/k8s
go build -o .cache/k8sbench ./cmd/k8sbench
exec ./.cache/k8sbench -repo "$repo" -bin "$PWD/.cache/bin" -cchost "$target/debug/cchost" "$@"
