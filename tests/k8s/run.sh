#!/usr/bin/env bash
# The real-cluster tier alone: installs what it needs (the Debian packages of
# tests/debian-packages.txt, Go modules through the module proxy), builds the cluster's
# programs (build.sh: reuses what is built) and cchost, then runs the Go tests of
# tests/k8s against a one-node cluster on loopback. A cluster that cannot start fails
# the run; nothing here skips. Needs root (namespaces, cgroups, mknod) and Go >= 1.26.
#
#   bash tests/k8s/run.sh                 # the whole tier
#   bash tests/k8s/run.sh -run 'TestCluster/Labels'   # extra flags go to `go test`
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/k8s: needs root (PID/mount namespaces, cgroups, mknod)" >&2
  exit 1
fi
if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi
if [ -d /usr/local/go/bin ]; then PATH="/usr/local/go/bin:$PATH"; fi
if ! command -v go >/dev/null; then
  echo "tests/k8s: Go is not installed (the tier builds Kubernetes from its Go modules)" >&2
  exit 1
fi

mapfile -t packages < <(grep -v '^\s*\(#\|$\)' tests/debian-packages.txt)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

start=$SECONDS
bash tests/k8s/build.sh
echo "==> cargo build (cchost)"
cargo build --bin cchost
echo "==> tests/k8s: go test"
cd tests/k8s
gofmt_out=$(gofmt -l .)
if [ -n "$gofmt_out" ]; then
  echo "gofmt: $gofmt_out" >&2
  exit 1
fi
go vet ./...
# The audit-log accounting the steady-state test relies on, on synthetic events.
go test -count=1 -run '^TestAudit' ./harness
# The binary `cargo build` just made, wherever CARGO_TARGET_DIR puts it.
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$repo/$target ;; esac
set +e
CCHOST_BIN="$target/debug/cchost" go test -count=1 -timeout 20m -v "$@" . 2>&1 | tee /tmp/cchost-k8s-test.log
status=${PIPESTATUS[0]}
set -e
echo "==> tests/k8s: $((SECONDS - start)) s (exit $status); full log /tmp/cchost-k8s-test.log"
exit "$status"
