package harness

import (
	"testing"
	"time"
)

// The audit-log accounting on synthetic events (no cluster): watches are paired by
// auditID, counted open between their ResponseStarted and ResponseComplete, and a
// re-opened watch is not a second one.

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func ev(id, stage, verb, resource string, received, stageAt int) AuditEvent {
	e := AuditEvent{AuditID: id, Stage: stage, Verb: verb, RequestReceivedTimestamp: at(received), StageTimestamp: at(stageAt)}
	e.User.Username = "me"
	e.ObjectRef = &struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		APIGroup    string `json:"apiGroup"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	}{Resource: resource}
	return e
}

func mine(e AuditEvent) bool { return e.User.Username == "me" }

func TestAuditTwoWatchesOnOneResourceAreSeen(t *testing.T) {
	evs := []AuditEvent{
		ev("a", "ResponseStarted", "watch", "nodes", 0, 0),
		ev("b", "ResponseStarted", "watch", "nodes", 1, 1),
		ev("g", "ResponseComplete", "get", "nodes", 1, 1),
	}
	s := SteadyState(evs, mine, at(5), at(65))
	if s.MaxOpenWatches["/nodes"] != 2 || s.OpenWatchesAtEnd["/nodes"] != 2 {
		t.Fatalf("%s", s)
	}
	if len(s.Requests) != 0 || len(s.Writes) != 0 {
		t.Fatalf("requests before the window counted: %s", s)
	}
}

func TestAuditAReopenedWatchIsOneAndWritesCount(t *testing.T) {
	other := ev("x", "ResponseStarted", "watch", "nodes", 100, 100)
	other.User.Username = "kubelet"
	evs := []AuditEvent{
		ev("a", "ResponseStarted", "watch", "nodes", 0, 0),
		ev("a", "ResponseComplete", "watch", "nodes", 0, 290),
		ev("b", "ResponseStarted", "watch", "nodes", 290, 290),
		ev("p", "ResponseComplete", "patch", "nodes", 300, 300),
		// Another client's watch does not count.
		other,
	}
	s := SteadyState(evs, mine, at(10), at(3610))
	if s.MaxOpenWatches["/nodes"] != 1 || s.OpenWatchesAtEnd["/nodes"] != 1 {
		t.Fatalf("%s", s)
	}
	if s.Requests["watch /nodes"] != 1 || s.Requests["patch /nodes"] != 1 || len(s.Writes) != 1 {
		t.Fatalf("%s", s)
	}
	if got := s.PerHour(s.Requests["watch /nodes"]); got != 1 {
		t.Fatalf("per hour %v", got)
	}
}

func TestAuditAWatchThatEndedBeforeTheWindowIsClosed(t *testing.T) {
	evs := []AuditEvent{
		ev("a", "ResponseStarted", "watch", "nodes", 0, 0),
		ev("a", "ResponseComplete", "watch", "nodes", 0, 4),
	}
	if s := SteadyState(evs, mine, at(5), at(10)); s.MaxOpenWatches["/nodes"] != 0 || s.OpenWatchesAtEnd["/nodes"] != 0 {
		t.Fatalf("%s", s)
	}
}
