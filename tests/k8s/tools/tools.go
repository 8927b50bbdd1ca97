//go:build tools

// Package tools pins the upstream commands the harness builds from this module: the
// Kubernetes components, and etcd at the version k8s.io/kubernetes itself requires.
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
