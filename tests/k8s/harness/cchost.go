package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// Objects reads every object of a multi-document YAML file.
func Objects(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if err == io.EOF {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// Apply server-side-applies objects as the admin (field manager cchost-test).
func (c *Cluster) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	dc, err := discovery.NewDiscoveryClientForConfig(c.AdminConfig)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		return err
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		var m *meta.RESTMapping
		// A CRD applied a moment ago takes a moment to be served.
		for i := 0; ; i++ {
			m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err == nil || i > 100 {
				break
			}
			mapper.Reset()
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", gvk, err)
		}
		data, err := o.MarshalJSON()
		if err != nil {
			return err
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		force := true
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "cchost-test", Force: &force}); err != nil {
			return fmt.Errorf("applying %s %s/%s: %w", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}

// PodToken requests a token of the service account ns/sa bound to the pod ns/pod (so it
// carries the pod's node in its claims, as the kubelet's projected token does).
func (c *Cluster) PodToken(ctx context.Context, ns, sa, pod string) (string, error) {
	p, err := c.Admin.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	exp := int64(3600)
	tr, err := c.Admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: p.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// Cchost is a `cchost run` process with the in-cluster identity of a pod: it runs in
// its own mount namespace whose /run holds the service account's token, CA and
// namespace at /run/secrets/kubernetes.io/serviceaccount (/var/run is /run), with
// KUBERNETES_SERVICE_HOST/PORT pointing at the API server.
type Cchost struct {
	p       *proc
	Log     string
	Secrets string
}

// CchostOptions says how to run cchost.
type CchostOptions struct {
	Binary    string   // the cchost binary
	Args      []string // its arguments (the DaemonSet's, with paths replaced)
	Token     string   // the service-account token
	NodeName  string
	Namespace string
	LogName   string // log file name in the cluster's logs dir
	Env       []string
}

// StartCchost starts cchost as described.
func (c *Cluster) StartCchost(o CchostOptions) (*Cchost, error) {
	if o.LogName == "" {
		o.LogName = "cchost"
	}
	sec := filepath.Join(c.Dir, o.LogName+"-secrets")
	if err := os.MkdirAll(sec, 0o700); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	for name, data := range map[string][]byte{"token": []byte(o.Token), "ca.crt": ca, "namespace": []byte(o.Namespace)} {
		if err := os.WriteFile(filepath.Join(sec, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	script := `set -e
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
mount --bind "$SECRETS" /run/secrets/kubernetes.io/serviceaccount
exec "$@"`
	argv := append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "cchost", o.Binary}, o.Args...)
	env := append([]string{
		"SECRETS=" + sec,
		"KUBERNETES_SERVICE_HOST=127.0.0.1",
		"KUBERNETES_SERVICE_PORT=" + strconv.Itoa(c.APIPort),
		"NODE_NAME=" + o.NodeName,
		"POD_NAMESPACE=" + o.Namespace,
	}, o.Env...)
	p, err := startProc(c.logDir(), o.LogName, env, &syscall.SysProcAttr{}, argv...)
	if err != nil {
		return nil, err
	}
	return &Cchost{p: p, Log: p.log, Secrets: sec}, nil
}

// SetToken replaces the token file (kube clients re-read it).
func (h *Cchost) SetToken(token string) error {
	return os.WriteFile(filepath.Join(h.Secrets, "token"), []byte(token), 0o600)
}

// Stop sends SIGTERM and waits (SIGKILL after grace).
func (h *Cchost) Stop() error { return h.p.stop(15 * time.Second) }

// Exited reports whether cchost has ended.
func (h *Cchost) Exited() bool { return h.p.exited() }

// Pid is cchost's process id (the unshare wrapper execs it).
func (h *Cchost) Pid() int { return h.p.cmd.Process.Pid }

// Output is cchost's log so far.
func (h *Cchost) Output() string { return tailFile(h.Log, 1<<20) }

// CopyTree copies a fixture host (files, dirs, symlinks as they are) to dst.
func CopyTree(src, dst string) error {
	out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
	return nil
}

// DaemonSetArgs returns the cchost container's args of the DaemonSet in objs with
// /host and the config path replaced.
func DaemonSetArgs(objs []*unstructured.Unstructured, hostRoot, configPath string) ([]string, error) {
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, ci := range cs {
			cm, _ := ci.(map[string]any)
			args, _, _ := unstructured.NestedStringSlice(cm, "args")
			mounts, _, _ := unstructured.NestedSlice(cm, "volumeMounts")
			var cfgDir string
			for _, mi := range mounts {
				mm, _ := mi.(map[string]any)
				if mm["name"] == "config" {
					cfgDir, _ = mm["mountPath"].(string)
				}
			}
			out := make([]string, len(args))
			for i, a := range args {
				switch {
				case a == "/host":
					out[i] = hostRoot
				case cfgDir != "" && strings.HasPrefix(a, cfgDir+"/"):
					out[i] = configPath
				default:
					out[i] = a
				}
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("no DaemonSet container in the manifests")
}

// ConfigMapData returns data[key] of the ConfigMap name in objs.
func ConfigMapData(objs []*unstructured.Unstructured, name, key string) (string, error) {
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == name {
			v, ok, _ := unstructured.NestedString(o.Object, "data", key)
			if ok {
				return v, nil
			}
		}
	}
	return "", fmt.Errorf("ConfigMap %s has no %s", name, key)
}

// RunPod creates a pod from YAML and waits until it is Running (or fails).
func (c *Cluster) RunPod(ctx context.Context, podYAML string, timeout time.Duration) (*corev1.Pod, error) {
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(podYAML), &pod); err != nil {
		return nil, err
	}
	created, err := c.Admin.CoreV1().Pods(pod.Namespace).Create(ctx, &pod, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return c.WaitPod(ctx, created.Namespace, created.Name, timeout, func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded
	})
}

// WaitPod polls the pod until ok(pod), failing early when it failed.
func (c *Cluster) WaitPod(ctx context.Context, ns, name string, timeout time.Duration, ok func(*corev1.Pod) bool) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	var p *corev1.Pod
	var err error
	for time.Now().Before(deadline) {
		p, err = c.Admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if ok(p) {
				return p, nil
			}
			if p.Status.Phase == corev1.PodFailed {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return p, fmt.Errorf("pod %s/%s: %s", ns, name, c.describePod(ctx, ns, name, p, err))
}

func (c *Cluster) describePod(ctx context.Context, ns, name string, p *corev1.Pod, err error) string {
	if p == nil {
		return fmt.Sprintf("not found: %v", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s node %q", p.Status.Phase, p.Spec.NodeName)
	for _, cond := range p.Status.Conditions {
		fmt.Fprintf(&b, "; %s=%s %s %s", cond.Type, cond.Status, cond.Reason, cond.Message)
	}
	for _, cs := range p.Status.ContainerStatuses {
		fmt.Fprintf(&b, "; container %s: %+v", cs.Name, cs.State)
	}
	evs, _ := c.Admin.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if evs != nil {
		for _, e := range evs.Items {
			fmt.Fprintf(&b, "\n  event %s %s: %s", e.Type, e.Reason, e.Message)
		}
	}
	return b.String()
}

// PodLogs returns what the pod's containers wrote, from the kubelet's pod log files
// (podLogsDir/<ns>_<pod>_<uid>/<container>/N.log, CRI format "<time> <stream> <tag>
// <line>"). Not through the API server: the kubelet refuses a loopback node address,
// so the API server has none to reach it on.
func (c *Cluster) PodLogs(ctx context.Context, ns, name string) (string, error) {
	p, err := c.Admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	files, _ := filepath.Glob(filepath.Join(c.Dir, "pod-logs", fmt.Sprintf("%s_%s_%s", ns, name, p.UID), "*", "*.log"))
	if len(files) == 0 {
		return "", fmt.Errorf("no log files for pod %s/%s yet", ns, name)
	}
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if parts := strings.SplitN(line, " ", 4); len(parts) == 4 {
				b.WriteString(parts[3])
				if parts[2] == "F" {
					b.WriteString("\n")
				}
			}
		}
	}
	return b.String(), nil
}

// DeletePod deletes a pod and waits until it is gone.
func (c *Cluster) DeletePod(ctx context.Context, ns, name string) error {
	zero := int64(0)
	if err := c.Admin.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		return err
	}
	for i := 0; i < 300; i++ {
		if _, err := c.Admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("pod %s/%s still there", ns, name)
}
