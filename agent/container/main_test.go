package container

import (
	"github.com/kguest/kguest/agent/container/testutil"
	"os"
	"testing"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		// libcontainer re-executes this binary as "runc init".
		libcontainer.Init()
	}
	code := m.Run()
	testutil.RemoveCgroupParent()
	os.Exit(code)
}
