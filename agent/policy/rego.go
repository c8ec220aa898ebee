//go:build policy

package policy

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Enabled reports whether the Rego policy engine is built in.
func Enabled() bool { return true }

const policyPackage = "data.agent_policy"

type regoEngine struct {
	compiler *ast.Compiler

	mu       sync.Mutex
	prepared map[string]*rego.PreparedEvalQuery
}

// compile parses doc as Rego v1 and, failing that, as v0 (Kata's older
// policies), and checks it is the agent_policy package.
func compile(doc string) (engine, error) {
	var mod *ast.Module
	var err error
	var version ast.RegoVersion
	for _, v := range []ast.RegoVersion{ast.RegoV1, ast.RegoV0} {
		mod, err = ast.ParseModuleWithOpts("policy.rego", doc, ast.ParserOptions{RegoVersion: v})
		if err == nil {
			version = v
			break
		}
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "policy: %v", err)
	}
	if got := mod.Package.Path.String(); got != policyPackage {
		return nil, status.Errorf(codes.InvalidArgument, "policy: package is %s, want agent_policy", got)
	}
	c := ast.NewCompiler().WithDefaultRegoVersion(version)
	if c.Compile(map[string]*ast.Module{"policy.rego": mod}); c.Failed() {
		return nil, status.Errorf(codes.InvalidArgument, "policy: %v", c.Errors)
	}
	return &regoEngine{compiler: c, prepared: map[string]*rego.PreparedEvalQuery{}}, nil
}

func (e *regoEngine) query(ctx context.Context, rule string) (*rego.PreparedEvalQuery, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if q, ok := e.prepared[rule]; ok {
		return q, nil
	}
	if _, err := ast.ParseRef(policyPackage + "." + rule); err != nil {
		return nil, fmt.Errorf("bad rule name %q", rule)
	}
	q, err := rego.New(rego.Query(policyPackage+"."+rule), rego.Compiler(e.compiler)).PrepareForEval(ctx)
	if err != nil {
		return nil, err
	}
	e.prepared[rule] = &q
	return &q, nil
}

// allow evaluates the rule; an undefined rule denies, as in Kata. A rule
// may be a boolean or an object with an "allowed" boolean.
func (e *regoEngine) allow(ctx context.Context, rule string, input []byte) (bool, error) {
	q, err := e.query(ctx, rule)
	if err != nil {
		return false, err
	}
	var in any
	if err := util.NewJSONDecoder(bytes.NewReader(input)).Decode(&in); err != nil {
		return false, fmt.Errorf("decode input: %w", err)
	}
	rs, err := q.Eval(ctx, rego.EvalInput(in))
	if err != nil {
		return false, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return false, nil
	}
	switch v := rs[0].Expressions[0].Value.(type) {
	case bool:
		return v, nil
	case map[string]any:
		b, _ := v["allowed"].(bool)
		return b, nil
	}
	return false, nil
}
