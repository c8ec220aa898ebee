package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"github.com/kguest/kguest/protocols/typespb"
	"github.com/kguest/kguest/tests/guest"
	"github.com/kguest/kguest/tests/qemu"
)

// TestNetwork configures the VM's virtio-net interface with UpdateInterface
// and UpdateRoutes and checks that a container (in the VM's network
// namespace, as in Kata) sees them.
func TestNetwork(t *testing.T) {
	e := setup(t)
	hostOnly(t, e)
	share := sharedDir(t, e, "net")
	const mac = "52:54:00:12:34:56"
	vm := startVM(t, e, qemu.Config{Net: true, NetMAC: mac, VirtioFS: []qemu.Share{{Tag: guest.SharedTag, Path: share}}})
	g := connect(t, vm)
	sandboxWithShare(t, g)
	ctx := ctxT(t, 3*time.Minute)

	ifc, err := g.UpdateInterface(ctx, &agentpb.UpdateInterfaceRequest{Interface: &typespb.Interface{
		Device: "eth0", Name: "eth0", HwAddr: mac, Mtu: 1400,
		IPAddresses: []*typespb.IPAddress{{Family: typespb.IPFamily_v4, Address: "10.0.2.15", Mask: "24"}},
	}})
	if err != nil {
		t.Fatalf("UpdateInterface: %v", err)
	}
	t.Logf("UpdateInterface: %v", ifc)
	if _, err := g.UpdateRoutes(ctx, &agentpb.UpdateRoutesRequest{Routes: &agentpb.Routes{Routes: []*typespb.Route{
		{Dest: "10.0.2.0/24", Device: "eth0", Scope: 253, Family: typespb.IPFamily_v4},
		{Gateway: "10.0.2.2", Device: "eth0", Family: typespb.IPFamily_v4},
	}}}); err != nil {
		t.Fatalf("UpdateRoutes: %v", err)
	}
	spec := guest.Spec("net", guest.SpecOptions{Rootfs: sharedRootfs("net"), Args: []string{"sh", "-c", "ip addr show eth0; ip route"}})
	r := run(t, g, "net", spec)
	if r.Status != 0 {
		t.Fatalf("ip in container: status %d stderr %q", r.Status, r.Stderr)
	}
	for _, want := range []string{"inet 10.0.2.15/24", "mtu 1400", mac, "default via 10.0.2.2 dev eth0", "10.0.2.0/24 dev eth0"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("container does not see %q:\n%s", want, r.Stdout)
		}
	}
	l, err := g.ListInterfaces(ctx, &agentpb.ListInterfacesRequest{})
	if err != nil {
		t.Fatalf("ListInterfaces: %v", err)
	}
	found := false
	for _, i := range l.GetInterfaces() {
		if i.HwAddr == mac && len(i.IPAddresses) > 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("ListInterfaces lacks eth0 with its address: %v", l)
	}
}

// Test9p mounts a 9p share as a container storage: the container reads a
// host file and writes one the host sees.
func Test9p(t *testing.T) {
	e := setup(t)
	hostOnly(t, e)
	share := sharedDir(t, e, "p9")
	host := t.TempDir()
	writeFile(t, filepath.Join(host, "marker"), "from the host over 9p\n")
	vm := startVM(t, e, qemu.Config{
		VirtioFS: []qemu.Share{{Tag: guest.SharedTag, Path: share}},
		Shares9p: []qemu.Share{{Tag: "e2e9p", Path: host}},
	})
	g := connect(t, vm)
	sandboxWithShare(t, g)
	st := &agentpb.Storage{Driver: "9p", Source: "e2e9p", Fstype: "9p", Options: []string{"trans=virtio", "version=9p2000.L", "msize=262144"},
		MountPoint: "/run/kata-containers/shared/9p-e2e"}
	spec := guest.Spec("p9", guest.SpecOptions{Rootfs: sharedRootfs("p9"), Args: []string{"sh", "-c", "cat /mnt/marker && echo written > /mnt/from-guest && grep ' /mnt ' /proc/mounts"},
		Mounts: []*agentpb.Mount{{Destination: "/mnt", Source: st.MountPoint, Type: "bind", Options: []string{"rbind", "rw"}}}})
	r := run(t, g, "p9", spec, st)
	if r.Status != 0 || !strings.HasPrefix(r.Stdout, "from the host over 9p\n") || !strings.Contains(r.Stdout, " 9p ") {
		t.Fatalf("9p container: stdout %q stderr %q status %d", r.Stdout, r.Stderr, r.Status)
	}
	b, err := os.ReadFile(filepath.Join(host, "from-guest"))
	if err != nil || string(b) != "written\n" {
		t.Fatalf("file written by the guest: %q %v", b, err)
	}
}

// TestHotplug adds a vCPU and a DIMM over QMP (q35) and onlines them with
// OnlineCPUMem.
func TestHotplug(t *testing.T) {
	e := setup(t)
	if e.arch != "x86_64" {
		t.Skip("CPU and memory hotplug scenario is x86_64 q35")
	}
	share := sharedDir(t, e, "hp")
	vm := startVM(t, e, qemu.Config{Machine: "q35", CPUs: 1, MaxCPUs: 2, MaxMemoryMiB: 1024,
		VirtioFS: []qemu.Share{{Tag: guest.SharedTag, Path: share}}})
	g := connect(t, vm)
	sandboxWithShare(t, g)
	ctx := ctxT(t, 5*time.Minute)
	count := func() (cpus int, memKiB int) {
		spec := guest.Spec("hp", guest.SpecOptions{Rootfs: sharedRootfs("hp"), Args: []string{"sh", "-c", "grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo"}})
		r := run(t, g, "hp", spec)
		f := strings.Fields(r.Stdout)
		if r.Status != 0 || len(f) < 3 {
			t.Fatalf("count: %q %q %d", r.Stdout, r.Stderr, r.Status)
		}
		cpus, _ = strconv.Atoi(f[0])
		memKiB, _ = strconv.Atoi(f[2])
		return
	}
	cpus0, mem0 := count()

	q, err := qemu.DialQMP(ctx, vm.QMPSock)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	raw, err := q.Execute(ctx, "query-hotpluggable-cpus", nil)
	if err != nil {
		t.Fatal(err)
	}
	var slots []struct {
		Type    string         `json:"type"`
		Props   map[string]any `json:"props"`
		QOMPath string         `json:"qom-path"`
	}
	if err := json.Unmarshal(raw, &slots); err != nil {
		t.Fatal(err)
	}
	plugged := false
	for _, s := range slots {
		if s.QOMPath != "" {
			continue
		}
		args := map[string]any{"driver": s.Type, "id": "cpu1"}
		for k, v := range s.Props {
			args[k] = v
		}
		if _, err := q.Execute(ctx, "device_add", args); err != nil {
			t.Fatal(err)
		}
		plugged = true
		break
	}
	if !plugged {
		t.Fatal("no free CPU slot")
	}
	// Shared like the boot RAM: virtiofsd must reach buffers placed in it.
	if _, err := q.Execute(ctx, "object-add", map[string]any{"qom-type": "memory-backend-memfd", "id": "hpmem1", "size": 128 << 20, "share": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Execute(ctx, "device_add", map[string]any{"driver": "pc-dimm", "id": "dimm1", "memdev": "hpmem1", "node": 0}); err != nil {
		t.Fatal(err)
	}
	// The kernel sees the new CPU and memory through ACPI events; give it
	// time to register them before onlining (OnlineCPUMem waits for CPUs).
	time.Sleep(3 * time.Second)
	if _, err := g.OnlineCPUMem(ctx, &agentpb.OnlineCPUMemRequest{Wait: true, NbCpus: 1}); err != nil {
		t.Fatalf("OnlineCPUMem: %v", err)
	}
	cpus1, mem1 := count()
	t.Logf("CPUs %d -> %d, MemTotal %d -> %d KiB", cpus0, cpus1, mem0, mem1)
	if cpus1 != cpus0+1 {
		t.Errorf("CPUs after hotplug: %d, want %d", cpus1, cpus0+1)
	}
	if mem1-mem0 < 120<<10 {
		t.Errorf("MemTotal grew by %d KiB, want about 128 MiB", mem1-mem0)
	}
}

// TestVsockLoopback starts a second agent listening on vsock inside the
// guest and reaches it through vsock loopback (CID 1) with the project's
// client, from a container that has /dev/vsock.
func TestVsockLoopback(t *testing.T) {
	e := setup(t)
	cfg, st := sharedVM(e, sharedDir(t, e, "vs"))
	vm := startVM(t, e, cfg)
	g := connect(t, vm)
	sandboxWith(t, g, st)
	spec := guest.Spec("vs", guest.SpecOptions{Rootfs: sharedRootfs("vs"), Args: []string{"guesttool", "vsock-check", "2048"},
		Mounts: []*agentpb.Mount{{Destination: "/dev/vsock", Source: "/dev/vsock", Type: "bind", Options: []string{"bind"}}}})
	spec.Process.Env = append(spec.Process.Env, "GUESTTOOL_AGENT=/usr/bin/kata-agent", "KATA_AGENT_LOG_LEVEL=error")
	spec.Linux.Resources.Devices = []*agentpb.LinuxDeviceCgroup{{Allow: true, Type: "a", Major: -1, Minor: -1, Access: "rwm"}}
	r := run(t, g, "vs", spec)
	if r.Status != 0 {
		t.Fatalf("vsock-check: status %d\nstdout %s\nstderr %s", r.Status, r.Stdout, r.Stderr)
	}
	for _, p := range []string{"ttrpc", "grpc"} {
		if !regexp.MustCompile(`vsockcheck ` + p + ` vsock://1:2048: SERVING`).MatchString(r.Stdout) {
			t.Errorf("no %s answer over vsock loopback:\n%s", p, r.Stdout)
		}
	}
	t.Log(strings.TrimSpace(r.Stdout))
}

// TestDebugConsole boots with agent.debug_console and runs a command on the
// serial console.
func TestDebugConsole(t *testing.T) {
	e := setup(t)
	vm := startVM(t, e, qemu.Config{Cmdline: []string{"agent.debug_console"}})
	connect(t, vm)
	ctx := ctxT(t, 2*time.Minute)
	re := regexp.MustCompile(`(?m)^debug-console-(\d+)\r?$`)
	for i := 0; i < 20; i++ {
		// The shell may not be there yet: type until it answers.
		if err := vm.TypeConsole("echo debug-console-$((6*7))\n"); err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		m, err := vm.WaitConsole(sctx, re)
		cancel()
		if err == nil {
			if m != "debug-console-42" && strings.TrimSpace(m) != "debug-console-42" {
				t.Fatalf("debug console answered %q", m)
			}
			return
		}
	}
	t.Fatal("no answer from a shell on the debug console")
}

// TestConsoleStopped stops the console's output with XOFF (^S, as anyone
// on the debug console may type) and keeps calling the agent on new
// connections, each of which it logs at debug level: once the tty's buffer
// is full a console write blocks, and the agent must keep serving anyway.
// After XON (^Q) the held lines come out.
func TestConsoleStopped(t *testing.T) {
	e := setup(t)
	vm := startVM(t, e, qemu.Config{Cmdline: []string{"agent.log=debug"}})
	g := connect(t, vm)
	if err := vm.TypeConsole("\x13"); err != nil {
		t.Fatal(err)
	}
	const calls = 200 // ~25 KB of log lines, far beyond the tty's 4 KiB
	for i := 0; i < calls; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := g.Dialer.New(ctx, g.Addr, client.TTRPC)
		if err == nil {
			var resp *agentpb.HealthCheckResponse
			resp, err = c.Check(ctx, &agentpb.CheckRequest{})
			if err == nil && resp.Status != agentpb.HealthCheckResponse_SERVING {
				err = fmt.Errorf("status %v", resp.Status)
			}
			c.Close()
		}
		cancel()
		if err != nil {
			t.Fatalf("call %d with the console stopped: %v", i, err)
		}
	}
	if err := vm.TypeConsole("\x11"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(os.Getenv("KGUEST_E2E_CMDLINE"), "agent.log") {
		return
	}
	ctx := ctxT(t, time.Minute)
	many := regexp.MustCompile(`(?s)(msg=connection .*){` + strconv.Itoa(calls) + `}`)
	if _, err := vm.WaitConsole(ctx, many); err != nil {
		t.Fatalf("the agent's lines did not come out after XON: %v", err)
	}
}
