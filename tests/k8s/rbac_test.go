package k8s

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"cchost.test/k8s/harness"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// grant is one (API group, resource[/subresource], verb, namespace) permission.
type grant struct{ group, resource, verb, namespace string }

func (g grant) String() string {
	ns := "cluster-wide"
	if g.namespace != "" {
		ns = "in " + g.namespace
	}
	return fmt.Sprintf("%s %q/%s (%s)", g.verb, g.group, g.resource, ns)
}

// granted lists what the shipped ClusterRole and Role allow cchost's ServiceAccount.
func granted(t *testing.T) map[grant]bool {
	t.Helper()
	out := map[grant]bool{}
	for _, o := range e.manifests {
		if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
			continue
		}
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		for _, r := range rules {
			rm := r.(map[string]any)
			groups, _, _ := unstructured.NestedStringSlice(rm, "apiGroups")
			resources, _, _ := unstructured.NestedStringSlice(rm, "resources")
			verbs, _, _ := unstructured.NestedStringSlice(rm, "verbs")
			for _, g := range groups {
				for _, res := range resources {
					for _, v := range verbs {
						out[grant{g, res, v, o.GetNamespace()}] = true
					}
				}
			}
		}
	}
	return out
}

// RBAC from evidence: every request cchost's ServiceAccount made in this whole run (the
// API server's audit log) is granted by the shipped roles, none was refused, and every
// grant was used. Requests the tests make with that identity on purpose (user agent
// cchost-k8s-test) do not count.
func testRBACFromEvidence(t *testing.T) {
	used := map[grant]int{}
	var refused []string
	events, err := harness.ReadAudit(e.cluster.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if ev.User.Username != "system:serviceaccount:"+cchostNS+":"+cchostSA || strings.HasPrefix(ev.UserAgent, harness.TestUserAgent) || ev.ObjectRef == nil {
			continue
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		g := grant{ev.ObjectRef.APIGroup, res, ev.Verb, ev.ObjectRef.Namespace}
		used[g]++
		code := ev.Code()
		// A Server-Side Apply that creates the object is authorized as create too.
		if ev.Verb == "patch" && code == 201 {
			used[grant{g.group, g.resource, "create", g.namespace}]++
		}
		if code == 401 || code == 403 {
			refused = append(refused, fmt.Sprintf("%s %s -> %d", ev.Verb, ev.RequestURI, code))
		}
	}
	if len(used) == 0 {
		t.Fatal("no request of cchost's ServiceAccount in the audit log")
	}
	grants := granted(t)
	covered := func(u grant) bool {
		return grants[u] || grants[grant{u.group, u.resource, u.verb, ""}]
	}
	for _, u := range slices.SortedFunc(maps.Keys(used), func(a, b grant) int { return strings.Compare(a.String(), b.String()) }) {
		t.Logf("used: %s x%d", u, used[u])
		if !covered(u) {
			t.Errorf("cchost made a request the shipped RBAC does not grant: %s", u)
		}
	}
	for _, r := range refused {
		t.Errorf("refused request of cchost: %s", r)
	}
	for g := range grants {
		hit := false
		for u := range used {
			if u.group == g.group && u.resource == g.resource && u.verb == g.verb && (g.namespace == "" || g.namespace == u.namespace) {
				hit = true
			}
		}
		if !hit {
			t.Errorf("the shipped RBAC grants %s, and cchost never used it", g)
		}
	}
}
