//go:build !policy

package policy

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Enabled reports whether the Rego policy engine is built in.
func Enabled() bool { return false }

func compile(string) (engine, error) {
	return nil, status.Error(codes.Unimplemented,
		"SetPolicy: this agent was built without the policy engine (build with `make build POLICY=yes`, Go build tag `policy`)")
}
