package e2e

import (
	"context"
	"os"
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
	checkConsoleLogs(t, e, vm)
}

// agentStarting is the agent's first log line, in text or JSON format.
var agentStarting = regexp.MustCompile(`msg=starting name=kata-agent|"msg":"starting","name":"kata-agent"`)

// checkConsoleLogs asserts that the agent's own writes reach the serial
// console, not only the kernel's: on x86_64 microvm the 8250 UART needs its
// IRQ from ACPI (kernel-config SERIAL_8250_PNP), without which every tty
// write fails while printk, which polls the UART, still shows.
func checkConsoleLogs(t *testing.T, e *env, vm *qemu.VM) {
	t.Helper()
	if strings.Contains(os.Getenv("KGUEST_E2E_CMDLINE"), "agent.log") {
		t.Log("KGUEST_E2E_CMDLINE sets agent.log*: not checking the agent's lines on the console")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := vm.WaitConsole(ctx, agentStarting); err != nil {
		t.Fatalf("the agent's log lines do not reach the console (%v); console:\n%s", err, vm.ConsoleTail(20))
	}
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

	// The kernel names its root /dev/root in the mount table; tell the
	// device by number: the agent's root in /proc/1/mountinfo against
	// pmem0p1's dev in sysfs.
	spec := guest.Spec("dax", guest.SpecOptions{Rootfs: sharedRootfs("dax"),
		Args:   []string{"sh", "-c", "cat /sys/class/block/pmem0p1/dev; grep ' / / ' /guest-mountinfo"},
		Mounts: []*agentpb.Mount{{Destination: "/guest-mountinfo", Source: "/proc/1/mountinfo", Type: "bind", Options: []string{"rbind", "ro"}}}})
	r := run(t, g, "dax", spec)
	if r.Status != 0 {
		t.Fatalf("reading the guest's mounts: status %d, stdout %q, stderr %q", r.Status, r.Stdout, r.Stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("unexpected output:\n%s", r.Stdout)
	}
	dev := strings.TrimSpace(lines[0])
	// mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPEROPTIONS
	f := strings.Fields(lines[1])
	if len(f) < 10 || f[2] != dev {
		t.Fatalf("guest root is not pmem0p1 (%s): %s", dev, lines[1])
	}
	sep := strings.Index(lines[1], " - ")
	super := strings.Fields(lines[1][sep+3:])
	if len(super) < 3 || super[0] != "ext4" || !regexp.MustCompile(`(^|,)dax`).MatchString(super[2]) {
		t.Fatalf("guest root not ext4 with dax: %s", lines[1])
	}
	m := []string{lines[1]}
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
