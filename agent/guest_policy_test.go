//go:build policy

package agent

import (
	"context"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPolicyRPCs drives the policy through the agent's hooks as the server
// does: the authorizer runs first, then the handler.
func TestPolicyRPCs(t *testing.T) {
	a := &Agent{}
	ctx := context.Background()
	call := func(method string, req any, handler func() error) error {
		if err := a.Authorize(ctx, "/grpc.AgentService/"+method, req); err != nil {
			return err
		}
		return handler()
	}
	noop := func() error { return nil }
	if err := call("ExecProcess", &agentpb.ExecProcessRequest{}, noop); err != nil {
		t.Fatalf("default policy denied exec: %v", err)
	}
	deny := &agentpb.SetPolicyRequest{Policy: "package agent_policy\n\ndefault ExecProcessRequest := false\ndefault CreateContainerRequest := true\ndefault SetPolicyRequest := false\n"}
	if err := call("SetPolicy", deny, func() error { _, err := a.SetPolicy(ctx, deny); return err }); err != nil {
		t.Fatal(err)
	}
	if err := call("ExecProcess", &agentpb.ExecProcessRequest{}, noop); status.Code(err) != codes.PermissionDenied {
		t.Errorf("exec: %v, want PermissionDenied", err)
	}
	if err := call("CreateContainer", &agentpb.CreateContainerRequest{}, noop); err != nil {
		t.Errorf("create: %v", err)
	}
	again := &agentpb.SetPolicyRequest{Policy: "package agent_policy\n\ndefault ExecProcessRequest := true\n"}
	if err := call("SetPolicy", again, func() error { _, err := a.SetPolicy(ctx, again); return err }); status.Code(err) != codes.PermissionDenied {
		t.Errorf("SetPolicy under a policy that forbids it: %v", err)
	}
	if _, err := a.SetPolicy(ctx, &agentpb.SetPolicyRequest{Policy: "not rego {"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad document: %v", err)
	}
	if !PolicyEnabled() {
		t.Error("PolicyEnabled() false with the policy tag")
	}
}
