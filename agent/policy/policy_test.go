package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRuleName(t *testing.T) {
	tests := []struct {
		method string
		req    any
		want   string
	}{
		{"/grpc.AgentService/ExecProcess", &agentpb.ExecProcessRequest{}, "ExecProcessRequest"},
		{"/grpc.AgentService/ReadStdout", &agentpb.ReadStreamRequest{}, "ReadStreamRequest"},
		{"/grpc.AgentService/GetGuestDetails", &agentpb.GuestDetailsRequest{}, "GuestDetailsRequest"},
		{"/grpc.AgentService/Foo", nil, "FooRequest"},
	}
	for _, tt := range tests {
		if got := RuleName(tt.method, tt.req); got != tt.want {
			t.Errorf("RuleName(%s) = %s, want %s", tt.method, got, tt.want)
		}
	}
}

func TestDefaultAllowsAll(t *testing.T) {
	p := New()
	if err := p.Authorize(context.Background(), "/grpc.AgentService/ExecProcess", &agentpb.ExecProcessRequest{}); err != nil {
		t.Fatalf("default policy denied: %v", err)
	}
}

func TestFile(t *testing.T) {
	t.Setenv(EnvFile, "/env/policy.rego")
	if got := File("/cmdline.rego"); got != "/cmdline.rego" {
		t.Errorf("cmdline not preferred: %s", got)
	}
	if got := File(""); got != "/env/policy.rego" {
		t.Errorf("env not used: %s", got)
	}
}

func TestLoadFileMissing(t *testing.T) {
	if err := New().LoadFile(filepath.Join(t.TempDir(), "none.rego")); !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("err = %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func code(err error) codes.Code { return status.Code(err) }
