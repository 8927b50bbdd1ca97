package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// plan is what `cchost plan --json` says the labels and extended resources are.
type plan struct {
	Labels            map[string]string `json:"labels"`
	ExtendedResources map[string]string `json:"extended_resources"`
}

func cchostPlan(t *testing.T, hostRoot, config string) plan {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// `cchost plan` exits 1 when the plan has changes to make (kernel arguments here).
	out, runErr := exec.Command(e.cchostBin, "--host-root", hostRoot, "--config", cfg, "plan", "--json").Output()
	var p plan
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("cchost plan: %v; %v", runErr, err)
	}
	if len(p.Labels) == 0 {
		t.Fatalf("cchost plan has no labels for %s", hostRoot)
	}
	return p
}

// owned returns the keys under fields f:<path...> of the managedFields entry of
// manager cchost (operation Apply) for the subresource ("" = the object).
func owned(n *corev1.Node, subresource string, path ...string) []string {
	for _, mf := range n.ManagedFields {
		if mf.Manager != "cchost" || mf.Operation != metav1.ManagedFieldsOperationApply || mf.Subresource != subresource || mf.FieldsV1 == nil {
			continue
		}
		var m map[string]any
		if json.Unmarshal(mf.FieldsV1.Raw, &m) != nil {
			return nil
		}
		for _, p := range path {
			m, _ = m["f:"+p].(map[string]any)
		}
		var keys []string
		for k := range m {
			if s, ok := strings.CutPrefix(k, "f:"); ok {
				keys = append(keys, s)
			}
		}
		slices.Sort(keys)
		return keys
	}
	return nil
}

// labelsDiff says how the Node's labels differ from want (the keys cchost owns must be
// exactly want's, with want's values), or "".
func labelsDiff(n *corev1.Node, want map[string]string) string {
	keys := slices.Sorted(maps.Keys(want))
	if got := owned(n, "", "metadata", "labels"); !slices.Equal(got, keys) {
		return fmt.Sprintf("labels owned by field manager cchost: %v, want %v", got, keys)
	}
	for k, v := range want {
		if n.Labels[k] != v {
			return fmt.Sprintf("label %s = %q, want %q", k, n.Labels[k], v)
		}
	}
	return ""
}

func resourcesDiff(n *corev1.Node, want map[string]string) string {
	keys := slices.Sorted(maps.Keys(want))
	if got := owned(n, "status", "status", "capacity"); !slices.Equal(got, keys) {
		return fmt.Sprintf("capacity owned by field manager cchost: %v, want %v", got, keys)
	}
	for k, v := range want {
		q := n.Status.Capacity[corev1.ResourceName(k)]
		if q.String() != v {
			return fmt.Sprintf("capacity %s = %q, want %q", k, q.String(), v)
		}
	}
	return ""
}

// The labels and extended resources cchost computes (`cchost plan`) are on the Node,
// written by Server-Side Apply under field manager cchost (labels on the object,
// extended resources on the status subresource).
func testLabelsAndExtendedResourcesBySSA(t *testing.T) {
	want := cchostPlan(t, e.hostRoot, e.config)
	for _, k := range []string{"intel.feature.node.kubernetes.io/tdx", "nvidia.com/cc.mode.state"} {
		if want.Labels[k] == "" {
			t.Fatalf("the fixture host should give %s (plan: %v)", k, want.Labels)
		}
	}
	if want.ExtendedResources["tdx.intel.com/keys"] == "" {
		t.Fatalf("the plan has no tdx.intel.com/keys: %v", want.ExtendedResources)
	}
	eventually(t, 20*time.Second, func() string {
		n := node(t)
		if d := labelsDiff(n, want.Labels); d != "" {
			return d
		}
		return resourcesDiff(n, want.ExtendedResources)
	})
}

// A label removed by hand (another manager's update) comes back.
func testHandRemovedLabelComesBack(t *testing.T) {
	want := cchostPlan(t, e.hostRoot, e.config)
	eventually(t, 20*time.Second, func() string { return labelsDiff(node(t), want.Labels) })
	const key = "intel.feature.node.kubernetes.io/tdx"
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, key)
	if _, err := e.cluster.Admin.CoreV1().Nodes().Patch(context.Background(), nodeA, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "admin-by-hand"}); err != nil {
		t.Fatal(err)
	}
	if v, ok := node(t).Labels[key]; ok {
		t.Fatalf("the label was not removed: %q", v)
	}
	eventually(t, 10*time.Second, func() string {
		if v := node(t).Labels[key]; v != want.Labels[key] {
			return fmt.Sprintf("%s = %q, want it back as %q", key, v, want.Labels[key])
		}
		return ""
	})
}
