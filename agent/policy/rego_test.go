//go:build policy

package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"google.golang.org/grpc/codes"
)

const denyExec = `package agent_policy

default ExecProcessRequest := false
default CreateContainerRequest := true
default SetPolicyRequest := true

# Exec is allowed only for "ls" in container c1.
ExecProcessRequest if {
	input.container_id == "c1"
	input.process.Args == ["ls"]
}
`

// A v0-syntax document, as older Kata policies are written.
const v0Doc = `package agent_policy

default SetPolicyRequest = false
default StartContainerRequest = false

StartContainerRequest {
	input.container_id != "forbidden"
}
`

func TestEnabled(t *testing.T) {
	if !Enabled() {
		t.Fatal("Enabled() false with the policy tag")
	}
}

func TestAllowDeny(t *testing.T) {
	p := New()
	if err := p.Set(denyExec); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const exec = "/grpc.AgentService/ExecProcess"
	tests := []struct {
		name   string
		method string
		req    any
		want   codes.Code
	}{
		{"exec other cmd", exec, &agentpb.ExecProcessRequest{ContainerId: "c1", Process: &agentpb.Process{Args: []string{"sh"}}}, codes.PermissionDenied},
		{"exec ls in c1", exec, &agentpb.ExecProcessRequest{ContainerId: "c1", Process: &agentpb.Process{Args: []string{"ls"}}}, codes.OK},
		{"exec ls in c2", exec, &agentpb.ExecProcessRequest{ContainerId: "c2", Process: &agentpb.Process{Args: []string{"ls"}}}, codes.PermissionDenied},
		{"create allowed", "/grpc.AgentService/CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "x"}, codes.OK},
		{"undefined rule denies", "/grpc.AgentService/StartContainer", &agentpb.StartContainerRequest{ContainerId: "x"}, codes.PermissionDenied},
		{"health is not policed", "/grpc.Health/Check", &agentpb.CheckRequest{}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := code(p.Authorize(ctx, tt.method, tt.req)); got != tt.want {
				t.Errorf("code = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestV0AndLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.rego")
	if err := os.WriteFile(path, []byte(v0Doc), 0o644); err != nil {
		t.Fatal(err)
	}
	p := New()
	if err := p.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Authorize(ctx, "/grpc.AgentService/StartContainer", &agentpb.StartContainerRequest{ContainerId: "ok"}); err != nil {
		t.Errorf("allowed start denied: %v", err)
	}
	if code(p.Authorize(ctx, "/grpc.AgentService/StartContainer", &agentpb.StartContainerRequest{ContainerId: "forbidden"})) != codes.PermissionDenied {
		t.Error("forbidden start allowed")
	}
	if code(p.Authorize(ctx, "/grpc.AgentService/SetPolicy", &agentpb.SetPolicyRequest{Policy: denyExec})) != codes.PermissionDenied {
		t.Error("SetPolicy allowed by a policy that forbids it")
	}
}

func TestBadDocuments(t *testing.T) {
	for name, doc := range map[string]string{
		"syntax":        "package agent_policy\nthis is not rego(\n",
		"wrong package": "package other\ndefault ExecProcessRequest := true\n",
	} {
		p := New()
		if err := p.Set(doc); code(err) != codes.InvalidArgument {
			t.Errorf("%s: err = %v, want InvalidArgument", name, err)
		}
		if err := p.Authorize(context.Background(), "/grpc.AgentService/ExecProcess", &agentpb.ExecProcessRequest{}); err != nil {
			t.Errorf("%s: a refused document changed the policy: %v", name, err)
		}
	}
}
