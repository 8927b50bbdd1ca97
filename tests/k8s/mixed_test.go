package k8s

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"cchost.test/k8s/harness"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The handlers of the mixed-node RuntimeClasses cchost ships
// (deploy/kubernetes/runtimeclasses-mixed-gpu.yaml: OpenShift sandboxed containers'
// own handler names); the test's containerd maps them to runc.
const (
	kataGPUHandler    = "kata-nvidia-gpu"
	kataTDXGPUHandler = "kata-tdx-nvidia-gpu"
	pgpuNoCC          = corev1.ResourceName("nvidia.com/pgpu-nocc")
)

// mixedModes is the `[[cc.modes]]` of the mixed node: the two GPUs with the lowest PCI
// addresses in CC, the other two not (docs/config.md).
const mixedModes = `
[[cc.modes]]
mode = "on"
count = 2

[[cc.modes]]
mode = "off"
count = 2
`

// A mixed node (issue 11 item 3) on the real cluster: cchost serves two GPUs as
// nvidia.com/pgpu and two as nvidia.com/pgpu-nocc, labels the node
// cchost.io/cc.mode.state=mixed, and a pod of each shipped mixed RuntimeClass (the
// plain one asking for a non-CC GPU, the TDX one for a CC GPU) lands on the node and
// gets a GPU of its kind. The node is put back as the next tests expect.
func testMixedNodeRunsBothRuntimeClasses(t *testing.T) {
	ctx := context.Background()
	gpus := gpuAddresses(t)
	if len(gpus) != 4 {
		t.Fatalf("fixture GPUs: %v", gpus)
	}
	on, off := gpus[:2], gpus[2:]
	// The firmware of the last two reads CC off, as [[cc.modes]] wants (cchost switches
	// nothing that is already in its mode; a fixture cannot run the FSP mailbox).
	if err := e.cchost.Stop(); err != nil {
		t.Fatal(err)
	}
	setModes := func(reg uint32) {
		for _, g := range off {
			if err := harness.SetCCRegister(filepath.Join(e.hostRoot, "sys/bus/pci/devices", g, "resource0"), reg); err != nil {
				t.Fatal(err)
			}
		}
	}
	setModes(0)
	var err error
	if e.cchost, err = startCchost(e.hostRoot, e.config+mixedModes, "cchost-mixed"); err != nil {
		t.Fatal(err)
	}
	objs, err := harness.Objects(filepath.Join(e.repo, "deploy/kubernetes/runtimeclasses-mixed-gpu.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cluster.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, o := range objs {
			_ = e.cluster.Admin.NodeV1().RuntimeClasses().Delete(ctx, o.GetName(), metav1.DeleteOptions{})
		}
		for _, p := range []string{"mixed-plain", "mixed-cc"} {
			_ = e.cluster.DeletePod(ctx, "default", p)
		}
		// Back to the node the next tests expect: every GPU in CC, the stock config.
		if err := e.cchost.Stop(); err != nil {
			t.Error(err)
		}
		setModes(1)
		if e.cchost, err = startCchost(e.hostRoot, e.config, "cchost-4"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, func() string {
			n := node(t)
			if n.Labels["nvidia.com/cc.mode.state"] != "on" {
				return fmt.Sprintf("cc.mode.state %q after the mixed test", n.Labels["nvidia.com/cc.mode.state"])
			}
			if q := n.Status.Allocatable[pgpu]; q.Value() != 4 {
				return fmt.Sprintf("allocatable %s = %s after the mixed test", pgpu, q.String())
			}
			return ""
		})
	}()

	eventually(t, 60*time.Second, func() string {
		n := node(t)
		if got := n.Labels["cchost.io/cc.mode.state"]; got != "mixed" {
			return fmt.Sprintf("cchost.io/cc.mode.state = %q, want mixed", got)
		}
		if _, ok := n.Labels["nvidia.com/cc.mode.state"]; ok {
			return "nvidia.com/cc.mode.state is set on a mixed node"
		}
		for r, want := range map[corev1.ResourceName]int64{pgpu: 2, pgpuNoCC: 2} {
			if q := n.Status.Allocatable[r]; q.Value() != want {
				return fmt.Sprintf("allocatable %s = %s, want %d", r, q.String(), want)
			}
		}
		return ""
	})

	groupOf := func(addr string) string {
		l, err := os.Readlink(filepath.Join(e.hostRoot, "sys/bus/pci/devices", addr, "iommu_group"))
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Base(l)
	}
	groups := func(addrs []string) []string {
		var out []string
		for _, a := range addrs {
			out = append(out, groupOf(a))
		}
		return out
	}
	for _, c := range []struct {
		pod, class string
		res        corev1.ResourceName
		want       []string
	}{
		{"mixed-plain", "kata-nvidia-gpu-mixed", pgpuNoCC, groups(off)},
		{"mixed-cc", "kata-cc-nvidia-gpu-mixed-tdx", pgpu, groups(on)},
	} {
		p := gpuPod(c.pod, 0, c.class)
		p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{c.res: *resource.NewQuantity(1, resource.DecimalSI)}
		got := runGPUPod(t, p)
		// /dev/vfio lists the container node and the one group of its GPU.
		var group string
		for _, g := range got {
			if _, err := strconv.Atoi(g); err == nil {
				group = g
			}
		}
		if len(got) != 2 || !slices.Contains(c.want, group) {
			t.Errorf("%s (%s, %s): /dev/vfio holds %v, want vfio and one of groups %v", c.pod, c.class, c.res, got, c.want)
		}
		pod, err := e.cluster.Admin.CoreV1().Pods("default").Get(ctx, c.pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Spec.NodeName != nodeA {
			t.Errorf("%s on node %q", c.pod, pod.Spec.NodeName)
		}
	}
}

// gpuAddresses lists the fixture's NVIDIA 3D controllers (the GPUs), sorted.
func gpuAddresses(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(e.hostRoot, "sys/bus/pci/devices/*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		if harness.IsNvidiaGPU(d) {
			out = append(out, filepath.Base(d))
		}
	}
	slices.Sort(out)
	return out
}
