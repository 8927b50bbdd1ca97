package k8s

// The real-cluster tier: one cluster (harness.Start) for the whole `go test` run,
// cchost run as its DaemonSet runs it (deploy/kubernetes/), and the tests in this
// package in source order against it. `bash tests/k8s/run.sh` builds what is needed
// and runs them; a cluster that cannot start fails the run, it never skips.

import (
	"context"
	"encoding/binary"
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
	cchostNS  = "cchost"
	cchostSA  = "cchost"
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
	policy    []*unstructured.Unstructured
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
		RuntimeHandlers: []string{kataCCHandler},
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if e.manifests, err = harness.Objects(filepath.Join(e.repo, "deploy/kubernetes/cchost.yaml")); err != nil {
		return err
	}
	if e.policy, err = harness.Objects(filepath.Join(e.repo, "deploy/kubernetes/cchost-own-node.yaml")); err != nil {
		return err
	}
	if err := e.cluster.Apply(ctx, e.manifests); err != nil {
		return err
	}
	if err := e.cluster.Apply(ctx, e.policy); err != nil {
		return err
	}
	if e.config, err = harness.ConfigMapData(e.manifests, "cchost-config", "config.toml"); err != nil {
		return err
	}
	// No controller-manager runs, so no "default" service accounts appear by themselves.
	for _, ns := range []string{"default", cchostNS} {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
		if _, err := e.cluster.Admin.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	// The DaemonSet's pod on node A (a stand-in running the test image: cchost itself runs
	// beside it as a process) and one bound to node B, a Node without a kubelet.
	if _, err := e.cluster.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeB}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, n := range []string{nodeA, nodeB} {
		if _, err := e.cluster.Admin.CoreV1().Pods(cchostNS).Create(ctx, standInPod(n), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if _, err := e.cluster.WaitPod(ctx, cchostNS, "cchost-"+nodeA, 120*time.Second, func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning
	}); err != nil {
		return err
	}
	if e.tokenA, err = e.cluster.PodToken(ctx, cchostNS, cchostSA, "cchost-"+nodeA); err != nil {
		return err
	}
	if e.tokenB, err = e.cluster.PodToken(ctx, cchostNS, cchostSA, "cchost-"+nodeB); err != nil {
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

// standInPod is the pod the kubelet's projected token of cchost would be bound to.
func standInPod(node string) *corev1.Pod {
	zero := int64(0)
	f := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cchost-" + node, Namespace: cchostNS},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            cchostSA,
			AutomountServiceAccountToken:  &f,
			HostNetwork:                   true,
			TerminationGracePeriodSeconds: &zero,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: "stand-in", Image: testImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sleep", "1000000"},
			}},
		},
	}
}

// makeHost copies a fixture host to dir as a legacy-VFIO host (no iommufd nodes: the
// device IDs are IOMMU groups) whose GPUs report CC mode on through their BAR0
// registers (the layout tests/labels_cc_mode.rs uses).
func makeHost(dir, fixture string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := harness.CopyTree(filepath.Join(repoRoot(), "tests/host", fixture), dir); err != nil {
		return err
	}
	for _, p := range []string{"dev/iommu", "dev/vfio/devices"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			return err
		}
	}
	gpus, _ := filepath.Glob(filepath.Join(dir, "sys/bus/pci/devices/*"))
	for _, g := range gpus {
		vendor, _ := os.ReadFile(filepath.Join(g, "vendor"))
		class, _ := os.ReadFile(filepath.Join(g, "class"))
		if strings.TrimSpace(string(vendor)) != "0x10de" || !strings.HasPrefix(strings.TrimSpace(string(class)), "0x0302") {
			continue
		}
		if err := setCCOn(filepath.Join(g, "resource0")); err != nil {
			return err
		}
	}
	return nil
}

// BAR0 registers of a Hopper GPU (src/gpu/cc/regs.rs): BOOT_0 (chip ID GH100), the FSP
// boot-complete scratch register, and the CC register (mode 1 = on).
func setCCOn(resource0 string) error {
	f, err := os.OpenFile(resource0, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const boot0, bootComplete, ccHopper = 0x0, 0x200bc, 0x1182cc
	if err := f.Truncate(ccHopper + 4096); err != nil {
		return err
	}
	for off, v := range map[int64]uint32{boot0: 0x180000a1, bootComplete: 0xff, ccHopper: 1} {
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, v)
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
	}
	return nil
}

// startCchost runs `cchost run` with the DaemonSet's arguments and identity on node A.
func startCchost(hostRoot, config, name string) (*harness.Cchost, error) {
	cfgPath := filepath.Join(e.cluster.Dir, name+"-config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	args, err := harness.DaemonSetArgs(e.manifests, hostRoot, cfgPath)
	if err != nil {
		return nil, err
	}
	env := []string{"CCHOST_LOG=info"}
	for _, o := range e.manifests {
		if o.GetKind() == "DaemonSet" {
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, ci := range cs {
				envs, _, _ := unstructured.NestedSlice(ci.(map[string]any), "env")
				for _, ev := range envs {
					m := ev.(map[string]any)
					if v, ok := m["value"].(string); ok {
						env = append(env, fmt.Sprintf("%s=%s", m["name"], v))
					}
				}
			}
		}
	}
	return e.cluster.StartCchost(harness.CchostOptions{
		Binary: e.cchostBin, Args: args, Token: e.tokenA,
		NodeName: nodeA, Namespace: cchostNS, LogName: name, Env: env,
	})
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
// (the RBAC test comes last, so the audit log covers the whole run).
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
		{"ChangedFactsRemoveOnlyCchostsLabels", testChangedFactsRemoveOnlyCchostsLabels},
		{"NodeFeatureBackend", testNodeFeatureBackend},
		{"TokenCarriesTheNodeClaim", testTokenCarriesTheNodeClaim},
		{"OwnNodePolicy", testOwnNodePolicy},
		{"RBACFromEvidence", testRBACFromEvidence},
	} {
		if !t.Run(s.name, s.f) && os.Getenv("CCHOST_K8S_FAILFAST") != "" {
			return
		}
	}
}
