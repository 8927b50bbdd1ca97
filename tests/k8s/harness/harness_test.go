package harness

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The control plane alone starts, serves the admin, and stops without a process left.
func TestControlPlaneStartsAndStops(t *testing.T) {
	wd, _ := os.Getwd()
	c, err := Start(Options{BinDir: filepath.Join(wd, "..", ".cache", "bin"), Dir: t.TempDir(), NoNode: true})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := c.Admin.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Items) == 0 {
		t.Fatal("no namespaces")
	}
	pids := []int{c.etcd.cmd.Process.Pid, c.apiserver.cmd.Process.Pid, c.scheduler.cmd.Process.Pid}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if _, err := os.Stat(filepath.Join("/proc", itoa(p))); err == nil {
			t.Errorf("pid %d is still there", p)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
