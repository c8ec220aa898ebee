//go:build !policy

package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"google.golang.org/grpc/codes"
)

func TestSetWithoutEngine(t *testing.T) {
	if Enabled() {
		t.Fatal("Enabled() without the policy tag")
	}
	p := New()
	err := p.Set("package agent_policy\ndefault ExecProcessRequest := false\n")
	if code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "POLICY=yes") {
		t.Fatalf("Set = %v, want Unimplemented naming the build option", err)
	}
	if err := p.Authorize(context.Background(), "/grpc.AgentService/ExecProcess", &agentpb.ExecProcessRequest{}); err != nil {
		t.Fatalf("denied after a refused Set: %v", err)
	}
}
