// Package policy decides, per RPC and request content, whether the agent
// serves a call. Policies are Kata agent policy documents: Rego in package
// agent_policy with one rule per request message name (ExecProcessRequest,
// CreateContainerRequest, ...), true when the request is allowed. The Rego
// engine (Open Policy Agent) is built in only with the "policy" build tag;
// without it every call is allowed and SetPolicy is refused.
package policy

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// EnvFile names the environment variable that may point at the policy
// loaded at start (the kernel command line's agent.policy_file wins).
const EnvFile = "KATA_AGENT_POLICY_FILE"

// agentService is the proto service whose calls are subject to policy;
// health checks and other services are always served.
const agentService = "/grpc.AgentService/"

// engine evaluates one compiled policy document.
type engine interface {
	// allow reports whether the rule named after the request allows it.
	allow(ctx context.Context, rule string, input []byte) (bool, error)
}

// Policy is the agent's current policy; the zero value allows everything.
type Policy struct {
	mu  sync.RWMutex
	eng engine
	doc string
}

// New returns a policy that allows every call.
func New() *Policy { return &Policy{} }

// File returns the policy file to load at start: the kernel command line's
// value if set, else $KATA_AGENT_POLICY_FILE.
func File(cmdline string) string {
	if cmdline != "" {
		return cmdline
	}
	return os.Getenv(EnvFile)
}

// LoadFile replaces the policy with the document in path.
func (p *Policy) LoadFile(path string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read policy: %w", err)
	}
	return p.Set(string(doc))
}

// Set compiles doc and makes it the current policy. Without the engine it
// fails with codes.Unimplemented.
func (p *Policy) Set(doc string) error {
	eng, err := compile(doc)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.eng, p.doc = eng, doc
	p.mu.Unlock()
	return nil
}

// Document returns the current policy text ("" for the built-in allow-all).
func (p *Policy) Document() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.doc
}

// RuleName is the rule a call is checked against: the request message's
// name, as in Kata's policies (ReadStdout and ReadStderr share
// ReadStreamRequest, say).
func RuleName(fullMethod string, req any) string {
	if m, ok := req.(proto.Message); ok && m != nil {
		return string(m.ProtoReflect().Descriptor().Name())
	}
	return fullMethod[strings.LastIndexByte(fullMethod, '/')+1:] + "Request"
}

// Authorize is the server's authorizer hook: nil when the call may run,
// a PermissionDenied status when the policy refuses it.
func (p *Policy) Authorize(ctx context.Context, fullMethod string, req any) error {
	if !strings.HasPrefix(fullMethod, agentService) {
		return nil
	}
	p.mu.RLock()
	eng := p.eng
	p.mu.RUnlock()
	if eng == nil {
		return nil
	}
	rule := RuleName(fullMethod, req)
	input, err := marshalInput(req)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "%s is blocked by policy: cannot encode request: %v", rule, err)
	}
	ok, err := eng.allow(ctx, rule, input)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "%s is blocked by policy: %v", rule, err)
	}
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is blocked by policy", rule)
	}
	return nil
}
