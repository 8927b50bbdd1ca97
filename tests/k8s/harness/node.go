package harness

import (
	"bufio"
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
)

// cgroupV1Controllers are the hierarchies the kubelet's cgroupfs driver uses on cgroup
// v1 (pkg/kubelet/cm/cgroup_manager_linux.go); hugetlb only when mounted; "unified" is
// the cgroup2 hierarchy of a hybrid host, where runc also makes its directories.
var cgroupV1Controllers = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "hugetlb", "devices", "freezer", "blkio", "unified"}

func (c *Cluster) startNode() error {
	o := c.Opts
	if o.HostRoot == "" {
		return fmt.Errorf("Options.HostRoot is required for a node")
	}
	for _, d := range []string{"var/lib/kubelet", "var/run/cdi"} {
		if err := os.MkdirAll(filepath.Join(o.HostRoot, d), 0o755); err != nil {
			return err
		}
	}
	if err := c.makeCgroupRoot(); err != nil {
		return err
	}
	// The node's PID and mount namespaces.
	ready := filepath.Join(c.Dir, "node", "ready")
	groups := make([]string, len(o.VfioGroups))
	for i, g := range o.VfioGroups {
		groups[i] = strconv.Itoa(g)
	}
	var err error
	c.nodeinit, err = startProc(c.logDir(), "nodeinit", nil,
		&syscall.SysProcAttr{Cloneflags: nodeNamespaces.Cloneflags},
		c.bin("nodeinit"), "-dir", filepath.Join(c.Dir, "node"),
		"-vfio-major", strconv.Itoa(vfioMajor()), "-groups", strings.Join(groups, ","),
		"-kubelet-dir", c.kubeletDir(), "-ready", ready)
	if err != nil {
		return err
	}
	if err := waitFor(20*time.Second, c.nodeinit, func() error { _, err := os.Stat(ready); return err }, "the node's namespaces"); err != nil {
		return err
	}
	if err := c.startContainerd(); err != nil {
		return err
	}
	if err := c.importImage(); err != nil {
		return err
	}
	if err := c.writeKubeletConfig(); err != nil {
		return err
	}
	if err := c.StartKubelet(); err != nil {
		return err
	}
	return c.WaitNodeReady(120 * time.Second)
}

// vfioMajor is the machine's vfio char major when the module is loaded, else an
// unused dynamic major (the nodes are listed, never opened).
func vfioMajor() int {
	f, err := os.Open("/proc/devices")
	if err == nil {
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			fs := strings.Fields(s.Text())
			if len(fs) == 2 && fs[1] == "vfio" {
				if n, err := strconv.Atoi(fs[0]); err == nil {
					return n
				}
			}
		}
	}
	return 511
}

func (c *Cluster) makeCgroupRoot() error {
	c.cgroupRoot = "/" + filepath.Base(c.Dir)
	for _, ctl := range cgroupV1Controllers {
		base := filepath.Join("/sys/fs/cgroup", ctl)
		if _, err := os.Stat(base); err != nil {
			continue
		}
		dir := filepath.Join(base, c.cgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if ctl == "cpuset" {
			// A new v1 cpuset starts empty; a task cannot join it until cpus and mems
			// are set (Documentation/admin-guide/cgroup-v1/cpusets.rst).
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(base, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("%s/%s: %w", dir, f, err)
				}
			}
		}
	}
	return nil
}

// removeCgroups removes the node's cgroup subtree, deepest first, retrying while the
// killed processes are released.
func (c *Cluster) removeCgroups() error {
	if c.cgroupRoot == "" {
		return nil
	}
	var last error
	for attempt := 0; attempt < 50; attempt++ {
		last = nil
		for _, ctl := range cgroupV1Controllers {
			root := filepath.Join("/sys/fs/cgroup", ctl, c.cgroupRoot)
			if _, err := os.Stat(root); err != nil {
				continue
			}
			var dirs []string
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := syscall.Rmdir(dirs[i]); err != nil && !os.IsNotExist(err) {
					last = fmt.Errorf("rmdir %s: %w", dirs[i], err)
				}
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func (c *Cluster) containerdSock() string {
	return filepath.Join(c.Dir, "containerd", "containerd.sock")
}

func (c *Cluster) startContainerd() error {
	dir := filepath.Join(c.Dir, "containerd")
	cni := filepath.Join(c.Dir, "cni")
	for _, d := range []string{dir, cni} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// A loopback-only network: containerd reports NetworkReady (the Node turns Ready);
	// the tests' pods use the host network.
	conf := `{"cniVersion":"1.0.0","name":"cchost-test","plugins":[{"type":"loopback"}]}`
	if err := os.WriteFile(filepath.Join(cni, "10-cchost-test.conflist"), []byte(conf), 0o644); err != nil {
		return err
	}
	// CCHOST_K8S_RUNC names another runc (e.g. a wrapper that keeps runc's debug log).
	runcName := "runc"
	if r := os.Getenv("CCHOST_K8S_RUNC"); r != "" {
		runcName = r
	}
	runc, err := exec.LookPath(runcName)
	if err != nil {
		return fmt.Errorf("runc (Debian package runc): %w", err)
	}
	if !hasCapSysResource() {
		if runc, err = c.oomWrapper(runc); err != nil {
			return err
		}
	}
	streamPort, err := FreePort()
	if err != nil {
		return err
	}
	var handlers strings.Builder
	for _, h := range append([]string{"runc"}, c.Opts.RuntimeHandlers...) {
		fmt.Fprintf(&handlers, `
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'%s']
  runtime_type = "io.containerd.runc.v2"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'%s'.options]
    BinaryName = %q
    SystemdCgroup = false
`, h, h, runc)
	}
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins.'io.containerd.cri.v1.runtime']
  cdi_spec_dirs = [%q]
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
%s
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "%d"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.containerdSock(),
		filepath.Join(dir, "containerd.ttrpc.sock"),
		filepath.Join(c.Opts.HostRoot, "var/run/cdi"), handlers.String(), cni, ImageName, streamPort)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	c.containerd, err = c.nodeProc("containerd", c.bin("containerd"), "--config", cfgPath)
	if err != nil {
		return err
	}
	return waitFor(60*time.Second, c.containerd, func() error {
		conn, err := net.DialTimeout("unix", c.containerdSock(), time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}, "containerd's socket")
}

func (c *Cluster) importImage() error {
	tarPath := filepath.Join(c.Dir, "image.tar")
	if err := writeImage(tarPath, "/bin/busybox", c.bin("pause")); err != nil {
		return err
	}
	out, err := exec.Command(c.bin("ctr"), "--address", c.containerdSock(), "-n", "k8s.io",
		"images", "import", tarPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import: %v: %s", err, out)
	}
	return nil
}

func (c *Cluster) kubeletDir() string { return filepath.Join(c.Opts.HostRoot, "var/lib/kubelet") }

func (c *Cluster) writeKubeletConfig() error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	c.kubeletPort = port
	if _, err := c.writeKubeconfig("kubelet"); err != nil {
		return err
	}
	statusFreq := ""
	if f := c.Opts.NodeStatusUpdateFrequency; f > 0 {
		statusFreq = fmt.Sprintf("nodeStatusUpdateFrequency: %s\n", f)
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
failSwapOn: false
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
podLogsDir: %q
registerNode: true
resolvConf: ""
syncFrequency: 5s
%simageGCHighThresholdPercent: 100
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
`, c.cgroupRoot, port, c.CAFile, c.containerdSock(), filepath.Join(c.Dir, "pod-logs"), statusFreq)
	return os.WriteFile(filepath.Join(c.Dir, "kubelet.yaml"), []byte(cfg), 0o644)
}

// StartKubelet starts (or restarts) the kubelet in the node's namespaces.
func (c *Cluster) StartKubelet() error {
	if c.kubelet != nil && !c.kubelet.exited() {
		return fmt.Errorf("the kubelet is running")
	}
	var err error
	c.kubelet, err = c.nodeProc("kubelet", c.bin("kubelet"),
		"--config="+filepath.Join(c.Dir, "kubelet.yaml"),
		"--kubeconfig="+filepath.Join(c.Dir, "kubelet.kubeconfig"),
		"--root-dir=/var/lib/kubelet", // <HostRoot>/var/lib/kubelet, bound there by nodeinit
		"--cert-dir="+filepath.Join(c.Dir, "kubelet-pki"),
		"--hostname-override="+c.Opts.NodeName,
		"--v=2")
	return err
}

// StopKubelet stops the kubelet (SIGTERM); containers keep running under their shims.
func (c *Cluster) StopKubelet() error {
	err := c.kubelet.stop(20 * time.Second)
	return err
}

// KubeletLog is the kubelet's log so far.
func (c *Cluster) KubeletLog() string { return tailFile(c.kubelet.log, 1<<20) }

// WaitNodeReady waits for the Node's Ready condition.
func (c *Cluster) WaitNodeReady(timeout time.Duration) error {
	return waitFor(timeout, c.kubelet, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if ok, why := c.NodeReady(ctx); !ok {
			return fmt.Errorf("node not ready: %s", why)
		}
		return nil
	}, "the Node to be Ready")
}

// VfioMajor is the major number of the node's /dev/vfio/<group> nodes.
func (c *Cluster) VfioMajor() int { return vfioMajor() }

// capSysResource is CAP_SYS_RESOURCE (include/uapi/linux/capability.h).
const capSysResource = 24

func hasCapSysResource() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || caps&(1<<capSysResource) != 0
		}
	}
	return true
}

// oomWrapper writes a runc wrapper for machines whose root lacks CAP_SYS_RESOURCE (some
// sandboxes): lowering oom_score_adj needs it (proc(5)), and the kubelet asks -998
// for every pod sandbox, so runc's init fails ("failed to update
// /proc/self/oom_score_adj: Permission denied"). The wrapper drops negative
// oomScoreAdj values from the bundle's config.json before `runc create`; nothing else
// changes.
func (c *Cluster) oomWrapper(runc string) (string, error) {
	path := filepath.Join(c.Dir, "runc-no-negative-oom")
	script := fmt.Sprintf(`#!/bin/sh
# Written by tests/k8s/harness (oomWrapper): this machine's root lacks CAP_SYS_RESOURCE.
prev=""
for a in "$@"; do
  if [ "$prev" = "--bundle" ] && [ -f "$a/config.json" ]; then
    sed -i -e 's/"oomScoreAdj":-[0-9]*,//' -e 's/,"oomScoreAdj":-[0-9]*//' "$a/config.json"
  fi
  prev="$a"
done
exec %q "$@"
`, runc)
	return path, os.WriteFile(path, []byte(script), 0o755)
}
