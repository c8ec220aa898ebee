package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts file systems")
	}
}

// newManager returns a manager rooted in a temp dir, checking at the end
// that nothing is left mounted below it.
func newManager(t *testing.T) *Manager {
	t.Helper()
	root := t.TempDir()
	m := NewManager(root, nil)
	t.Cleanup(func() {
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		for _, l := range strings.Split(string(mounts), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && strings.HasPrefix(f[4], root) {
				t.Errorf("left mounted: %s", f[4])
				_ = unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
	})
	return m
}

func fsType(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Type)
}

func isMountPoint(t *testing.T, p string) bool {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

func TestEphemeralRefcount(t *testing.T) {
	needRoot(t)
	m := newManager(t)
	mp := filepath.Join(m.Root, "sandbox/ephemeral/vol")
	eph := Storage{Driver: DriverEphemeral, Source: "tmpfs", Fstype: "tmpfs", MountPoint: mp, Options: []string{"size=1m", "nodev"}}
	ctx := context.Background()
	if _, err := m.Add(ctx, "c1", []Storage{eph}); err != nil {
		t.Fatal(err)
	}
	if fsType(t, mp) != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs", mp)
	}
	if _, err := m.Add(ctx, "c2", []Storage{eph}); err != nil {
		t.Fatal(err)
	}
	if got := m.Refs(mp); got != 2 {
		t.Fatalf("refs = %d, want 2", got)
	}
	if err := m.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if !isMountPoint(t, mp) {
		t.Fatal("unmounted while c2 still uses it")
	}
	if err := m.UpdateEphemeral([]Storage{{Driver: DriverEphemeral, MountPoint: mp, Options: []string{"size=2m"}}}); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil || st.Blocks*uint64(st.Bsize) != 2<<20 {
		t.Errorf("after resize: %d blocks of %d (%v)", st.Blocks, st.Bsize, err)
	}
	if err := m.Release("c2"); err != nil {
		t.Fatal(err)
	}
	if isMountPoint(t, mp) {
		t.Fatal("still mounted after the last user went")
	}
	if got := m.Refs(mp); got != 0 {
		t.Fatalf("refs = %d after release", got)
	}
}

func TestLocalBindOverlay(t *testing.T) {
	needRoot(t)
	m := newManager(t)
	ctx := context.Background()
	local := filepath.Join(m.Root, "sandbox/local/l1")
	lower := filepath.Join(m.Root, "layers/lower")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(m.Root, "c1/rootfs")
	bound := filepath.Join(m.Root, "c1/bound")
	rb, err := m.Add(ctx, "c1", []Storage{
		{Driver: DriverLocal, MountPoint: local, Options: []string{"mode=1777"}},
		{Driver: DriverOverlayFS, Source: "overlay", MountPoint: merged, Options: []string{
			"lowerdir=" + lower, "upperdir=" + filepath.Join(m.Root, "layers/upper"), "workdir=" + filepath.Join(m.Root, "layers/work")}},
		{Driver: DriverBind, Source: lower, MountPoint: bound, Options: []string{"ro"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(local)
	if err != nil || st.Mode().Perm() != 0o777 || st.Mode()&os.ModeSticky == 0 {
		t.Errorf("local dir mode %v (%v)", st.Mode(), err)
	}
	if b, err := os.ReadFile(filepath.Join(merged, "f")); err != nil || string(b) != "lower" {
		t.Errorf("overlay read: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(merged, "new"), nil, 0o644); err != nil {
		t.Errorf("overlay write: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.Root, "layers/upper/new")); err != nil {
		t.Errorf("write did not land in upperdir: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(bound, "f")); err != nil || string(b) != "lower" {
		t.Errorf("bind read: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(bound, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to ro bind: %v, want EROFS", err)
	}
	rb()
	for _, p := range []string{merged, bound} {
		if isMountPoint(t, p) {
			t.Errorf("%s still mounted after rollback", p)
		}
	}
	if _, err := os.Stat(local); !os.IsNotExist(err) {
		t.Errorf("local dir left behind: %v", err)
	}
}

func TestFailedAddRollsBack(t *testing.T) {
	needRoot(t)
	m := newManager(t)
	ok := filepath.Join(m.Root, "sandbox/ephemeral/a")
	_, err := m.Add(context.Background(), "c1", []Storage{
		{Driver: DriverEphemeral, MountPoint: ok},
		{Driver: "nosuchdriver", MountPoint: filepath.Join(m.Root, "b")},
	})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if isMountPoint(t, ok) {
		t.Fatal("first storage still mounted after the call failed")
	}
	if m.Refs(ok) != 0 {
		t.Fatal("reference kept")
	}
}

func TestConfinement(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "in/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{
		"abs-escape": outside,
		"rel-escape": "../../../../../../../../" + outside,
		"inside":     "in/sub",
	} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		path string
		want string // "" = rejected
	}{
		{root + "/in/sub/x", root + "/in/sub/x"},
		{root + "/new/dir", root + "/new/dir"},
		{root + "/inside/x", root + "/in/sub/x"},
		{root + "/in/../in/sub", root + "/in/sub"},
		{root + "/in/../../etc", ""},
		{root + "/../../etc/passwd", ""},
		{"/etc/passwd", ""},
		{"relative/path", ""},
		{root + "/abs-escape/x", ""},
		{root + "/rel-escape", ""},
	}
	for _, tt := range tests {
		got, err := Confine(root, tt.path)
		if tt.want == "" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Confine(%q) = %q, %v; want ErrInvalid", tt.path, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Confine(%q) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}
}

func TestEscapingMountPointRejected(t *testing.T) {
	needRoot(t)
	m := newManager(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(m.Root, "link")); err != nil {
		t.Fatal(err)
	}
	for _, mp := range []string{filepath.Join(m.Root, "link/x"), m.Root + "/../x"} {
		_, err := m.Add(context.Background(), "", []Storage{{Driver: DriverEphemeral, MountPoint: mp}})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("mount point %s: err = %v, want ErrInvalid", mp, err)
		}
	}
	_, err := m.Add(context.Background(), "", []Storage{{Driver: DriverBind, Source: "/etc", MountPoint: m.Root + "/b"}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("bind of /etc: err = %v, want ErrInvalid", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("something was created outside the root: %v", ents)
	}
}

func TestParseMountOptions(t *testing.T) {
	flags, prop, data := ParseMountOptions([]string{"ro,nosuid", "size=10m", "rw", "noexec", "rshared", "mode=755"})
	if flags != unix.MS_NOSUID|unix.MS_NOEXEC {
		t.Errorf("flags = %#x", flags)
	}
	if prop != unix.MS_SHARED|unix.MS_REC {
		t.Errorf("propagation = %#x", prop)
	}
	if data != "size=10m,mode=755" {
		t.Errorf("data = %q", data)
	}
}

func TestDrivers(t *testing.T) {
	d := strings.Join(Drivers(), ",")
	for _, want := range []string{"blk", "mmioblk", "scsi", "nvdimm", "9p", "virtio-fs", "ephemeral", "local", "overlayfs", "bind"} {
		if !strings.Contains(","+d+",", ","+want+",") {
			t.Errorf("driver %q missing from %s", want, d)
		}
	}
}
