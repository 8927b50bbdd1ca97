package k8s

import (
	"context"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kataCCHandler is the handler of OpenShift sandboxed containers' kata-cc-nvidia-gpu
// RuntimeClass; the test's containerd maps it to runc (no Kata here: what is tested is
// that the pod lands on cchost's node with its GPU, not the VM).
const kataCCHandler = "kata-cc-nvidia-gpu"

// oscKataCCNvidiaGPUTDX is the RuntimeClass's node selector on a TDX node, as the
// sandboxed-containers operator builds it (openshift/sandboxed-containers-operator
// controllers/confidential_handler.go, handleConfidentialBaremetal: the NVIDIA GPU
// labels with nvidiaGPUCCNodeLabels, plus intelTDXNodeLabels; the same list
// tests/fixture_hosts/consumer_selectors.rs encodes).
var oscKataCCNvidiaGPUTDX = map[string]string{
	"nvidia.com/gpu.present":                           "true",
	"nvidia.com/gpu.deploy.vfio-manager":               "true",
	"nvidia.com/gpu.deploy.kata-sandbox-device-plugin": "true",
	"nvidia.com/cc.mode.state":                         "on",
	"nvidia.com/cc.ready.state":                        "true",
	"intel.feature.node.kubernetes.io/tdx":             "true",
}

// The runtime-class path of the seeds: a RuntimeClass made as the sandboxed-containers
// operator makes kata-cc-nvidia-gpu (node selector, overhead tdx.intel.com/keys: 1), and
// a pod of that class asking for one GPU lands on cchost's node and runs with its GPU.
func testRuntimeClassPodLands(t *testing.T) {
	ctx := context.Background()
	rc := &nodev1.RuntimeClass{
		ObjectMeta: metav1.ObjectMeta{Name: "kata-cc-nvidia-gpu"},
		Handler:    kataCCHandler,
		Overhead: &nodev1.Overhead{PodFixed: corev1.ResourceList{
			"tdx.intel.com/keys": resource.MustParse("1"),
		}},
		Scheduling: &nodev1.Scheduling{NodeSelector: oscKataCCNvidiaGPUTDX},
	}
	if _, err := e.cluster.Admin.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n := node(t)
	var missing []string
	for k, v := range oscKataCCNvidiaGPUTDX {
		if n.Labels[k] != v {
			missing = append(missing, fmt.Sprintf("%s=%s (node has %q)", k, v, n.Labels[k]))
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("cchost's node lacks labels of the RuntimeClass's selector: %v", missing)
	}
	got := runGPUPod(t, gpuPod("kata-cc", 1, rc.Name))
	if len(got) != 2 || !slices.Contains(got, "vfio") {
		t.Fatalf("/dev/vfio in the kata-cc-nvidia-gpu container: %v", got)
	}
	p, err := e.cluster.Admin.CoreV1().Pods("default").Get(ctx, "kata-cc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.NodeName != nodeA || p.Spec.Overhead.Name("tdx.intel.com/keys", resource.DecimalSI).Value() != 1 {
		t.Fatalf("pod on %q with overhead %v", p.Spec.NodeName, p.Spec.Overhead)
	}
	if err := e.cluster.DeletePod(ctx, "default", "kata-cc"); err != nil {
		t.Fatal(err)
	}
}
