package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"github.com/kguest/kguest/tests/artifacts"
	"github.com/kguest/kguest/tests/guest"
	"github.com/kguest/kguest/tests/qemu"
)

// connect waits for the agent in vm and returns a ttrpc client, closed at
// the end of the test.
func connect(t *testing.T, vm *qemu.VM) *guest.Guest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout(*archFlag))
	defer cancel()
	g, err := guest.Connect(ctx, vm, client.TTRPC)
	if err != nil {
		t.Fatalf("agent not ready: %v", err)
	}
	t.Logf("boot to agent-ready: %s", g.Ready.Round(time.Millisecond))
	t.Cleanup(g.Close)
	return g
}

// ctxT is a context for a few RPCs under TCG.
func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// sharedDir makes a directory to export over virtio-fs as Kata does
// (kataShared), holding a busybox rootfs (with guesttool and the agent) for
// each container id under ID/rootfs.
func sharedDir(t *testing.T, e *env, ids ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, id := range ids {
		root := filepath.Join(dir, id, "rootfs")
		if err := artifacts.BusyboxRootfs(root,
			artifacts.Extra{Src: e.guestTool, Dst: "/usr/bin/guesttool"},
			artifacts.Extra{Src: e.tools.Agent, Dst: "/usr/bin/kata-agent"}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// virtioFS is the sandbox storage that mounts the kataShared share.
func virtioFS() *agentpb.Storage {
	return &agentpb.Storage{Driver: "virtio-fs", Source: guest.SharedTag, Fstype: "virtiofs", MountPoint: guest.SharedDir}
}

// sandboxWithShare creates the sandbox with the virtio-fs share mounted.
func sandboxWithShare(t *testing.T, g *guest.Guest) {
	t.Helper()
	sandboxWith(t, g, virtioFS())
}

// sandboxWith creates the sandbox with st (the kataShared share) mounted.
func sandboxWith(t *testing.T, g *guest.Guest, st *agentpb.Storage) {
	t.Helper()
	if _, err := g.CreateSandbox(ctxT(t, time.Minute), &agentpb.CreateSandboxRequest{
		Hostname: "e2e", SandboxId: "e2e-sandbox", Storages: []*agentpb.Storage{st},
	}); err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
}

// sharedVM exports dir as kataShared and returns the VM config and the
// sandbox storage that mounts it: virtio-fs, except on s390x. A big-endian
// guest's virtio-fs mounts, but every request then fails with ECONNREFUSED:
// FUSE messages travel in the guest's byte order and the host's virtiofsd
// reads them as little-endian (it logs FUSE_INIT, opcode 26, as opcode
// 0x1a000000 and fails it). 9p, little-endian on the wire from every
// guest, carries the share there.
func sharedVM(e *env, dir string) (qemu.Config, *agentpb.Storage) {
	share := []qemu.Share{{Tag: guest.SharedTag, Path: dir}}
	if e.arch == "s390x" {
		return qemu.Config{Shares9p: share}, &agentpb.Storage{Driver: "9p", Source: guest.SharedTag, Fstype: "9p",
			Options: []string{"trans=virtio", "version=9p2000.L"}, MountPoint: guest.SharedDir}
	}
	return qemu.Config{VirtioFS: share}, virtioFS()
}

// sharedRootfs is the guest path of a container rootfs in the share.
func sharedRootfs(id string) string { return filepath.Join(guest.SharedDir, id, "rootfs") }

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs a container to completion and fails the test on a transport error.
func run(t *testing.T, g *guest.Guest, id string, spec *agentpb.Spec, storages ...*agentpb.Storage) guest.Result {
	t.Helper()
	r, err := g.Run(ctxT(t, 3*time.Minute), id, spec, storages...)
	if err != nil {
		t.Fatalf("run %s: %v (stdout %q, stderr %q)", id, err, r.Stdout, r.Stderr)
	}
	return r
}
