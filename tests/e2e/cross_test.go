package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/tests/guest"
	"github.com/kguest/kguest/tests/qemu"
)

// hostOnly skips scenarios whose containers run busybox commands: the
// container rootfs gets Debian's busybox-static, which is the host's. On
// another arch the scenarios that need only the agent, the debug shell and
// guesttool (all cross-built) still run.
func hostOnly(t *testing.T, e *env) {
	t.Helper()
	if e.arch != qemu.HostArch() {
		t.Skipf("its containers run busybox, and the host's busybox-static is not a %s binary", e.arch)
	}
}

// TestContainerAnyArch runs one container on any architecture: its rootfs
// is a 9p share holding only the cross-built guesttool.
func TestContainerAnyArch(t *testing.T) {
	e := setup(t)
	root := t.TempDir()
	b, err := os.ReadFile(e.guestTool)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"usr/bin", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/guesttool"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	vm := startVM(t, e, qemu.Config{Shares9p: []qemu.Share{{Tag: "rootfs9p", Path: root}}})
	g := connect(t, vm)
	checkReady(t, g)
	const mp = "/run/kata-containers/one/rootfs"
	st := &agentpb.Storage{Driver: "9p", Source: "rootfs9p", Fstype: "9p", Options: []string{"trans=virtio", "version=9p2000.L"}, MountPoint: mp}
	want := fmt.Sprintf("hello from the %s guest", e.arch)
	spec := guest.Spec("one", guest.SpecOptions{Rootfs: mp, Args: []string{"/usr/bin/guesttool", "echo", want}})
	r := run(t, g, "one", spec, st)
	if r.Stdout != want+"\n" || r.Status != 0 {
		t.Fatalf("container: stdout %q stderr %q status %d", r.Stdout, r.Stderr, r.Status)
	}
	t.Logf("%s: %s", e.arch, r.Stdout)
}
