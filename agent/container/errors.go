// Package container runs OCI containers with runc's libcontainer: spec
// validation and conversion, the container and process objects, their stdio
// (pipes or a pty from libcontainer's console socket) and OOM watching.
package container

import (
	"errors"
	"fmt"
)

// Error classes the RPC layer maps to gRPC codes.
var (
	ErrInvalid       = errors.New("invalid argument")
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrNotRunning    = errors.New("not running")
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
