// Package harness starts a one-node Kubernetes cluster on loopback for the tests: etcd,
// kube-apiserver (RBAC, an audit log of every request, a service-account token issuer),
// kube-scheduler, and a node made of containerd (CDI on, runc) and the kubelet, both in
// the node's own PID and mount namespaces (cmd/nodeinit). Every file lives in one temp
// dir; Stop ends every process it started.
package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Options for Start.
type Options struct {
	// BinDir holds what tests/k8s/build.sh built.
	BinDir string
	// Dir is the cluster's scratch directory (made when empty).
	Dir string
	// NodeName is the kubelet's node.
	NodeName string
	// HostRoot is the host root cchost gets: the kubelet's root dir is
	// <HostRoot>/var/lib/kubelet (so the device-plugin sockets meet) and containerd
	// reads CDI specs from <HostRoot>/var/run/cdi.
	HostRoot string
	// VfioGroups get real character devices /dev/vfio/<n> in the node's namespace.
	VfioGroups []int
	// RuntimeHandlers are extra containerd runtime handlers, each mapped to runc.
	RuntimeHandlers []string
	// NoNode starts only etcd, the API server and the scheduler.
	NoNode bool
	// NodeStatusUpdateFrequency is the kubelet's (0: the kubelet's default, 10 s).
	NodeStatusUpdateFrequency time.Duration
}

// Cluster is a running test cluster.
type Cluster struct {
	Opts            Options
	Dir             string
	APIServer       string // https://127.0.0.1:<port>
	APIPort         int
	CAFile          string
	AdminKubeconfig string
	AuditLog        string
	Admin           *kubernetes.Clientset
	AdminConfig     *rest.Config

	pki         *pki
	cgroupRoot  string
	kubeletPort int
	etcd        *proc
	apiserver   *proc
	scheduler   *proc
	nodeinit    *proc
	containerd  *proc
	kubelet     *proc
}

// FreePort asks the kernel for an unused loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.Opts.BinDir, name) }

// Start brings the cluster up and waits until the Node is Ready. On error everything
// started so far is stopped again.
func Start(opts Options) (c *Cluster, err error) {
	if opts.NodeName == "" {
		opts.NodeName = "node-a"
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cchost-k8s-"); err != nil {
			return nil, err
		}
	}
	c = &Cluster{Opts: opts, Dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n(logs in %s)", err, dir)
			_ = c.Stop()
		}
	}()
	need := []string{"kube-apiserver", "kube-scheduler", "etcd"}
	if !opts.NoNode {
		need = append(need, "kubelet", "pause", "nodeinit", "containerd", "containerd-shim-runc-v2", "ctr")
	}
	for _, p := range need {
		if _, err := os.Stat(c.bin(p)); err != nil {
			return c, fmt.Errorf("%s missing (run tests/k8s/build.sh): %w", p, err)
		}
	}
	for _, d := range []string{"logs", "etcd", "pki"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return c, err
		}
	}
	if err := c.makePKI(); err != nil {
		return c, err
	}
	if err := c.startEtcd(); err != nil {
		return c, err
	}
	if err := c.startAPIServer(); err != nil {
		return c, err
	}
	if err := c.startScheduler(); err != nil {
		return c, err
	}
	if opts.NoNode {
		return c, nil
	}
	if err := c.startNode(); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) logDir() string { return filepath.Join(c.Dir, "logs") }

func (c *Cluster) makePKI() error {
	p, err := newPKI(filepath.Join(c.Dir, "pki"))
	if err != nil {
		return err
	}
	c.pki = p
	c.CAFile = p.path("ca.crt")
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
	steps := []struct {
		name, cn string
		orgs     []string
		ips      []net.IP
		dns      []string
	}{
		{"apiserver", "kube-apiserver", nil, ips, dns},
		{"admin", "cchost-test-admin", []string{"system:masters"}, nil, nil},
		{"scheduler", "system:kube-scheduler", nil, nil, nil},
		{"kubelet", "system:node:" + c.Opts.NodeName, []string{"system:nodes"}, nil, nil},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil},
	}
	for _, s := range steps {
		if err := p.issue(s.name, s.cn, s.orgs, s.ips, s.dns); err != nil {
			return err
		}
	}
	return p.serviceAccountKey()
}

// writeKubeconfig writes a kubeconfig for the client certificate <name>.
func (c *Cluster) writeKubeconfig(name string) (string, error) {
	path := filepath.Join(c.Dir, name+".kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: c.APIServer, CertificateAuthority: c.CAFile}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{
		ClientCertificate: c.pki.path(name + ".crt"),
		ClientKey:         c.pki.path(name + ".key"),
	}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: name}
	cfg.CurrentContext = "test"
	return path, clientcmd.WriteToFile(*cfg, path)
}

// TokenKubeconfig writes a kubeconfig that authenticates with a bearer token.
func (c *Cluster) TokenKubeconfig(path, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: c.APIServer, CertificateAuthority: c.CAFile}
	cfg.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "sa"}
	cfg.CurrentContext = "test"
	return clientcmd.WriteToFile(*cfg, path)
}

// TestUserAgent marks the tests' own requests made with a service account's token.
const TestUserAgent = "cchost-k8s-test"

// TokenConfig is a rest.Config for a bearer token.
func (c *Cluster) TokenConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.APIServer,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile},
		QPS:             -1,
		UserAgent:       TestUserAgent,
	}
}

func (c *Cluster) startEtcd() error {
	client, err := FreePort()
	if err != nil {
		return err
	}
	peer, err := FreePort()
	if err != nil {
		return err
	}
	cu := fmt.Sprintf("http://127.0.0.1:%d", client)
	pu := fmt.Sprintf("http://127.0.0.1:%d", peer)
	c.etcd, err = startProc(c.logDir(), "etcd", nil, nil, c.bin("etcd"),
		"--name=default", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+cu, "--advertise-client-urls="+cu,
		"--listen-peer-urls="+pu, "--initial-advertise-peer-urls="+pu,
		"--initial-cluster=default="+pu, "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	return waitFor(60*time.Second, c.etcd, func() error {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", client), time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}, "etcd listening")
}

// auditPolicy records every request at Metadata level (user, verb, resource, response
// code and the stage timestamps) when the response is complete, and a watch also when it
// opens (ResponseStarted, generated only for long-running requests), so that the watches
// open at any moment can be counted (harness.Watches).
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
`

func (c *Cluster) etcdURL() string {
	for _, a := range c.etcd.cmd.Args {
		if v, ok := strings.CutPrefix(a, "--listen-client-urls="); ok {
			return v
		}
	}
	return ""
}

func (c *Cluster) startAPIServer() error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	c.APIPort = port
	c.APIServer = fmt.Sprintf("https://127.0.0.1:%d", port)
	policy := filepath.Join(c.Dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return err
	}
	c.AuditLog = filepath.Join(c.Dir, "audit.log")
	p := c.pki.path
	c.apiserver, err = startProc(c.logDir(), "kube-apiserver", nil, nil, c.bin("kube-apiserver"),
		"--etcd-servers="+c.etcdURL(),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		// A loopback address cannot be a Service endpoint; nothing here needs one.
		"--endpoint-reconciler-type=none",
		"--secure-port="+strconv.Itoa(port),
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// It taints every new Node not-ready; the controller-manager's node lifecycle
		// controller lifts it, and no controller-manager runs here.
		"--disable-admission-plugins=TaintNodesByCondition",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p("sa.pub"),
		"--service-account-signing-key-file="+p("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/24",
		"--audit-policy-file="+policy, "--audit-log-path="+c.AuditLog,
		"--audit-log-mode=blocking", "--audit-log-maxsize=0",
		"--kubelet-client-certificate="+p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p("apiserver-kubelet-client.key"),
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000",
		"--v=1")
	if err != nil {
		return err
	}
	c.AdminKubeconfig, err = c.writeKubeconfig("admin")
	if err != nil {
		return err
	}
	c.AdminConfig, err = clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig)
	if err != nil {
		return err
	}
	c.AdminConfig.QPS = -1
	c.Admin, err = kubernetes.NewForConfig(c.AdminConfig)
	if err != nil {
		return err
	}
	return waitFor(120*time.Second, c.apiserver, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		body, err := c.Admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		return nil
	}, "kube-apiserver /readyz")
}

func (c *Cluster) startScheduler() error {
	kc, err := c.writeKubeconfig("scheduler")
	if err != nil {
		return err
	}
	c.scheduler, err = startProc(c.logDir(), "kube-scheduler", nil, nil, c.bin("kube-scheduler"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0", "--v=1")
	if err != nil {
		return err
	}
	// Running is all that can be seen before there is something to schedule.
	time.Sleep(200 * time.Millisecond)
	if c.scheduler.exited() {
		return fmt.Errorf("kube-scheduler exited: %s", c.scheduler.tail(3000))
	}
	return nil
}

// waitFor polls check until it succeeds, p exits, or timeout passes.
func waitFor(timeout time.Duration, p *proc, check func() error, what string) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v\n%s", p.name, what, p.err, p.tail(4000))
		}
		if last = check(); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	msg := fmt.Sprintf("timed out after %s waiting for %s: %v", timeout, what, last)
	if p != nil {
		msg += "\n" + p.tail(4000)
	}
	return fmt.Errorf("%s", msg)
}

// Stop ends every process of the cluster (the node's namespace with everything in it)
// and removes the node's cgroups. The temp dir is kept for its logs.
func (c *Cluster) Stop() error {
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	note(c.kubelet.stop(20 * time.Second))
	note(c.containerd.stop(10 * time.Second))
	note(c.nodeinit.stop(10 * time.Second))
	note(c.scheduler.stop(10 * time.Second))
	note(c.apiserver.stop(20 * time.Second))
	note(c.etcd.stop(10 * time.Second))
	note(c.removeCgroups())
	if len(errs) > 0 {
		return fmt.Errorf("stopping the cluster: %s", strings.Join(errs, "; "))
	}
	return nil
}

// NodeReady reports the Node's Ready condition.
func (c *Cluster) NodeReady(ctx context.Context) (bool, string) {
	n, err := c.Admin.CoreV1().Nodes().Get(ctx, c.Opts.NodeName, metav1.GetOptions{})
	if err != nil {
		return false, err.Error()
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue, cond.Reason + ": " + cond.Message
		}
	}
	return false, "no Ready condition yet"
}

// NodeExec runs a command in the node's mount namespace (e.g. to remove a /dev/vfio node).
func (c *Cluster) NodeExec(args ...string) ([]byte, error) {
	if c.nodeinit == nil || c.nodeinit.exited() {
		return nil, fmt.Errorf("the node is not running")
	}
	argv := append([]string{"-t", strconv.Itoa(c.nodeinit.cmd.Process.Pid), "-m", "-p", "--"}, args...)
	return exec.Command("nsenter", argv...).CombinedOutput()
}

// nodeProc starts a program inside the node's namespaces, through nsenter (which stays
// as the parent, in the same process group, so stop reaches both).
func (c *Cluster) nodeProc(name string, argv ...string) (*proc, error) {
	ns := []string{"nsenter", "-t", strconv.Itoa(c.nodeinit.cmd.Process.Pid), "-m", "-p", "--"}
	return startProc(c.logDir(), name, nil, nil, append(ns, argv...)...)
}

// ensure the SysProcAttr of the namespace holder has the right flags.
var nodeNamespaces = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID}
