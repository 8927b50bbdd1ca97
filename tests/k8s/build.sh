#!/usr/bin/env bash
# Builds the test cluster's programs from their Go modules at pinned versions and puts
# them in tests/k8s/.cache/bin (gitignored). A second run reuses what is built: it does
# nothing when the stamp (the hash of this script, go.mod, go.sum and the programs it
# builds from cmd/: pause, nodeinit) matches.
#
#   kube-apiserver, kube-scheduler, kubelet   k8s.io/kubernetes (go.mod)
#   etcd                                      go.etcd.io/etcd/server/v3 (go.mod)
#   pause, nodeinit                           ./cmd (the pods' sandbox process; PID 1 of the node)
#   containerd, containerd-shim-runc-v2, ctr  github.com/containerd/containerd/v2, its own go.mod
#   runc                                      Debian's (tests/debian-packages.txt)
#
# Long builds run under `nice`. Prints the time each step took.
set -euo pipefail
cd "$(dirname "$0")"

KUBE_VERSION=v1.37.2
CONTAINERD_VERSION=v2.4.2
BIN="$PWD/.cache/bin"
mkdir -p "$BIN"

stamp() {
  cat build.sh go.mod go.sum $(find cmd/pause cmd/nodeinit -type f -name '*.go' | sort) | sha256sum | cut -d' ' -f1
}
want=$(stamp)
progs=(kube-apiserver kube-scheduler kubelet etcd pause nodeinit containerd containerd-shim-runc-v2 ctr)
all_there=true
for p in "${progs[@]}"; do [ -x "$BIN/$p" ] || all_there=false; done
if $all_there && [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$want" ]; then
  echo "==> tests/k8s/build.sh: up to date ($BIN)"
  exit 0
fi

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
ver=k8s.io/component-base/version
kube_ldflags="-s -w -X $ver.gitVersion=$KUBE_VERSION -X $ver.gitMajor=1 -X $ver.gitMinor=37 -X $ver.gitTreeState=clean"

t0=$SECONDS
echo "==> building kube-apiserver, kube-scheduler, kubelet ($KUBE_VERSION), etcd, pause"
nice -n 10 go build -ldflags "$kube_ldflags" -o "$BIN/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet
nice -n 10 go build -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
nice -n 10 go build -o "$BIN/" ./cmd/pause ./cmd/nodeinit
echo "==> kubernetes + etcd + pause: $((SECONDS - t0)) s"

t1=$SECONDS
echo "==> building containerd $CONTAINERD_VERSION (its own go.mod)"
# `go install pkg@version` builds with containerd's own go.mod, exactly as released.
(cd / && GOBIN="$BIN" nice -n 10 go install -ldflags "-s -w" \
  "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION")
echo "==> containerd: $((SECONDS - t1)) s"

echo "$want" > "$BIN/.stamp"
echo "==> tests/k8s/build.sh: built in $((SECONDS - t0)) s ($BIN)"
