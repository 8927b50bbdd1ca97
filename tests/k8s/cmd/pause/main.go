// Command pause is the sandbox ("pause") process of the test cluster's pods: it sleeps
// until SIGTERM or SIGINT and exits 0, as Kubernetes' own pause container does. The
// image the harness imports into containerd holds it with busybox-static.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
	os.Exit(0)
}
