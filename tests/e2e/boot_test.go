package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"github.com/kguest/kguest/tests/artifacts"
	"github.com/kguest/kguest/tests/guest"
	"github.com/kguest/kguest/tests/qemu"
)

// checkReady asserts Health on both protocols and the guest details of an
// agent that is the guest's init.
func checkReady(t *testing.T, g *guest.Guest) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	resp, err := g.Check(ctx, &agentpb.CheckRequest{})
	if err != nil || resp.Status != agentpb.HealthCheckResponse_SERVING {
		t.Fatalf("Health.Check over ttrpc: %v %v", resp, err)
	}
	gc, err := g.Dialer.New(ctx, g.Addr, client.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	if resp, err := gc.Check(ctx, &agentpb.CheckRequest{}); err != nil || resp.Status != agentpb.HealthCheckResponse_SERVING {
		t.Fatalf("Health.Check over gRPC on the same channel: %v %v", resp, err)
	}
	v, err := g.Version(ctx, &agentpb.CheckRequest{})
	if err != nil {
		t.Fatalf("Health.Version: %v", err)
	}
	d, err := g.GetGuestDetails(ctx, &agentpb.GuestDetailsRequest{MemBlockSize: true, MemHotplugProbe: true})
	if err != nil {
		t.Fatalf("GetGuestDetails: %v", err)
	}
	ad := d.GetAgentDetails()
	if !ad.GetInitDaemon() {
		t.Errorf("GetGuestDetails: init_daemon = false, want true (the agent is PID 1)")
	}
	if ad.GetVersion() == "" || ad.GetVersion() != v.AgentVersion {
		t.Errorf("agent version: details %q, Health.Version %q", ad.GetVersion(), v.AgentVersion)
	}
	t.Logf("agent %s (API %s), mem block size %d, storage handlers %v, seccomp %v",
		v.AgentVersion, v.GrpcVersion, d.MemBlockSizeBytes, ad.GetStorageHandlers(), ad.GetSupportsSeccomp())
}

func TestBootInitrd(t *testing.T) {
	e := setup(t)
	vm := startVM(t, e, qemu.Config{})
	g := connect(t, vm)
	checkReady(t, g)
}

// TestBootDAX boots from the DAX disk image mapped as an NVDIMM and checks,
// through a container that sees the guest's mount table, that the root is
// /dev/pmem0p1 mounted with dax.
func TestBootDAX(t *testing.T) {
	e := setup(t)
	hostOnly(t, e)
	if e.arch == "s390x" {
		t.Skip("s390x has no NVDIMM")
	}
	ctx := ctxT(t, 10*time.Minute)
	img, err := artifacts.BuildImage(ctx, e.tools, e.arch, artifacts.RootfsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	share := sharedDir(t, e, "dax")
	vm := startVM(t, e, qemu.Config{Image: img.Path, RootMode: qemu.RootNVDIMM, VirtioFS: []qemu.Share{{Tag: guest.SharedTag, Path: share}}})
	g := connect(t, vm)
	checkReady(t, g)
	sandboxWithShare(t, g)

	spec := guest.Spec("dax", guest.SpecOptions{Rootfs: sharedRootfs("dax"), Args: []string{"cat", "/guest-mounts"},
		Mounts: []*agentpb.Mount{{Destination: "/guest-mounts", Source: "/proc/1/mounts", Type: "bind", Options: []string{"rbind", "ro"}}}})
	r := run(t, g, "dax", spec)
	if r.Status != 0 {
		t.Fatalf("cat /proc/1/mounts: status %d, stderr %q", r.Status, r.Stderr)
	}
	re := regexp.MustCompile(`(?m)^/dev/pmem0p1 / ext4 (\S*)`)
	m := re.FindStringSubmatch(r.Stdout)
	if m == nil {
		t.Fatalf("guest root is not /dev/pmem0p1:\n%s", r.Stdout)
	}
	if !strings.Contains(m[1], "dax") {
		t.Fatalf("/dev/pmem0p1 mounted without dax: %s", m[0])
	}
	t.Logf("guest root: %s", m[0])
}

// TestReconnect hangs up the host side of the serial channel several times;
// the agent must set the channel up again and keep serving, with its state.
func TestReconnect(t *testing.T) {
	e := setup(t)
	hostOnly(t, e)
	share := sharedDir(t, e, "keep")
	vm := startVM(t, e, qemu.Config{VirtioFS: []qemu.Share{{Tag: guest.SharedTag, Path: share}}})
	g := connect(t, vm)
	sandboxWithShare(t, g)
	ctx := ctxT(t, 5*time.Minute)
	spec := guest.Spec("keep", guest.SpecOptions{Rootfs: sharedRootfs("keep"), Args: []string{"sh", "-c", "echo before; read x; echo after $x"}})
	if err := g.Create(ctx, "keep", spec); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := g.Reconnect(ctx); err != nil {
			t.Fatalf("reconnect %d: %v", i, err)
		}
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		resp, err := g.Check(rctx, &agentpb.CheckRequest{})
		cancel()
		if err != nil || resp.Status != agentpb.HealthCheckResponse_SERVING {
			t.Fatalf("Health.Check after reconnect %d: %v %v", i, resp, err)
		}
	}
	// The container survived the hang-ups and its output was kept.
	if _, err := g.WriteStdin(ctx, &agentpb.WriteStreamRequest{ContainerId: "keep", ExecId: "keep", Data: []byte("ok\n")}); err != nil {
		t.Fatalf("WriteStdin after reconnects: %v", err)
	}
	r, err := g.Collect(ctx, "keep", "keep", false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stdout != "before\nafter ok\n" || r.Status != 0 {
		t.Fatalf("container after reconnects: stdout %q status %d", r.Stdout, r.Status)
	}
	if err := g.Remove(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
}
