// Package reexec is libcontainer's re-exec entry point: libcontainer starts
// every container process by running the current binary as "BINARY init".
//
// Import it for its side effect from the main package (or a TestMain) of a
// binary that runs containers. Its package init runs libcontainer's init,
// which never returns, so that re-exec skips the package inits libcontainer
// does not depend on: Go initializes, at each step, the first package (by
// import path) whose imports are all initialized, and this one needs only
// libcontainer. The binary's other packages (gRPC, ttrpc, the agent API's
// protobuf descriptors, Prometheus collectors) would otherwise be set up, and
// their memory faulted in, for every container process and every exec.
package reexec

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsexec, libcontainer's C constructor, runs before the Go runtime.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

func init() {
	// As the VM's PID 1, "init" can only be a stray kernel command-line
	// word (a container's init is PID 1 of its own pid namespace, but
	// libcontainer hands it its init pipe).
	if len(os.Args) > 1 && os.Args[1] == "init" &&
		(os.Getpid() != 1 || os.Getenv("_LIBCONTAINER_INITPIPE") != "") {
		libcontainer.Init()
	}
}
