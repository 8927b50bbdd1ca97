package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const pgpu = corev1.ResourceName("nvidia.com/pgpu")

// gpuPod is a pod that lists its /dev/vfio and then sleeps.
func gpuPod(name string, gpus int64, runtimeClass string) *corev1.Pod {
	zero := int64(0)
	f := false
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			HostNetwork:                   true,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &zero,
			AutomountServiceAccountToken:  &f,
			Containers: []corev1.Container{{
				Name: "c", Image: testImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sh", "-c", "ls /dev/vfio; echo END; exec sleep 1000000"},
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{pgpu: *resource.NewQuantity(gpus, resource.DecimalSI)},
				},
			}},
		},
	}
	if runtimeClass != "" {
		p.Spec.RuntimeClassName = &runtimeClass
	}
	return p
}

// runGPUPod creates the pod, waits until it runs and returns what its container lists in
// /dev/vfio (sorted).
func runGPUPod(t *testing.T, p *corev1.Pod) []string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.cluster.Admin.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cluster.WaitPod(ctx, p.Namespace, p.Name, 90*time.Second, func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning
	}); err != nil {
		t.Fatalf("%v\ncchost log:\n%s", err, tail(e.cchost.Output(), 3000))
	}
	var out string
	eventually(t, 20*time.Second, func() string {
		var err error
		out, err = e.cluster.PodLogs(ctx, p.Namespace, p.Name)
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(out, "END") {
			return "no END in the log yet: " + out
		}
		return ""
	})
	out, _, _ = strings.Cut(out, "END")
	entries := strings.Fields(out)
	slices.Sort(entries)
	return entries
}

func allocatable(n *corev1.Node, r corev1.ResourceName) string {
	q, ok := n.Status.Allocatable[r]
	if !ok {
		return "absent"
	}
	return q.String()
}

func capacity(n *corev1.Node, r corev1.ResourceName) string {
	q, ok := n.Status.Capacity[r]
	if !ok {
		return "absent"
	}
	return q.String()
}

func waitAllocatable(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() string {
		if got := allocatable(node(t), pgpu); got != want {
			return fmt.Sprintf("allocatable %s = %s, want %s", pgpu, got, want)
		}
		return ""
	})
}

// stopCchost stops the running cchost (SIGTERM) and waits until the kubelet has seen
// its plugin go: nothing of nvidia.com/pgpu allocatable.
func stopCchost(t *testing.T) {
	t.Helper()
	if err := e.cchost.Stop(); err != nil {
		t.Fatal(err)
	}
	waitAllocatable(t, "0", 30*time.Second)
}

// cchost registers nvidia.com/pgpu with the kubelet; the Node shows the four GPUs.
func testDevicePluginRegistersWithTheKubelet(t *testing.T) {
	waitAllocatable(t, "4", 20*time.Second)
	if got := capacity(node(t), pgpu); got != "4" {
		t.Fatalf("capacity %s = %s, want 4", pgpu, got)
	}
}

// A pod asking for one GPU is scheduled, the kubelet calls Allocate, containerd resolves
// the CDI names of cchost's spec, and the container sees exactly that group's node.
func testPodGetsOneGPUThroughCDI(t *testing.T) {
	waitAllocatable(t, "4", 20*time.Second)
	got := runGPUPod(t, gpuPod("gpu1", 1, ""))
	if len(got) != 2 || !slices.Contains(got, "vfio") {
		t.Fatalf("/dev/vfio in the container: %v, want vfio and one group", got)
	}
	group := got[0]
	if !slices.Contains(fixtureGroupNames(), group) {
		t.Fatalf("/dev/vfio/%s is not one of the fixture's groups %v", group, fixtureGroups)
	}
	if ids := allocated(t, "gpu1"); !slices.Equal(ids, []string{group}) {
		t.Fatalf("the kubelet allocated %v, the container has /dev/vfio/%s", ids, group)
	}
}

// With GPU 1 taken, a 2-GPU pod gets the pair on one NUMA node, as cchost's
// GetPreferredAllocation says; the kubelet's own choice is not NUMA-aware.
func testTwoGPUPodGetsANUMAAlignedPair(t *testing.T) {
	first := allocated(t, "gpu1")
	if len(first) != 1 {
		t.Fatalf("gpu1 holds %v", first)
	}
	// The fixture: 5, 7 on NUMA 0; 11, 13 on NUMA 1. Two are left on the node that gpu1
	// did not touch, one on the other.
	want := []string{"11", "13"}
	if first[0] == "11" || first[0] == "13" {
		want = []string{"5", "7"}
	}
	got := runGPUPod(t, gpuPod("gpu2", 2, ""))
	if !slices.Equal(got, append(slices.Clone(want), "vfio")) {
		t.Fatalf("/dev/vfio in the 2-GPU container: %v, want %v and vfio", got, want)
	}
	if ids := allocated(t, "gpu2"); !slices.Equal(ids, want) {
		t.Fatalf("the kubelet allocated %v, want %v", ids, want)
	}
	if err := e.cluster.DeletePod(context.Background(), "default", "gpu2"); err != nil {
		t.Fatal(err)
	}
}

// The kubelet restarts: cchost registers again, the Node's allocatable comes back and
// the running pod keeps its devices.
func testKubeletRestart(t *testing.T) {
	before := allocated(t, "gpu1")
	pod0, err := e.cluster.Admin.CoreV1().Pods("default").Get(context.Background(), "gpu1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	registrations := strings.Count(e.cchost.Output(), "registered")
	if err := e.cluster.StopKubelet(); err != nil {
		t.Fatal(err)
	}
	if err := e.cluster.StartKubelet(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	// A status the new kubelet posted, not the old one's.
	eventually(t, 60*time.Second, func() string {
		for _, c := range node(t).Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && c.LastHeartbeatTime.After(restarted.Add(-time.Second)) {
				return ""
			}
		}
		return "no Ready heartbeat from the restarted kubelet yet"
	})
	eventually(t, 30*time.Second, func() string {
		if n := strings.Count(e.cchost.Output(), "registered"); n <= registrations {
			return "cchost did not register again"
		}
		return ""
	})
	waitAllocatable(t, "4", 30*time.Second)
	pod1, err := e.cluster.Admin.CoreV1().Pods("default").Get(context.Background(), "gpu1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod1.Status.Phase != corev1.PodRunning || containerID(pod1) != containerID(pod0) {
		t.Fatalf("gpu1 after the kubelet restart: %s, container %s (was %s)", pod1.Status.Phase, containerID(pod1), containerID(pod0))
	}
	if after := allocated(t, "gpu1"); !slices.Equal(after, before) {
		t.Fatalf("gpu1's devices: %v before the restart, %v after", before, after)
	}
}

// cchost restarts (SIGTERM, start again): the running pod is not touched and the
// capacity comes back.
func testCchostRestart(t *testing.T) {
	pod0, err := e.cluster.Admin.CoreV1().Pods("default").Get(context.Background(), "gpu1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The kubelet sees the plugin gone: its devices are no longer allocatable.
	stopCchost(t)
	e.cchost, err = startCchost(e.hostRoot, e.config, "cchost-2")
	if err != nil {
		t.Fatal(err)
	}
	waitAllocatable(t, "4", 30*time.Second)
	pod1, err := e.cluster.Admin.CoreV1().Pods("default").Get(context.Background(), "gpu1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod1.Status.Phase != corev1.PodRunning || containerID(pod1) != containerID(pod0) {
		t.Fatalf("gpu1 after the cchost restart: %s, container %s (was %s)", pod1.Status.Phase, containerID(pod1), containerID(pod0))
	}
}

// A vfio group node disappears: the device turns Unhealthy (capacity stays, allocatable
// drops); it comes back when the node does.
func testVfioNodeRemovedMakesTheDeviceUnhealthy(t *testing.T) {
	waitAllocatable(t, "4", 30*time.Second)
	taken := allocated(t, "gpu1")
	victim := "13"
	if slices.Contains(taken, victim) {
		victim = "11"
	}
	path := filepath.Join(e.hostRoot, "dev/vfio", victim)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if out, err := e.cluster.NodeExec("rm", "/dev/vfio/"+victim); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 30*time.Second, func() string {
		n := node(t)
		if a, c := allocatable(n, pgpu), capacity(n, pgpu); a != "3" || c != "4" {
			return fmt.Sprintf("allocatable %s, capacity %s; want 3 and 4", a, c)
		}
		return ""
	})
	if !strings.Contains(e.cchost.Output(), "/dev/vfio/"+victim) {
		t.Errorf("cchost's log does not name /dev/vfio/%s", victim)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := e.cluster.NodeExec("sh", "-c", fmt.Sprintf("mknod /dev/vfio/%s c %d %s", victim, e.cluster.VfioMajor(), victim)); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitAllocatable(t, "4", 30*time.Second)
}

func containerID(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		return cs.ContainerID
	}
	return ""
}

func fixtureGroupNames() []string {
	var s []string
	for _, g := range fixtureGroups {
		s = append(s, fmt.Sprint(g))
	}
	return s
}

// allocated reads which nvidia.com/pgpu IDs the kubelet gave the pod, from the device
// manager's checkpoint (pkg/kubelet/cm/devicemanager/checkpoint: PodDeviceEntries with
// DeviceIDs per NUMA node), sorted.
func allocated(t *testing.T, pod string) []string {
	t.Helper()
	p, err := e.cluster.Admin.CoreV1().Pods("default").Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(e.hostRoot, "var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	var cp struct {
		Data struct {
			PodDeviceEntries []struct {
				PodUID       string
				ResourceName string
				DeviceIDs    map[string][]string
			}
		}
	}
	if err := json.Unmarshal(data, &cp); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, en := range cp.Data.PodDeviceEntries {
		if en.PodUID == string(p.UID) && en.ResourceName == string(pgpu) {
			for _, l := range en.DeviceIDs {
				ids = append(ids, l...)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func corev1ResourceName(s string) corev1.ResourceName { return corev1.ResourceName(s) }
