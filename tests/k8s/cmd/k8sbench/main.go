// Command k8sbench measures cchost against the real test cluster (tests/k8s/harness):
//
//	k8sbench ready  -runs 5            cchost start -> Node shows the TEE labels and nvidia.com/pgpu allocatable
//	k8sbench steady -minutes 5         API requests of one cchost after start, from the audit log
//	k8sbench fleet  -n 200 -after 3m   N labelers started together against one API server
//
// It prints one line per run and a summary (medians). tests/k8s/bench.sh runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"cchost.test/k8s/harness"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const pgpu = corev1.ResourceName("nvidia.com/pgpu")

var (
	repo   = flag.String("repo", "", "repository root")
	bin    = flag.String("bin", "", "tests/k8s/.cache/bin")
	cchost = flag.String("cchost", "", "the cchost binary")
	runs   = flag.Int("runs", 5, "ready: runs")
	mins   = flag.Float64("minutes", 5, "steady: minutes to watch")
	n      = flag.Int("n", 200, "fleet: labelers")
	after  = flag.Duration("after", 3*time.Minute, "fleet: how long to count writes after the start")
	status = flag.Duration("node-status", 0, "the kubelet's nodeStatusUpdateFrequency (0: the kubelet's default)")
)

func main() {
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: k8sbench [flags] ready|steady|fleet")
		os.Exit(2)
	}
	var err error
	switch flag.Arg(0) {
	case "ready", "steady":
		err = single(flag.Arg(0))
	case "fleet":
		err = fleet()
	default:
		err = fmt.Errorf("unknown benchmark %q", flag.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "k8sbench: %v\n", err)
		os.Exit(1)
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func start(opts harness.Options) (*harness.Cluster, *harness.Deploy, error) {
	opts.BinDir = *bin
	dir, err := os.MkdirTemp("", "ck")
	if err != nil {
		return nil, nil, err
	}
	opts.Dir = dir
	if !opts.NoNode {
		opts.HostRoot = filepath.Join(dir, "host")
		if err := harness.MakeHost(*repo, opts.HostRoot, "gpus-on-vfio"); err != nil {
			return nil, nil, err
		}
	}
	c, err := harness.Start(opts)
	if err != nil {
		return nil, nil, err
	}
	d, err := harness.LoadDeploy(*repo)
	if err != nil {
		return c, nil, err
	}
	return c, d, c.Install(context.Background(), d)
}

// ownedByCchost removes what field manager cchost holds on the Node (an empty apply
// under that manager), so the next cchost starts from a bare Node.
func ownedByCchost(ctx context.Context, c *harness.Cluster, node string) error {
	force := true
	body := `{"apiVersion":"v1","kind":"Node","metadata":{"name":"` + node + `"}}`
	for _, sub := range [][]string{nil, {"status"}} {
		if _, err := c.Admin.CoreV1().Nodes().Patch(ctx, node, types.ApplyPatchType, []byte(body),
			metav1.PatchOptions{FieldManager: "cchost", Force: &force}, sub...); err != nil {
			return err
		}
	}
	return nil
}

func ready(nd *corev1.Node) (labels, alloc bool) {
	labels = nd.Labels["intel.feature.node.kubernetes.io/tdx"] == "true" && nd.Labels["nvidia.com/cc.ready.state"] == "true"
	q := nd.Status.Allocatable[pgpu]
	alloc = q.Value() == 4
	return
}

func single(what string) error {
	ctx := context.Background()
	c, d, err := start(harness.Options{NodeName: "node-a", VfioGroups: []int{5, 7, 11, 13}, NodeStatusUpdateFrequency: *status})
	if c != nil {
		defer func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	if err != nil {
		return err
	}
	token, err := c.NodeToken(ctx, "node-a", false, true)
	if err != nil {
		return err
	}
	if what == "steady" {
		*runs = 1
	}
	var total, toLabels, toAlloc []time.Duration
	var h *harness.Cchost
	for i := 0; i < *runs; i++ {
		if err := ownedByCchost(ctx, c, "node-a"); err != nil {
			return err
		}
		// Wait for a bare node: no cchost labels, the plugin's GPUs gone.
		for {
			nd, err := c.Admin.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if l, a := ready(nd); !l && !a {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		t0 := time.Now()
		h, err = c.StartCchostAsDaemonSet(d, *cchost, c.Opts.HostRoot, d.Config, fmt.Sprintf("cchost-%d", i), "node-a", token)
		if err != nil {
			return err
		}
		var tl, ta time.Duration
		for tl == 0 || ta == 0 {
			if time.Since(t0) > 120*time.Second {
				return fmt.Errorf("run %d: not ready after 120 s\n%s", i, h.Output())
			}
			nd, err := c.Admin.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			if err != nil {
				return err
			}
			l, a := ready(nd)
			if l && tl == 0 {
				tl = time.Since(t0)
			}
			if a && ta == 0 {
				ta = time.Since(t0)
			}
			time.Sleep(10 * time.Millisecond)
		}
		toLabels, toAlloc = append(toLabels, tl), append(toAlloc, ta)
		total = append(total, max(tl, ta))
		fmt.Printf("run %d: labels %v, allocatable %v, ready %v\n", i, tl.Round(time.Millisecond), ta.Round(time.Millisecond), max(tl, ta).Round(time.Millisecond))
		if what == "ready" {
			if err := h.Stop(); err != nil {
				return err
			}
			h = nil
		}
	}
	if what == "ready" {
		fmt.Printf("time to a ready node, median of %d: %v (labels %v, allocatable %v)\n", *runs,
			median(total).Round(time.Millisecond), median(toLabels).Round(time.Millisecond), median(toAlloc).Round(time.Millisecond))
		return nil
	}
	// steady: count cchost's requests after it is ready.
	from := time.Now()
	time.Sleep(time.Duration(*mins * float64(time.Minute)))
	to := time.Now()
	if err := h.Stop(); err != nil {
		return err
	}
	evs, err := harness.ReadAudit(c.AuditLog)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	var reqs, writes, watches int
	for _, ev := range evs {
		if ev.User.Username != "system:serviceaccount:cchost:cchost" || ev.RequestReceivedTimestamp.Before(from) || ev.RequestReceivedTimestamp.After(to) || ev.ObjectRef == nil {
			continue
		}
		reqs++
		if ev.IsWrite() {
			writes++
		}
		if ev.Verb == "watch" {
			watches++
		}
		counts[ev.Verb+" "+ev.ObjectRef.Resource+"/"+ev.ObjectRef.Subresource]++
	}
	hours := to.Sub(from).Hours()
	fmt.Printf("steady state over %.1f min: %d requests (%.0f/h), %d writes, %d watch requests (%.0f/h); by verb: %v\n",
		to.Sub(from).Minutes(), reqs, float64(reqs)/hours, writes, watches, float64(watches)/hours, counts)
	return nil
}

func fleet() error {
	ctx := context.Background()
	c, d, err := start(harness.Options{NoNode: true})
	if c != nil {
		defer func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	if err != nil {
		return err
	}
	host := filepath.Join(c.Dir, "host")
	if err := harness.MakeHost(*repo, host, "gpus-on-vfio"); err != nil {
		return err
	}
	// Labels only: these Nodes have no kubelet.
	cfg := strings.Replace(d.Config, `mode = "on"`, `mode = "off"`, 1)
	names := make([]string, *n)
	tokens := make([]string, *n)
	for i := range names {
		names[i] = fmt.Sprintf("fleet-%03d", i)
		if tokens[i], err = c.NodeToken(ctx, names[i], true, false); err != nil {
			return err
		}
	}
	fmt.Printf("fleet: %d Nodes, pods and tokens made\n", *n)
	hs := make([]*harness.Cchost, *n)
	t0 := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var startErr error
	for i := range names {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			h, err := c.StartCchostAsDaemonSet(d, *cchost, host, cfg, names[i], names[i], tokens[i])
			mu.Lock()
			defer mu.Unlock()
			if err != nil && startErr == nil {
				startErr = err
			}
			hs[i] = h
		}(i)
	}
	wg.Wait()
	defer func() {
		for _, h := range hs {
			if h != nil {
				_ = h.Stop()
			}
		}
	}()
	if startErr != nil {
		return startErr
	}
	fmt.Printf("fleet: %d cchost processes started in %v\n", *n, time.Since(t0).Round(time.Millisecond))
	// Until every Node carries the TEE label.
	var allAt time.Time
	for allAt.IsZero() {
		if time.Since(t0) > 5*time.Minute {
			return fmt.Errorf("not every Node labelled after 5 min")
		}
		nl, err := c.Admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		done := 0
		for _, nd := range nl.Items {
			if strings.HasPrefix(nd.Name, "fleet-") && nd.Labels["intel.feature.node.kubernetes.io/tdx"] == "true" {
				done++
			}
		}
		if done == *n {
			allAt = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("fleet: all %d Nodes labelled %v after the first start\n", *n, allAt.Sub(t0).Round(time.Millisecond))
	time.Sleep(*after)
	end := time.Now()
	evs, err := harness.ReadAudit(c.AuditLog)
	if err != nil {
		return err
	}
	var burstReqs, burstWrites, laterReqs, laterWrites int
	var lat, allLat []time.Duration
	perNodeWrites := map[string]int{}
	for _, ev := range evs {
		at := ev.RequestReceivedTimestamp
		if at.Before(t0) || at.After(end) {
			continue
		}
		inBurst := !at.After(allAt)
		if inBurst && ev.Verb != "watch" {
			allLat = append(allLat, ev.Latency())
		}
		if ev.User.Username != "system:serviceaccount:cchost:cchost" || ev.UserAgent == harness.TestUserAgent {
			continue
		}
		if inBurst {
			burstReqs++
			if ev.Verb != "watch" {
				lat = append(lat, ev.Latency())
			}
			if ev.IsWrite() {
				burstWrites++
				if ev.ObjectRef != nil {
					perNodeWrites[ev.ObjectRef.Name]++
				}
			}
		} else {
			laterReqs++
			if ev.IsWrite() {
				laterWrites++
			}
		}
	}
	var maxPer int
	for _, w := range perNodeWrites {
		maxPer = max(maxPer, w)
	}
	fmt.Printf("fleet of %d: burst %v: %d requests, %d writes (max %d per node); cchost request latency p50 %v p99 %v (all requests p99 %v); the following %v: %d requests, %d writes\n",
		*n, allAt.Sub(t0).Round(time.Millisecond), burstReqs, burstWrites, maxPer,
		percentile(lat, 0.5).Round(time.Microsecond), percentile(lat, 0.99).Round(time.Microsecond),
		percentile(allLat, 0.99).Round(time.Microsecond), end.Sub(allAt).Round(time.Second), laterReqs, laterWrites)
	return nil
}
