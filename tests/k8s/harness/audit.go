package harness

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// AuditEvent is what the tests and benchmarks read of an audit.k8s.io/v1 Event.
type AuditEvent struct {
	AuditID   string `json:"auditID"`
	Stage     string `json:"stage"`
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string              `json:"username"`
		Extra    map[string][]string `json:"extra"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		APIGroup    string `json:"apiGroup"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestURI               string    `json:"requestURI"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
	StageTimestamp           time.Time `json:"stageTimestamp"`
}

// Code is the response code (0 when none was recorded).
func (e AuditEvent) Code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

// Latency is the time from receiving the request to completing the response.
func (e AuditEvent) Latency() time.Duration {
	return e.StageTimestamp.Sub(e.RequestReceivedTimestamp)
}

// IsWrite says whether the verb changes state.
func (e AuditEvent) IsWrite() bool {
	switch e.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// ReadAudit returns one event per request the API server completed (stage
// ResponseComplete, or Panic): the requests of the run.
func ReadAudit(path string) ([]AuditEvent, error) {
	all, err := ReadAuditStages(path)
	if err != nil {
		return nil, err
	}
	var out []AuditEvent
	for _, ev := range all {
		if ev.Stage != "ResponseStarted" {
			out = append(out, ev)
		}
	}
	return out, nil
}

// ReadAuditStages parses the audit log (one JSON event a line), every stage: a watch
// has a ResponseStarted event when it opens and a ResponseComplete event (same auditID)
// when it ends.
func ReadAuditStages(path string) ([]AuditEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []AuditEvent
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 16<<20)
	for s.Scan() {
		var ev AuditEvent
		if err := json.Unmarshal(s.Bytes(), &ev); err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, s.Err()
}

// Resource is "<group>/<resource>[/<subresource>]" ("" for the core group: "/nodes").
func (e AuditEvent) Resource() string {
	if e.ObjectRef == nil {
		return ""
	}
	r := e.ObjectRef.APIGroup + "/" + e.ObjectRef.Resource
	if e.ObjectRef.Subresource != "" {
		r += "/" + e.ObjectRef.Subresource
	}
	return r
}

// Watch is one watch request: open from Start (its response headers sent) to End (its
// response completed; zero while it is still open).
type Watch struct {
	Resource   string
	Start, End time.Time
}

// OpenAt says whether the watch was open at t.
func (w Watch) OpenAt(t time.Time) bool {
	return !w.Start.After(t) && (w.End.IsZero() || w.End.After(t))
}

// Watches pairs the ResponseStarted and ResponseComplete events of the watches in evs
// (every stage, ReadAuditStages) for which keep is true. A watch refused before it
// started (no ResponseStarted) is no open watch and is left out.
func Watches(evs []AuditEvent, keep func(AuditEvent) bool) []Watch {
	byID := map[string]*Watch{}
	var order []string
	for _, ev := range evs {
		if ev.Verb != "watch" || !keep(ev) {
			continue
		}
		switch ev.Stage {
		case "ResponseStarted":
			byID[ev.AuditID] = &Watch{Resource: ev.Resource(), Start: ev.StageTimestamp}
			order = append(order, ev.AuditID)
		case "ResponseComplete", "Panic":
			if w := byID[ev.AuditID]; w != nil {
				w.End = ev.StageTimestamp
			}
		}
	}
	out := make([]Watch, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out
}

// Steady is what one client cost the API server over a window.
type Steady struct {
	From, To time.Time
	// Requests received in the window, by "verb resource" (a watch counts once, open
	// or ended).
	Requests map[string]int
	// Writes lists the write requests received in the window.
	Writes []string
	// MaxOpenWatches is, per resource, the most watches open at one moment of the
	// window; OpenWatchesAtEnd the number open at its end.
	MaxOpenWatches, OpenWatchesAtEnd map[string]int
}

// SteadyState measures the requests for which keep is true over [from, to] from the
// audit log's events (every stage, ReadAuditStages).
func SteadyState(evs []AuditEvent, keep func(AuditEvent) bool, from, to time.Time) Steady {
	s := Steady{From: from, To: to, Requests: map[string]int{}, MaxOpenWatches: map[string]int{}, OpenWatchesAtEnd: map[string]int{}}
	// Each request once: its ResponseComplete event, or the ResponseStarted event of a
	// watch still open.
	completed := map[string]bool{}
	for _, ev := range evs {
		if ev.Stage != "ResponseStarted" {
			completed[ev.AuditID] = true
		}
	}
	for _, ev := range evs {
		at := ev.RequestReceivedTimestamp
		if (ev.Stage == "ResponseStarted" && completed[ev.AuditID]) || ev.ObjectRef == nil || at.Before(from) || at.After(to) || !keep(ev) {
			continue
		}
		s.Requests[ev.Verb+" "+ev.Resource()]++
		if ev.IsWrite() {
			s.Writes = append(s.Writes, fmt.Sprintf("%s %s -> %d at %s", ev.Verb, ev.RequestURI, ev.Code(), at.Format(time.RFC3339Nano)))
		}
	}
	watches := Watches(evs, keep)
	// The count of open watches changes only when one starts: look at the window's start
	// and at every start inside it.
	moments := []time.Time{from}
	for _, w := range watches {
		if w.Start.After(from) && !w.Start.After(to) {
			moments = append(moments, w.Start)
		}
	}
	for _, t := range moments {
		open := map[string]int{}
		for _, w := range watches {
			if w.OpenAt(t) {
				open[w.Resource]++
			}
		}
		for r, n := range open {
			s.MaxOpenWatches[r] = max(s.MaxOpenWatches[r], n)
		}
	}
	for _, w := range watches {
		if w.OpenAt(to) {
			s.OpenWatchesAtEnd[w.Resource]++
		}
	}
	return s
}

// PerHour scales a count over the window to one hour.
func (s Steady) PerHour(n int) float64 { return float64(n) / s.To.Sub(s.From).Hours() }

func (s Steady) String() string {
	var b strings.Builder
	total := 0
	for _, n := range s.Requests {
		total += n
	}
	fmt.Fprintf(&b, "over %v: %d requests (%.1f/h), %d writes; open watches (most at once): %v, at the end: %v; by verb and resource:",
		s.To.Sub(s.From).Round(time.Second), total, s.PerHour(total), len(s.Writes), s.MaxOpenWatches, s.OpenWatchesAtEnd)
	for _, k := range slices.Sorted(maps.Keys(s.Requests)) {
		fmt.Fprintf(&b, " %s %d (%.1f/h);", k, s.Requests[k], s.PerHour(s.Requests[k]))
	}
	return b.String()
}
