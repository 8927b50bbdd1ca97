package harness

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The names deploy/kubernetes/cchost.yaml gives cchost.
const (
	CchostNamespace      = "cchost"
	CchostServiceAccount = "cchost"
)

// Deploy is what deploy/kubernetes/ ships.
type Deploy struct {
	Manifests []*unstructured.Unstructured // cchost.yaml
	Policy    []*unstructured.Unstructured // cchost-own-node.yaml
	Config    string                       // the ConfigMap's config.toml
}

// LoadDeploy reads deploy/kubernetes/ of the repository.
func LoadDeploy(repo string) (*Deploy, error) {
	d := &Deploy{}
	var err error
	if d.Manifests, err = Objects(filepath.Join(repo, "deploy/kubernetes/cchost.yaml")); err != nil {
		return nil, err
	}
	if d.Policy, err = Objects(filepath.Join(repo, "deploy/kubernetes/cchost-own-node.yaml")); err != nil {
		return nil, err
	}
	if d.Config, err = ConfigMapData(d.Manifests, "cchost-config", "config.toml"); err != nil {
		return nil, err
	}
	return d, nil
}

// Install applies the manifests and the policy, and creates the "default" service
// accounts (no controller-manager runs to make them).
func (c *Cluster) Install(ctx context.Context, d *Deploy) error {
	if err := c.Apply(ctx, d.Manifests); err != nil {
		return err
	}
	if err := c.Apply(ctx, d.Policy); err != nil {
		return err
	}
	for _, ns := range []string{"default", CchostNamespace} {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
		if _, err := c.Admin.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// StandInPod is the DaemonSet's pod on node (it runs the test image; cchost itself runs
// beside it as a process): what cchost's token is bound to.
func StandInPod(node string) *corev1.Pod {
	zero := int64(0)
	f := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cchost-" + node, Namespace: CchostNamespace},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            CchostServiceAccount,
			AutomountServiceAccountToken:  &f,
			HostNetwork:                   true,
			TerminationGracePeriodSeconds: &zero,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: "stand-in", Image: ImageName, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sleep", "1000000"},
			}},
		},
	}
}

// NodeToken creates the stand-in pod on node (and the Node, when fake is set: a Node
// object without a kubelet) and returns a service-account token bound to that pod.
// With wait, it waits until the kubelet runs the pod.
func (c *Cluster) NodeToken(ctx context.Context, node string, fake, wait bool) (string, error) {
	if fake {
		if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
			return "", err
		}
	}
	if _, err := c.Admin.CoreV1().Pods(CchostNamespace).Create(ctx, StandInPod(node), metav1.CreateOptions{}); err != nil {
		return "", err
	}
	if wait {
		if _, err := c.WaitPod(ctx, CchostNamespace, "cchost-"+node, 120*time.Second, func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodRunning
		}); err != nil {
			return "", err
		}
	}
	return c.PodToken(ctx, CchostNamespace, CchostServiceAccount, "cchost-"+node)
}

// MakeHost copies tests/host/<fixture> to dir as a legacy-VFIO host (no iommufd nodes:
// the device IDs are IOMMU groups) whose NVIDIA GPUs report CC mode on through their
// BAR0 registers (the layout tests/fixture_hosts/labels_cc_mode.rs uses).
func MakeHost(repo, dir, fixture string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := CopyTree(filepath.Join(repo, "tests/host", fixture), dir); err != nil {
		return err
	}
	for _, p := range []string{"dev/iommu", "dev/vfio/devices"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			return err
		}
	}
	gpus, _ := filepath.Glob(filepath.Join(dir, "sys/bus/pci/devices/*"))
	for _, g := range gpus {
		if !IsNvidiaGPU(g) {
			continue
		}
		if err := SetCCRegister(filepath.Join(g, "resource0"), 1); err != nil {
			return err
		}
	}
	return nil
}

// IsNvidiaGPU says whether the PCI device directory dev is an NVIDIA 3D controller.
func IsNvidiaGPU(dev string) bool {
	vendor, _ := os.ReadFile(filepath.Join(dev, "vendor"))
	class, _ := os.ReadFile(filepath.Join(dev, "class"))
	return strings.TrimSpace(string(vendor)) == "0x10de" && strings.HasPrefix(strings.TrimSpace(string(class)), "0x0302")
}

// SetCCRegister writes the BAR0 registers of a Hopper GPU (src/gpu/cc/regs.rs): BOOT_0
// (chip ID GH100), the FSP boot-complete scratch register, and the CC register with
// mode (bits 1:0: 0 off, 1 on, 3 devtools).
func SetCCRegister(resource0 string, mode uint32) error {
	f, err := os.OpenFile(resource0, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const boot0, bootComplete, ccHopper = 0x0, 0x200bc, 0x1182cc
	if err := f.Truncate(ccHopper + 4096); err != nil {
		return err
	}
	for off, v := range map[int64]uint32{boot0: 0x180000a1, bootComplete: 0xff, ccHopper: mode} {
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, v)
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
	}
	return nil
}

// StartCchostAsDaemonSet runs `cchost run` with the DaemonSet's arguments and
// environment (paths replaced: the host root, the config file), config as its
// config.toml, on node with token.
func (c *Cluster) StartCchostAsDaemonSet(d *Deploy, bin, hostRoot, config, name, node, token string) (*Cchost, error) {
	cfgPath := filepath.Join(c.Dir, name+"-config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	args, err := DaemonSetArgs(d.Manifests, hostRoot, cfgPath)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, o := range d.Manifests {
		if o.GetKind() != "DaemonSet" {
			continue
		}
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
	return c.StartCchost(CchostOptions{
		Binary: bin, Args: args, Token: token,
		NodeName: node, Namespace: CchostNamespace, LogName: name, Env: env,
	})
}
