package container

import (
	"os"
	"testing"

	// libcontainer re-executes this binary as "BINARY init": handled there,
	// as in the agent.
	_ "github.com/kguest/kguest/agent/container/reexec"
	"github.com/kguest/kguest/agent/container/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveCgroupParent()
	os.Exit(code)
}
