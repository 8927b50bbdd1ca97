package k8s

// The real-cluster tier: one cluster (harness.Start) for the whole `go test` run,
// cchost run as its DaemonSet runs it (deploy/kubernetes/), and the tests in this
// package in source order against it. `bash tests/k8s/run.sh` builds what is needed
// and runs them; a cluster that cannot start fails the run, it never skips.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cchost.test/k8s/harness"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const (
	nodeA     = "node-a"
	nodeB     = "node-b"
	cchostNS  = harness.CchostNamespace
	cchostSA  = harness.CchostServiceAccount
	testImage = harness.ImageName
)

// The fixture host's four GPUs on vfio-pci: IOMMU groups 5, 7 (NUMA 0) and 11, 13
// (NUMA 1) (tests/host/README.md, gpus-on-vfio).
var fixtureGroups = []int{5, 7, 11, 13}

// env is the state shared by the tests of one run.
type env struct {
	repo      string
	cchostBin string
	cluster   *harness.Cluster
	hostRoot  string
	manifests []*unstructured.Unstructured
	deploy    *harness.Deploy
	config    string // the ConfigMap's config.toml, as deployed
	cchost    *harness.Cchost
	tokenA    string
	tokenB    string
	started   time.Time // when the first cchost started
}

var e env

func TestMain(m *testing.M) {
	code := 1
	if err := setUp(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the test cluster did not start: %v\n", err)
	} else {
		code = m.Run()
	}
	if err := tearDown(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: teardown: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

func setUp() error {
	e.repo = repoRoot()
	e.cchostBin = os.Getenv("CCHOST_BIN")
	if e.cchostBin == "" {
		e.cchostBin = filepath.Join(e.repo, "target", "debug", "cchost")
	}
	if _, err := os.Stat(e.cchostBin); err != nil {
		return fmt.Errorf("cchost binary (cargo build, or set CCHOST_BIN): %w", err)
	}
	binDir := os.Getenv("CCHOST_K8S_BIN")
	if binDir == "" {
		binDir = filepath.Join(e.repo, "tests", "k8s", ".cache", "bin")
	}
	// Short: the kubelet's and cchost's unix sockets live below it (108-byte limit).
	dir, err := os.MkdirTemp("", "ck")
	if err != nil {
		return err
	}
	e.hostRoot = filepath.Join(dir, "host")
	if err := makeHost(e.hostRoot, "gpus-on-vfio"); err != nil {
		return err
	}
	e.cluster, err = harness.Start(harness.Options{
		BinDir:          binDir,
		Dir:             dir,
		NodeName:        nodeA,
		HostRoot:        e.hostRoot,
		VfioGroups:      fixtureGroups,
		RuntimeHandlers: []string{kataCCHandler, kataGPUHandler, kataTDXGPUHandler},
		// Faster than the kubelet's 10 s: the tests wait for allocatable changes.
		NodeStatusUpdateFrequency: 2 * time.Second,
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if e.deploy, err = harness.LoadDeploy(e.repo); err != nil {
		return err
	}
	e.manifests, e.config = e.deploy.Manifests, e.deploy.Config
	if err := e.cluster.Install(ctx, e.deploy); err != nil {
		return err
	}
	// The DaemonSet's pod on node A, and one bound to node B, a Node without a kubelet.
	if e.tokenA, err = e.cluster.NodeToken(ctx, nodeA, false, true); err != nil {
		return err
	}
	if e.tokenB, err = e.cluster.NodeToken(ctx, nodeB, true, false); err != nil {
		return err
	}
	e.started = time.Now()
	e.cchost, err = startCchost(e.hostRoot, e.config, "cchost")
	return err
}

func tearDown() error {
	var errs []string
	if e.cchost != nil {
		if err := e.cchost.Stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if e.cluster != nil {
		if err := e.cluster.Stop(); err != nil {
			errs = append(errs, err.Error())
		}
		if os.Getenv("CCHOST_K8S_KEEP") == "" && len(errs) == 0 {
			_ = os.RemoveAll(e.cluster.Dir)
		} else {
			fmt.Fprintf(os.Stderr, "cluster files kept in %s\n", e.cluster.Dir)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func makeHost(dir, fixture string) error { return harness.MakeHost(e.repo, dir, fixture) }

// startCchost runs `cchost run` as the DaemonSet runs it, on node A with its token.
func startCchost(hostRoot, config, name string) (*harness.Cchost, error) {
	return e.cluster.StartCchostAsDaemonSet(e.deploy, e.cchostBin, hostRoot, config, name, nodeA, e.tokenA)
}

// node reads node A.
func node(t *testing.T) *corev1.Node {
	t.Helper()
	n, err := e.cluster.Admin.CoreV1().Nodes().Get(context.Background(), nodeA, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// eventually polls cond every 100 ms until it returns "" or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for time.Now().Before(deadline) {
		if why = cond(); why == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after %s: %s\ncchost log (tail):\n%s", timeout, why, tail(e.cchost.Output(), 3000))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestCluster runs the tier's tests in order: each leaves the node as the next expects
// (the steady-state test runs late, on a settled node; the RBAC test comes last, so the
// audit log covers the whole run).
func TestCluster(t *testing.T) {
	for _, s := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"LabelsAndExtendedResourcesBySSA", testLabelsAndExtendedResourcesBySSA},
		{"DevicePluginRegistersWithTheKubelet", testDevicePluginRegistersWithTheKubelet},
		{"PodGetsOneGPUThroughCDI", testPodGetsOneGPUThroughCDI},
		{"TwoGPUPodGetsANUMAAlignedPair", testTwoGPUPodGetsANUMAAlignedPair},
		{"KubeletRestart", testKubeletRestart},
		{"CchostRestart", testCchostRestart},
		{"VfioNodeRemovedMakesTheDeviceUnhealthy", testVfioNodeRemovedMakesTheDeviceUnhealthy},
		{"HandRemovedLabelComesBack", testHandRemovedLabelComesBack},
		{"RuntimeClassPodLands", testRuntimeClassPodLands},
		{"MixedNodeRunsBothRuntimeClasses", testMixedNodeRunsBothRuntimeClasses},
		{"ChangedFactsRemoveOnlyCchostsLabels", testChangedFactsRemoveOnlyCchostsLabels},
		{"NodeFeatureBackend", testNodeFeatureBackend},
		{"TokenCarriesTheNodeClaim", testTokenCarriesTheNodeClaim},
		{"OwnNodePolicy", testOwnNodePolicy},
		{"SteadyState", testSteadyState},
		{"RBACFromEvidence", testRBACFromEvidence},
	} {
		if !t.Run(s.name, s.f) && os.Getenv("CCHOST_K8S_FAILFAST") != "" {
			return
		}
	}
}
