package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/tests/artifacts"
	"github.com/kguest/kguest/tests/guest"
	"github.com/kguest/kguest/tests/qemu"
)

// lifecycle exercises one running container: output and exit code of a
// short one, exec with and without a tty, stats, a signal, removal.
func lifecycle(t *testing.T, g *guest.Guest, rootfs string, storages ...*agentpb.Storage) {
	ctx := ctxT(t, 5*time.Minute)

	// Output on both streams and the exit code.
	spec := guest.Spec("short", guest.SpecOptions{Rootfs: rootfs, Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
	r := run(t, g, "short", spec, storages...)
	if r.Stdout != "out\n" || r.Stderr != "err\n" || r.Status != 3 {
		t.Errorf("short container: stdout %q stderr %q status %d; want out, err, 3", r.Stdout, r.Stderr, r.Status)
	}

	// A long-running container that reports SIGTERM.
	spec = guest.Spec("long", guest.SpecOptions{Rootfs: rootfs, Args: []string{"sh", "-c",
		`trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.2; done`}})
	if err := g.Create(ctx, "long", spec, storages...); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	first, err := g.ReadStdout(ctx, &agentpb.ReadStreamRequest{ContainerId: "long", ExecId: "long", Len: 64})
	if err != nil || string(first.Data) != "ready\n" {
		t.Fatalf("first output of long container: %q %v", first.GetData(), err)
	}

	x, err := g.Exec(ctx, "long", "exec-notty", false, "sh", "-c", "echo exec-$((6*7)); echo hostname=$(hostname); exit 5")
	if err != nil {
		t.Fatal(err)
	}
	if x.Stdout != "exec-42\nhostname=long\n" || x.Status != 5 {
		t.Errorf("exec without tty: stdout %q status %d", x.Stdout, x.Status)
	}
	x, err = g.Exec(ctx, "long", "exec-tty", true, "sh", "-c", "tty; echo tty-ok")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(x.Stdout, "/dev/pts/") || !strings.Contains(x.Stdout, "tty-ok") || x.Status != 0 {
		t.Errorf("exec with tty: stdout %q status %d", x.Stdout, x.Status)
	}

	st, err := g.StatsContainer(ctx, &agentpb.StatsContainerRequest{ContainerId: "long"})
	if err != nil {
		t.Fatalf("StatsContainer: %v", err)
	}
	cg := st.GetCgroupStats()
	if cg.GetMemoryStats().GetUsage().GetUsage() == 0 || cg.GetPidsStats().GetCurrent() == 0 {
		t.Errorf("StatsContainer: memory usage %d, pids %d; want both > 0", cg.GetMemoryStats().GetUsage().GetUsage(), cg.GetPidsStats().GetCurrent())
	}
	t.Logf("stats: memory %d bytes, pids %d, cpu %d ns", cg.GetMemoryStats().GetUsage().GetUsage(), cg.GetPidsStats().GetCurrent(), cg.GetCpuStats().GetCpuUsage().GetTotalUsage())

	if _, err := g.SignalProcess(ctx, &agentpb.SignalProcessRequest{ContainerId: "long", ExecId: "long", Signal: uint32(syscall.SIGTERM)}); err != nil {
		t.Fatalf("SignalProcess: %v", err)
	}
	r2, err := g.Collect(ctx, "long", "long", false)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Stdout != "got-term\n" || r2.Status != 42 {
		t.Errorf("after SIGTERM: stdout %q status %d; want got-term, 42", r2.Stdout, r2.Status)
	}
	if err := g.Remove(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.StatsContainer(ctx, &agentpb.StatsContainerRequest{ContainerId: "long"}); guest.Code(err).String() != "NotFound" {
		t.Errorf("StatsContainer after remove: %v, want NotFound", err)
	}
}

// TestContainerVirtioFS runs busybox containers whose rootfs comes over
// virtio-fs (the kataShared share), and an OOM kill.
func TestContainerVirtioFS(t *testing.T) {
	e := setup(t)
	hostOnly(t, e)
	share := sharedDir(t, e, "short", "oom")
	vm := startVM(t, e, qemu.Config{VirtioFS: []qemu.Share{{Tag: guest.SharedTag, Path: share}}})
	g := connect(t, vm)
	sandboxWithShare(t, g)
	t.Run("lifecycle", func(t *testing.T) { lifecycle(t, g, sharedRootfs("short")) })
	t.Run("oom", func(t *testing.T) { oom(t, g, sharedRootfs("oom")) })
	t.Run("watchable-bind", func(t *testing.T) { watchableBind(t, g, share, sharedRootfs("short")) })
}

// kubeletConfigMap writes a config map version the way the kubelet does:
// files in a new directory, then ..data swapped to it by rename.
func kubeletConfigMap(t *testing.T, dir, version, conf string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, version, "app.conf"), conf)
	if _, err := os.Lstat(filepath.Join(dir, "app.conf")); err != nil {
		if err := os.Symlink("..data/app.conf", filepath.Join(dir, "app.conf")); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(version, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// watchableBind gives a container a config map from the virtio-fs share as
// a watchable-bind storage, as Kata's runtime does for Kubernetes volumes:
// an inotify watch in the container sees the host's update, which a
// virtio-fs mount alone would never report.
func watchableBind(t *testing.T, g *guest.Guest, share, rootfs string) {
	ctx := ctxT(t, 3*time.Minute)
	kubeletConfigMap(t, filepath.Join(share, "cm"), "..v1", "level=info\n")
	st := &agentpb.Storage{Driver: "watchable-bind", Source: guest.SharedDir + "/cm", Fstype: "bind",
		Options: []string{"bind"}, MountPoint: guest.SharedDir + "/watchable/cm"}
	spec := guest.Spec("watch", guest.SpecOptions{Rootfs: rootfs,
		Args:   []string{"sh", "-c", "guesttool inotify /cfg ..data && cat /cfg/app.conf"},
		Mounts: []*agentpb.Mount{{Destination: "/cfg", Source: st.MountPoint, Type: "bind", Options: []string{"rbind", "ro"}}}})
	if err := g.Create(ctx, "watch", spec, st); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx, "watch"); err != nil {
		t.Fatal(err)
	}
	var first string
	for !strings.Contains(first, "watching\n") {
		r, err := g.ReadStdout(ctx, &agentpb.ReadStreamRequest{ContainerId: "watch", ExecId: "watch", Len: 64})
		if err != nil {
			r, _ := g.Collect(ctx, "watch", "watch", false)
			t.Fatalf("waiting for the container's inotify watch: %q %v (status %d, stderr %q)", first, err, r.Status, r.Stderr)
		}
		first += string(r.Data)
	}
	kubeletConfigMap(t, filepath.Join(share, "cm"), "..v2", "level=debug\n")
	r, err := g.Collect(ctx, "watch", "watch", false)
	if err != nil {
		t.Fatal(err)
	}
	out := first + r.Stdout
	if r.Status != 0 || !strings.Contains(out, "event moved_to ..data\n") || !strings.HasSuffix(out, "level=debug\n") {
		t.Errorf("watchable-bind container: status %d stdout %q stderr %q", r.Status, out, r.Stderr)
	}
	t.Logf("container saw: %q", out)
	if err := g.Remove(ctx, "watch"); err != nil {
		t.Fatal(err)
	}
}

// oom runs a container whose memory limit is smaller than what it
// allocates, and expects GetOOMEvent to name it.
func oom(t *testing.T, g *guest.Guest, rootfs string) {
	ctx := ctxT(t, 3*time.Minute)
	events := make(chan string, 1)
	errs := make(chan error, 1)
	go func() {
		ev, err := g.GetOOMEvent(ctx, &agentpb.GetOOMEventRequest{})
		if err != nil {
			errs <- err
			return
		}
		events <- ev.ContainerId
	}()
	spec := guest.Spec("oom", guest.SpecOptions{Rootfs: rootfs, Args: []string{"guesttool", "alloc", "64"}, MemoryLimit: 32 << 20})
	r := run(t, g, "oom", spec)
	if r.Status != 137 {
		t.Errorf("OOM container: status %d, want 137 (SIGKILL); stdout %q stderr %q", r.Status, r.Stdout, r.Stderr)
	}
	select {
	case id := <-events:
		if id != "oom" {
			t.Errorf("GetOOMEvent = %q, want oom", id)
		}
	case err := <-errs:
		t.Fatalf("GetOOMEvent: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("no OOM event within a minute")
	}
}

// TestContainerBlk hot-plugs a virtio-blk disk holding an ext4 busybox
// rootfs behind a PCIe root port, and creates a container from it with a
// `blk` storage naming its PCI path: the agent waits for the disk's uevent.
func TestContainerBlk(t *testing.T) {
	e := setup(t)
	if e.arch != "x86_64" {
		t.Skip("PCI hotplug scenario is x86_64 q35")
	}
	tree := t.TempDir()
	if err := artifacts.BusyboxRootfs(tree); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tree+"/etc/blk-marker", "from the virtio-blk disk\n")
	disk := t.TempDir() + "/rootfs.ext4"
	if err := artifacts.Ext4Image(ctxT(t, time.Minute), tree, disk, 64); err != nil {
		t.Fatal(err)
	}
	vm := startVM(t, e, qemu.Config{Machine: "q35",
		ExtraArgs: []string{"-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,addr=0x5",
			"-device", "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,addr=0x6"}})
	g := connect(t, vm)
	if _, err := g.CreateSandbox(ctxT(t, time.Minute), &agentpb.CreateSandboxRequest{Hostname: "e2e", SandboxId: "blk"}); err != nil {
		t.Fatal(err)
	}
	storage := func(id string) *agentpb.Storage {
		return &agentpb.Storage{Driver: "blk", Source: "05/00", Fstype: "ext4", MountPoint: "/run/kata-containers/" + id + "/rootfs"}
	}

	// Ask for the container first, then plug the disk: the agent must find
	// it from the kernel's uevent.
	ctx := ctxT(t, 5*time.Minute)
	created := make(chan error, 1)
	spec := guest.Spec("blk", guest.SpecOptions{Rootfs: "/run/kata-containers/blk/rootfs", Args: []string{"sh", "-c", "cat /etc/blk-marker; grep ' / ' /proc/mounts"}})
	go func() { created <- g.Create(ctx, "blk", spec, storage("blk")) }()
	time.Sleep(2 * time.Second)
	q, err := qemu.DialQMP(ctx, vm.QMPSock)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Execute(ctx, "blockdev-add", map[string]any{"node-name": "blk0", "driver": "raw",
		"file": map[string]any{"driver": "file", "filename": disk}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Execute(ctx, "device_add", map[string]any{"driver": "virtio-blk-pci", "id": "vblk0", "drive": "blk0", "bus": "rp1", "addr": "0"}); err != nil {
		t.Fatal(err)
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx, "blk"); err != nil {
		t.Fatal(err)
	}
	r, err := g.Collect(ctx, "blk", "blk", false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Stdout, "from the virtio-blk disk\n") || !strings.Contains(r.Stdout, "ext4") || r.Status != 0 {
		t.Fatalf("blk container: stdout %q stderr %q status %d", r.Stdout, r.Stderr, r.Status)
	}
	t.Logf("blk container root: %s", strings.TrimSpace(strings.SplitN(r.Stdout, "\n", 2)[1]))
	if err := g.Remove(ctx, "blk"); err != nil {
		t.Fatal(err)
	}
	// The same disk, now present, serves a full lifecycle.
	lifecycle(t, g, "/run/kata-containers/blk2/rootfs", storage("blk2"))

	// AddSwap on a second hot-plugged disk: the guest's initrd has no
	// mkswap, so the agent writes the swap header itself.
	swap := t.TempDir() + "/swap.img"
	if err := os.WriteFile(swap, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Execute(ctx, "blockdev-add", map[string]any{"node-name": "swap0", "driver": "raw",
		"file": map[string]any{"driver": "file", "filename": swap}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Execute(ctx, "device_add", map[string]any{"driver": "virtio-blk-pci", "id": "vswap0", "drive": "swap0", "bus": "rp2", "addr": "0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.AddSwap(ctx, &agentpb.AddSwapRequest{PCIPath: []uint32{6, 0}}); err != nil {
		t.Fatalf("AddSwap: %v", err)
	}
	spec = guest.Spec("swap", guest.SpecOptions{Rootfs: "/run/kata-containers/swap/rootfs", Args: []string{"cat", "/proc/swaps"}})
	r = run(t, g, "swap", spec, storage("swap"))
	// 16 MiB less the header page, in KiB.
	if lines := strings.Split(strings.TrimSpace(r.Stdout), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "16380") {
		t.Errorf("/proc/swaps after AddSwap: %q", r.Stdout)
	} else {
		t.Logf("swap: %s", strings.Join(strings.Fields(lines[1]), " "))
	}
}
