package k8s

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"cchost.test/k8s/harness"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// steadyWindow is how long the steady-state test watches cchost: CCHOST_K8S_STEADY (a Go
// duration, e.g. 10m for a measurement), 20 s by default (CI). cchost's watch asks for
// 290 s, so a window longer than that also sees the watch re-opened.
func steadyWindow(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("CCHOST_K8S_STEADY")
	if v == "" {
		return 20 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("CCHOST_K8S_STEADY=%q: want a Go duration such as 10m", v)
	}
	return d
}

// cchostRequest says whether an audit event is a request of the cchost process on node
// A (its ServiceAccount with node A's pod-bound token, not the tests' own requests with
// that identity).
func cchostRequest(ev harness.AuditEvent) bool {
	if ev.User.Username != "system:serviceaccount:"+cchostNS+":"+cchostSA || strings.HasPrefix(ev.UserAgent, harness.TestUserAgent) {
		return false
	}
	nodes := ev.User.Extra["authentication.kubernetes.io/node-name"]
	return len(nodes) == 1 && nodes[0] == nodeA
}

// Steady state: once started, cchost costs the API server no write and at most one open
// watch per resource; on nodes exactly one (the own-Node watch). It runs with
// `cc.follow_label` on, so that both consumers of the own Node (the labeler's drift
// check and the CC-mode label) are there and must share that one watch. Counted from
// the API server's audit log (ResponseStarted/ResponseComplete of each watch).
func testSteadyState(t *testing.T) {
	window := steadyWindow(t)
	cfg := withConfig(t, "# [cc]\n", "[cc]\nfollow_label = true\n")
	// The running cchost's plugin registered (also when this test runs alone, -run).
	waitAllocatable(t, "4", 30*time.Second)
	// The old process's plugin gone, so that allocatable 4 below is the new one's.
	stopCchost(t)
	started := time.Now()
	var err error
	if e.cchost, err = startCchost(e.hostRoot, cfg, "cchost-steady"); err != nil {
		t.Fatal(err)
	}
	want := cchostPlan(t, e.hostRoot, cfg)
	eventually(t, 20*time.Second, func() string { return labelsDiff(node(t), want.Labels) })
	waitAllocatable(t, "4", 30*time.Second)
	// Start-up is over (inventory, the labeler's one read, the device plugin's
	// registration); what follows is steady state.
	time.Sleep(3 * time.Second)
	from := time.Now()
	time.Sleep(window)
	to := time.Now()
	if e.cchost.Exited() {
		t.Fatalf("cchost exited:\n%s", tail(e.cchost.Output(), 3000))
	}
	evs, err := harness.ReadAuditStages(e.cluster.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	startUp := harness.SteadyState(evs, cchostRequest, started, from)
	t.Logf("start-up: %s", startUp)
	s := harness.SteadyState(evs, cchostRequest, from, to)
	t.Logf("steady state: %s", s)
	for _, w := range s.Writes {
		t.Errorf("write in steady state: %s", w)
	}
	for r, n := range s.MaxOpenWatches {
		if n > 1 {
			t.Errorf("%d watches on %s open at once, want at most one per resource", n, r)
		}
	}
	if n := s.OpenWatchesAtEnd["/nodes"]; n != 1 {
		t.Errorf("%d watches on nodes open at the end, want 1 (the own-Node watch)", n)
	}
	// The shared watch still serves the labeler with the CC-mode follower on it: a label
	// removed by hand comes back.
	const key = "nvidia.com/cc.ready.state"
	if want.Labels[key] == "" {
		t.Fatalf("the plan has no %s", key)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, key)
	if _, err := e.cluster.Admin.CoreV1().Nodes().Patch(context.Background(), nodeA, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "admin-by-hand"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() string { return labelsDiff(node(t), want.Labels) })
}
