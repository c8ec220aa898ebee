package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// newStorageHarness is the container harness with storages confined to
// its temp run dir.
func newStorageHarness(t *testing.T) *harness {
	h := newHarness(t, client.GRPC)
	h.agent.ConfigureGuest(GuestConfig{StorageRoot: h.run})
	return h
}

func isTmpfs(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// withEphemeral returns a create request whose container bind-mounts the
// ephemeral storage at mp on /scratch.
func (h *harness) withEphemeral(id, mp string, args ...string) *agentpb.CreateContainerRequest {
	s := h.spec(id, args...)
	s.Mounts = append(s.Mounts, &agentpb.Mount{Destination: "/scratch", Source: mp, Type: "bind", Options: []string{"rbind", "rw"}})
	return &agentpb.CreateContainerRequest{ContainerId: id, OCI: s, Storages: []*agentpb.Storage{
		{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: mp, Options: []string{"size=2m"}},
	}}
}

func TestEphemeralStorageInContainer(t *testing.T) {
	h := newStorageHarness(t)
	mp := filepath.Join(h.run, "sandbox/ephemeral/scratch")
	// The container sees a tmpfs on /scratch and can write to it.
	id1 := newID()
	if _, err := h.c.CreateContainer(ctx(t), h.withEphemeral(id1, mp, "sh", "-c",
		"grep ' /scratch ' /proc/mounts; echo hi > /scratch/f && cat /scratch/f; sleep 30")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: id1}); err != nil {
		t.Fatal(err)
	}
	// A second container shares the same storage.
	id2 := newID()
	if _, err := h.c.CreateContainer(ctx(t), h.withEphemeral(id2, mp, "cat", "/scratch/f")); err != nil {
		t.Fatal(err)
	}
	if got := h.agent.guestServices().storage.Refs(mp); got != 2 {
		t.Errorf("refs = %d, want 2", got)
	}
	if _, err := h.c.SignalProcess(ctx(t), &agentpb.SignalProcessRequest{ContainerId: id1, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	out := h.readAll(h.c, id1, "", false)
	h.wait(id1, "")
	t.Logf("container output: %q", out)
	if !strings.Contains(out, "tmpfs /scratch tmpfs") || !strings.Contains(out, "hi") {
		t.Errorf("container output:\n%s", out)
	}
	h.remove(id1)
	if !isTmpfs(mp) {
		t.Fatal("unmounted while the second container uses it")
	}
	h.remove(id2)
	if isTmpfs(mp) {
		t.Fatal("still mounted after the last container went")
	}
}

func TestFailedCreateRollsBackStorages(t *testing.T) {
	h := newStorageHarness(t)
	mp := filepath.Join(h.run, "sandbox/ephemeral/rb")
	id := newID()
	req := h.withEphemeral(id, mp, "true")
	req.Storages = append(req.Storages, &agentpb.Storage{Driver: "no-such-driver", MountPoint: filepath.Join(h.run, "x")})
	_, err := h.c.CreateContainer(ctx(t), req)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("create with a bad storage: %v, want InvalidArgument", err)
	}
	if isTmpfs(mp) {
		t.Fatal("first storage left mounted")
	}
	// Storages were fine but the container could not be made.
	req = h.withEphemeral(id, mp, "true")
	req.OCI.Root.Path = filepath.Join(h.run, "no-such-rootfs")
	if _, err := h.c.CreateContainer(ctx(t), req); err == nil {
		t.Fatal("create with a missing rootfs succeeded")
	}
	if isTmpfs(mp) {
		t.Fatal("storage left mounted after the create failed")
	}
	// An escaping mount point is refused.
	req = h.withEphemeral(id, filepath.Join(h.run, "../../etc/evil"), "true")
	if _, err := h.c.CreateContainer(ctx(t), req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("escaping mount point: %v, want InvalidArgument", err)
	}
}

// TestUpdateDevices maps a Device message naming a loop device (as a
// virtio-mmio disk is named) to its real numbers in the spec.
func TestUpdateDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches a loop device")
	}
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := hostOutput("losetup", "-f", "--show", img)
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	defer func() { _, _ = hostCombined("losetup", "-d", loop) }()
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))

	a, _ := newGuestAgent(t)
	hostMajor, hostMinor := int64(8), int64(16)
	spec := &specs.Spec{Linux: &specs.Linux{
		Devices: []specs.LinuxDevice{{Path: "/dev/xvdb", Type: "b", Major: hostMajor, Minor: hostMinor}},
		Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
			{Allow: true, Type: "b", Major: &hostMajor, Minor: &hostMinor, Access: "rwm"},
		}},
	}}
	err = a.updateDevices(context.Background(), spec, []*agentpb.Device{
		{Id: "disk1", Type: "mmioblk", VmPath: loop, ContainerPath: "/dev/xvdb"},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := spec.Linux.Devices[0]
	r := spec.Linux.Resources.Devices[0]
	if d.Major != major || d.Minor != minor || *r.Major != major || *r.Minor != minor {
		t.Errorf("spec has %d:%d, rule %d:%d; want %d:%d", d.Major, d.Minor, *r.Major, *r.Minor, major, minor)
	}
	err = a.updateDevices(context.Background(), spec, []*agentpb.Device{{Id: "x", Type: "vfio-pci"}})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("vfio: %v, want Unimplemented", err)
	}
	err = a.updateDevices(context.Background(), spec, []*agentpb.Device{{Id: "x", Type: "floppy"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown type: %v, want InvalidArgument", err)
	}
}

// TestResizeVolume grows an ext4 volume on a loop device after its backing
// file grew.
func TestResizeVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a loop device")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "resize2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	a, cfg := newGuestAgent(t)
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := hostCombined("mkfs.ext4", "-q", "-F", img); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	out, err := hostOutput("losetup", "-f", "--show", img)
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	defer func() { _, _ = hostCombined("losetup", "-d", loop) }()
	mp := filepath.Join(cfg.RunDir, "vol")
	rb, err := a.setupStorages(context.Background(), "c1", []*agentpb.Storage{{Driver: "mmioblk", Source: loop, Fstype: "ext4", MountPoint: mp}})
	if err != nil {
		t.Fatal(err)
	}
	defer rb()
	size := func() uint64 {
		r, err := a.GetVolumeStats(context.Background(), &agentpb.VolumeStatsRequest{VolumeGuestPath: mp})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetUsage()[0].GetTotal()
	}
	before := size()
	if err := os.Truncate(img, 48<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := hostCombined("losetup", "-c", loop); err != nil {
		t.Fatalf("losetup -c: %v %s", err, out)
	}
	_, err = a.ResizeVolume(context.Background(), &agentpb.ResizeVolumeRequest{VolumeGuestPath: mp, Size: 48 << 20})
	if err != nil && strings.Contains(err.Error(), "Permission denied to resize") {
		t.Skipf("on-line ext4 resizing refused (EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE, which this host withholds): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if after := size(); after < before*2 {
		t.Errorf("size %d -> %d after resize", before, after)
	}
	_, err = a.ResizeVolume(context.Background(), &agentpb.ResizeVolumeRequest{VolumeGuestPath: filepath.Join(cfg.RunDir, "none")})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unmounted path: %v, want NotFound", err)
	}
}

// TestRootfsFromStorage creates a container whose rootfs exists only once its
// storage is mounted, as a Kata host sends a blk or virtio-fs rootfs.
func TestRootfsFromStorage(t *testing.T) {
	h := newStorageHarness(t)
	id := newID()
	mp := filepath.Join(h.run, id, "rootfs")
	// Storage sources must lie below the agent's run directory.
	src := filepath.Join(h.run, "shared", id)
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := hostCombined("cp", "-a", h.rootfs, src); err != nil {
		t.Fatalf("copy rootfs: %v: %s", err, out)
	}
	s := h.spec(id, "sh", "-c", "echo from-storage")
	s.Root.Path = mp
	req := &agentpb.CreateContainerRequest{ContainerId: id, OCI: s, Storages: []*agentpb.Storage{
		{Driver: "bind", Source: src, Fstype: "bind", MountPoint: mp, Options: []string{"bind"}},
	}}
	if _, err := h.c.CreateContainer(ctx(t), req); err != nil {
		t.Fatalf("create with the rootfs on a storage: %v", err)
	}
	if _, err := h.c.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if out := h.readAll(h.c, id, "", false); !strings.Contains(out, "from-storage") {
		t.Errorf("container output %q, want from-storage", out)
	}
	h.wait(id, "")
	h.remove(id)
	var st, parent unix.Stat_t
	if err := unix.Stat(mp, &st); err == nil && unix.Stat(filepath.Dir(mp), &parent) == nil && st.Dev != parent.Dev {
		t.Error("rootfs storage still mounted after the container was removed")
	}
}
