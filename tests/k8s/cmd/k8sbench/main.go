// Command k8sbench measures cchost against the real test cluster (tests/k8s/harness):
//
//	k8sbench ready  -runs 5             cchost start -> Node shows the TEE labels and nvidia.com/pgpu allocatable
//	k8sbench steady -window 10m         API requests of one cchost after start, from the audit log
//	k8sbench fleet  -n 200 -after 10m   N labelers started together against one API server
//
// The windows default to CCHOST_K8S_STEADY and CCHOST_K8S_FOLLOW (Go durations), 1 min
// without them. It prints one line per run and a summary (medians). tests/k8s/bench.sh
// runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
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
	window = flag.Duration("window", envDuration("CCHOST_K8S_STEADY", time.Minute), "steady: how long to watch cchost after it is ready (default $CCHOST_K8S_STEADY or 1m)")
	follow = flag.Bool("follow-label", true, "steady: run with cc.follow_label on (both consumers of the own-Node watch)")
	n      = flag.Int("n", 200, "fleet: labelers")
	after  = flag.Duration("after", envDuration("CCHOST_K8S_FOLLOW", time.Minute), "fleet: how long to count requests after every Node is labelled (default $CCHOST_K8S_FOLLOW or 1m)")
	status = flag.Duration("node-status", 0, "the kubelet's nodeStatusUpdateFrequency (0: the kubelet's default)")
)

// envDuration reads a Go duration from the environment variable name, def without it.
func envDuration(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		fmt.Fprintf(os.Stderr, "k8sbench: %s=%q: want a Go duration such as 10m\n", name, v)
		os.Exit(2)
	}
	return d
}

// cchostRequest: a request of cchost's ServiceAccount that is not the harness's own.
func cchostRequest(ev harness.AuditEvent) bool {
	return ev.User.Username == "system:serviceaccount:cchost:cchost" && !strings.HasPrefix(ev.UserAgent, harness.TestUserAgent)
}

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
	cfg := d.Config
	if what == "steady" {
		*runs = 1
		if *follow {
			if !strings.Contains(cfg, "# [cc]\n") {
				return fmt.Errorf("the deployed config has no \"# [cc]\" line to turn cc.follow_label on")
			}
			cfg = strings.Replace(cfg, "# [cc]\n", "[cc]\nfollow_label = true\n", 1)
		}
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
		h, err = c.StartCchostAsDaemonSet(d, *cchost, c.Opts.HostRoot, cfg, fmt.Sprintf("cchost-%d", i), "node-a", token)
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
	// steady: count cchost's requests after it is ready (and start-up is over).
	time.Sleep(3 * time.Second)
	from := time.Now()
	time.Sleep(*window)
	to := time.Now()
	// Read before stopping cchost: its watch is still open at the end of the window.
	evs, err := harness.ReadAuditStages(c.AuditLog)
	if err != nil {
		return err
	}
	if err := h.Stop(); err != nil {
		return err
	}
	fmt.Printf("steady state (cc.follow_label %v): %s\n", *follow, harness.SteadyState(evs, cchostRequest, from, to))
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
	// One host root each: `cchost run` refuses a second instance on a host root.
	hosts := make([]string, *n)
	for i := range hosts {
		hosts[i] = filepath.Join(c.Dir, fmt.Sprintf("host-%03d", i))
		if err := harness.MakeHost(*repo, hosts[i], "gpus-on-vfio"); err != nil {
			return err
		}
	}
	// Labels only: these Nodes have no kubelet.
	cfg := strings.Replace(d.Config, `mode = "on"`, `mode = "off"`, 1)
	// One machine each would have its own ports 9560/9561; here they share one network
	// namespace, so each gets its own pair (below the kernel's ephemeral range).
	if !strings.Contains(cfg, `"0.0.0.0:9560"`) || !strings.Contains(cfg, `"0.0.0.0:9561"`) {
		return fmt.Errorf("the deployed config does not listen on 0.0.0.0:9560 and 9561")
	}
	cfgOf := func(i int) string {
		c := strings.Replace(cfg, `"0.0.0.0:9560"`, fmt.Sprintf(`"127.0.0.1:%d"`, 30000+2*i), 1)
		return strings.Replace(c, `"0.0.0.0:9561"`, fmt.Sprintf(`"127.0.0.1:%d"`, 30001+2*i), 1)
	}
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
			h, err := c.StartCchostAsDaemonSet(d, *cchost, hosts[i], cfgOf(i), names[i], names[i], tokens[i])
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
	// The following window per node: by verb and resource, and the watches each node's
	// cchost held open at once.
	stages, err := harness.ReadAuditStages(c.AuditLog)
	if err != nil {
		return err
	}
	all := harness.SteadyState(stages, cchostRequest, allAt, end)
	hours := end.Sub(allAt).Hours()
	var per []string
	for _, k := range slices.Sorted(maps.Keys(all.Requests)) {
		per = append(per, fmt.Sprintf("%s %.1f", k, float64(all.Requests[k])/float64(*n)/hours))
	}
	maxOpen := map[string]int{}
	for _, name := range names {
		s := harness.SteadyState(stages, func(ev harness.AuditEvent) bool {
			nodes := ev.User.Extra["authentication.kubernetes.io/node-name"]
			return cchostRequest(ev) && len(nodes) == 1 && nodes[0] == name
		}, allAt, end)
		for r, k := range s.MaxOpenWatches {
			maxOpen[r] = max(maxOpen[r], k)
		}
	}
	fmt.Printf("fleet, the following %v per node per hour: %s; writes %d; most watches one node held open at once: %v\n",
		end.Sub(allAt).Round(time.Second), strings.Join(per, ", "), len(all.Writes), maxOpen)
	return nil
}
