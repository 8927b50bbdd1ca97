// Command nodeinit is PID 1 of the test node's own PID and mount namespaces (the harness
// starts it with CLONE_NEWPID|CLONE_NEWNS). containerd, the kubelet, the containerd
// shims and every container run inside; when nodeinit exits, the kernel kills all of
// them, so a test run never leaves a process behind.
//
// In its mount namespace it gives the node a /dev with /dev/vfio: an overlay over the
// machine's /dev (the upper layer in the harness's temp dir) holding real character
// devices for the fixture host's IOMMU groups, so containerd resolves the CDI spec's
// device nodes and runc creates them in containers. The machine's own /dev is unchanged.
//
//	nodeinit -dir DIR -vfio-major N -groups 5,7,11,13 -kubelet-dir DIR -ready FILE
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", "", "scratch directory for the /dev overlay")
	major := flag.Uint("vfio-major", 0, "major number of the vfio group nodes")
	groups := flag.String("groups", "", "comma-separated IOMMU group numbers")
	ready := flag.String("ready", "", "file written when the namespace is set up")
	kubeletDir := flag.String("kubelet-dir", "", "directory to appear as /var/lib/kubelet")
	flag.Parse()
	if err := setup(*dir, uint32(*major), *groups, *kubeletDir); err != nil {
		fmt.Fprintf(os.Stderr, "nodeinit: %v\n", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*ready, []byte("ok\n"), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "nodeinit: %v\n", err)
		os.Exit(1)
	}
	reap()
}

func setup(dir string, major uint32, groups, kubeletDir string) error {
	if dir == "" {
		return fmt.Errorf("-dir is required")
	}
	// Nothing mounted here may reach the machine's mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	// A /proc of this PID namespace (kubelet and runc read their own process there).
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	// The node's own /run (runc and shim state, sockets) and /var/log (the kubelet's
	// /var/log/containers links): nothing of it lands on the machine.
	for _, d := range []string{"/run", "/var/log"} {
		if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", d, err)
		}
	}
	// The kubelet's device-plugin directory is fixed at /var/lib/kubelet/device-plugins
	// (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1 DevicePluginPath), whatever its root
	// dir: the node's /var/lib is a tmpfs whose kubelet directory is the host root's.
	if kubeletDir != "" {
		if err := unix.Mount("tmpfs", "/var/lib", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
			return fmt.Errorf("tmpfs on /var/lib: %w", err)
		}
		if err := os.MkdirAll("/var/lib/kubelet", 0o755); err != nil {
			return err
		}
		if err := unix.Mount(kubeletDir, "/var/lib/kubelet", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding %s on /var/lib/kubelet: %w", kubeletDir, err)
		}
	}
	keep := filepath.Join(dir, "olddev")
	upper := filepath.Join(dir, "upper")
	work := filepath.Join(dir, "work")
	for _, d := range []string{keep, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// Keep the machine's /dev (with pts, shm, mqueue below it) reachable, then lay the
	// overlay over /dev and move the sub-mounts back under it.
	if err := unix.Mount("/dev", keep, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding /dev: %w", err)
	}
	opts := fmt.Sprintf("lowerdir=/dev,upperdir=%s,workdir=%s", upper, work)
	if err := unix.Mount("overlay", "/dev", "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay on /dev (%s): %w", opts, err)
	}
	for _, sub := range submounts("/dev") {
		rel := strings.TrimPrefix(sub, "/dev/")
		if strings.Contains(rel, "/") {
			continue // moved with its parent
		}
		if err := unix.Mount(filepath.Join(keep, rel), sub, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("re-binding %s: %w", sub, err)
		}
	}
	if err := os.MkdirAll("/dev/vfio", 0o755); err != nil {
		return err
	}
	// /dev/vfio/vfio is the misc device 10:196 (include/linux/miscdevice.h, VFIO_MINOR).
	if err := mknod("/dev/vfio/vfio", 10, 196); err != nil {
		return err
	}
	if groups != "" {
		for _, g := range strings.Split(groups, ",") {
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return fmt.Errorf("group %q: %w", g, err)
			}
			if err := mknod(filepath.Join("/dev/vfio", g), major, uint32(n)); err != nil {
				return err
			}
		}
	}
	return nil
}

func mknod(path string, major, minor uint32) error {
	_ = os.Remove(path)
	if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor))); err != nil {
		return fmt.Errorf("mknod %s: %w", path, err)
	}
	return nil
}

// submounts lists the mount points strictly below root, from /proc/self/mountinfo.
func submounts(root string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := f[4]
		if strings.HasPrefix(mp, root+"/") && !seen[mp] {
			seen[mp] = true
			out = append(out, mp)
		}
	}
	return out
}

// reap waits for orphans (PID 1's duty) until SIGTERM or SIGINT; returning ends the
// namespace and everything in it.
func reap() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
