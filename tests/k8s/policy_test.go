package k8s

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// The token of cchost's pod on node A carries node A (the claim the admission policy
// reads): checked in the token itself, so the policy test below cannot pass for a
// token without it.
func testTokenCarriesTheNodeClaim(t *testing.T) {
	parts := strings.Split(e.tokenA, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		K8s struct {
			Node struct{ Name string } `json:"node"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.K8s.Node.Name != nodeA {
		t.Fatalf("the token's kubernetes.io.node.name = %q, want %q (%s)", claims.K8s.Node.Name, nodeA, payload)
	}
}

// deploy/kubernetes/cchost-own-node.yaml: cchost's token bound to node A may label node
// A and not node B; node B's token the other way round.
func testOwnNodePolicy(t *testing.T) {
	ctx := context.Background()
	clientFor := func(token string) *kubernetes.Clientset {
		c, err := kubernetes.NewForConfig(e.cluster.TokenConfig(token))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := clientFor(e.tokenA), clientFor(e.tokenB)
	patch := func(c *kubernetes.Clientset, node string) error {
		body := `{"apiVersion":"v1","kind":"Node","metadata":{"name":"` + node + `","labels":{"cchost.io/policy-test":"x"}}}`
		force := true
		_, err := c.CoreV1().Nodes().Patch(ctx, node, types.ApplyPatchType, []byte(body),
			metav1.PatchOptions{FieldManager: "cchost-policy-test", Force: &force})
		return err
	}
	statusPatch := func(c *kubernetes.Clientset, node string) error {
		body := `{"apiVersion":"v1","kind":"Node","metadata":{"name":"` + node + `"},"status":{"capacity":{"example.com/policy-test":"1"}}}`
		force := true
		_, err := c.CoreV1().Nodes().Patch(ctx, node, types.ApplyPatchType, []byte(body),
			metav1.PatchOptions{FieldManager: "cchost-policy-test", Force: &force}, "status")
		return err
	}
	denied := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed, want denied", what)
			return
		}
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "cchost may only change its own node") {
			t.Errorf("%s: %v, want the policy's denial", what, err)
		}
	}
	allowed := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v, want allowed", what, err)
		}
	}
	denied("token A patching node B", patch(a, nodeB))
	denied("token B patching node A", patch(b, nodeA))
	denied("token A patching node B's status", statusPatch(a, nodeB))
	allowed("token A patching node A", patch(a, nodeA))
	allowed("token B patching node B", patch(b, nodeB))
	allowed("token A patching node A's status", statusPatch(a, nodeA))
	// Clean up what the allowed requests wrote (the admin's own apply with no fields).
	for _, n := range []string{nodeA, nodeB} {
		for _, sub := range [][]string{nil, {"status"}} {
			body := `{"apiVersion":"v1","kind":"Node","metadata":{"name":"` + n + `"}}`
			force := true
			if _, err := e.cluster.Admin.CoreV1().Nodes().Patch(ctx, n, types.ApplyPatchType, []byte(body),
				metav1.PatchOptions{FieldManager: "cchost-policy-test", Force: &force}, sub...); err != nil {
				t.Fatal(err)
			}
		}
	}
}
