package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cchost.test/k8s/harness"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// NFDVersion is the node-feature-discovery release whose NodeFeature CRD the test
// installs, from NFD's own Go module (deployment/base/nfd-crds/nfd-api-crds.yaml).
const NFDVersion = "v0.17.3"

// withConfig returns the deployed config.toml with each old line replaced by new; it
// fails the test when a line is not there (the ConfigMap changed under the test).
func withConfig(t *testing.T, pairs ...string) string {
	t.Helper()
	cfg := e.config
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(cfg, pairs[i]) {
			t.Fatalf("the deployed config has no %q:\n%s", pairs[i], cfg)
		}
		cfg = strings.Replace(cfg, pairs[i], pairs[i+1], 1)
	}
	return cfg
}

func nfdCRDs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/node-feature-discovery@"+NFDVersion).Output()
	if err != nil {
		t.Fatalf("go mod download node-feature-discovery: %v", err)
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(m.Dir, "deployment/base/nfd-crds/nfd-api-crds.yaml")
}

// labels.backend = "node-feature": cchost writes a NodeFeature that NFD's own CRD
// accepts, named <node>-cchost, labelled with the node, holding the labels of `cchost
// plan`; the Node itself and the NFD feature file are not touched by it.
func testNodeFeatureBackend(t *testing.T) {
	ctx := context.Background()
	objs, err := harness.Objects(nfdCRDs(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cluster.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(e.cluster.Dir, "host-nf")
	if err := makeHost(host, "gpus-on-vfio"); err != nil {
		t.Fatal(err)
	}
	cfg := withConfig(t, `backend = "node"`, `backend = "node-feature"`, `mode = "on"`, `mode = "off"`)
	want := cchostPlan(t, host, cfg)
	h, err := startCchost(host, cfg, "cchost-nodefeature")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
	}()
	dyn, err := dynamic.NewForConfig(e.cluster.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Group: "nfd.k8s-sigs.io", Version: "v1alpha1", Resource: "nodefeatures"}
	deadline := time.Now().Add(20 * time.Second)
	var why string
	for time.Now().Before(deadline) {
		why = ""
		o, err := dyn.Resource(gvr).Namespace(cchostNS).Get(ctx, nodeA+"-cchost", metav1.GetOptions{})
		if err != nil {
			why = err.Error()
		} else {
			got, _, _ := unstructuredStringMap(o.Object, "spec", "labels")
			if fmt.Sprint(got) != fmt.Sprint(want.Labels) {
				why = fmt.Sprintf("spec.labels = %v, want %v", got, want.Labels)
			} else if o.GetLabels()["nfd.node.kubernetes.io/node-name"] != nodeA {
				why = fmt.Sprintf("labels %v, want nfd.node.kubernetes.io/node-name=%s", o.GetLabels(), nodeA)
			}
		}
		if why == "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if why != "" {
		t.Fatalf("%s\ncchost log:\n%s", why, tail(h.Output(), 3000))
	}
	if _, err := os.Stat(filepath.Join(host, "etc/kubernetes/node-feature-discovery/features.d/cchost")); !os.IsNotExist(err) {
		t.Errorf("the NFD feature file was written (err %v)", err)
	}
}

func unstructuredStringMap(obj map[string]any, path ...string) (map[string]string, bool, error) {
	cur := any(obj)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[p]
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return nil, false, nil
	}
	out := map[string]string{}
	for k, v := range m {
		out[k], _ = v.(string)
	}
	return out, true, nil
}

// Other facts (another fixture host: SEV-SNP with B200s instead of TDX with H100s):
// the labels and extended resources cchost no longer computes are removed, the new
// ones applied, and a label of another manager stays.
func testChangedFactsRemoveOnlyCchostsLabels(t *testing.T) {
	ctx := context.Background()
	const foreign = "example.com/owner"
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"someone-else"}}}`, foreign)
	if _, err := e.cluster.Admin.CoreV1().Nodes().Patch(ctx, nodeA, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "someone-else"}); err != nil {
		t.Fatal(err)
	}
	before := cchostPlan(t, e.hostRoot, e.config)
	eventually(t, 20*time.Second, func() string { return labelsDiff(node(t), before.Labels) })
	host := filepath.Join(e.cluster.Dir, "host-snp")
	if err := makeHost(host, "snp-8xb200"); err != nil {
		t.Fatal(err)
	}
	// Labels only: this host's GPUs are not on vfio-pci, the node's device plugin stays.
	cfg := withConfig(t, `mode = "on"`, `mode = "off"`)
	after := cchostPlan(t, host, cfg)
	if after.Labels["amd.feature.node.kubernetes.io/snp"] != "true" || after.Labels["intel.feature.node.kubernetes.io/tdx"] != "" {
		t.Fatalf("the SNP host's plan: %v", after.Labels)
	}
	if err := e.cchost.Stop(); err != nil {
		t.Fatal(err)
	}
	h, err := startCchost(host, cfg, "cchost-snp")
	if err != nil {
		t.Fatal(err)
	}
	e.cchost = h
	eventually(t, 20*time.Second, func() string {
		n := node(t)
		if d := labelsDiff(n, after.Labels); d != "" {
			return d
		}
		for k := range before.Labels {
			if _, still := after.Labels[k]; !still {
				if v, ok := n.Labels[k]; ok {
					return fmt.Sprintf("label %s=%s is still on the node", k, v)
				}
			}
		}
		for k := range before.ExtendedResources {
			if _, still := after.ExtendedResources[k]; !still && capacity(n, corev1ResourceName(k)) != "absent" {
				return fmt.Sprintf("capacity %s is still on the node", k)
			}
		}
		if n.Labels[foreign] != "someone-else" {
			return fmt.Sprintf("the foreign label %s is %q", foreign, n.Labels[foreign])
		}
		return resourcesDiff(n, after.ExtendedResources)
	})
	// Back to the node's own host.
	if err := e.cchost.Stop(); err != nil {
		t.Fatal(err)
	}
	if e.cchost, err = startCchost(e.hostRoot, e.config, "cchost-3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string { return labelsDiff(node(t), before.Labels) })
	waitAllocatable(t, "4", 30*time.Second)
}
