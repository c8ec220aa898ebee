package pid1

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Mount is one file system the init mounts.
type Mount struct {
	Source string
	Target string // absolute, relative to the root
	FSType string
	Flags  uintptr
	Data   string
	Mode   os.FileMode // of the mount point when it must be created
}

func (m Mount) String() string {
	return fmt.Sprintf("%s on %s type %s (%s)", m.Source, m.Target, m.FSType, m.Data)
}

const (
	nosuid = unix.MS_NOSUID
	nodev  = unix.MS_NODEV
	noexec = unix.MS_NOEXEC
)

// BaseMounts are the early file systems, in mount order (cgroups come after
// them, see CgroupMounts).
func BaseMounts() []Mount {
	return []Mount{
		{Source: "proc", Target: "/proc", FSType: "proc", Flags: nosuid | nodev | noexec, Mode: 0o555},
		{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: nosuid | nodev | noexec, Mode: 0o555},
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: nosuid, Data: "mode=0755", Mode: 0o755},
		{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: nosuid | noexec, Data: "newinstance,ptmxmode=0666,mode=0620", Mode: 0o755},
		{Source: "shm", Target: "/dev/shm", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=1777", Mode: 0o1777},
		{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=0755", Mode: 0o755},
	}
}

// MountTable is the set of mount points already mounted, keyed by absolute
// path.
type MountTable map[string]*mountinfo.Info

// ParseMountTable reads a /proc/self/mountinfo stream.
func ParseMountTable(r io.Reader) (MountTable, error) {
	infos, err := mountinfo.GetMountsFromReader(r, nil)
	if err != nil {
		return nil, err
	}
	t := MountTable{}
	for _, i := range infos {
		t[i.Mountpoint] = i // the last (topmost) mount wins
	}
	return t, nil
}

// ReadMountTable reads /proc/self/mountinfo. Before /proc is mounted there is
// nothing to read, which means nothing else is mounted either: an empty table.
func ReadMountTable() (MountTable, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if os.IsNotExist(err) {
		return MountTable{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountTable(f)
}

// Mounted reports whether path is a mount point.
func (t MountTable) Mounted(path string) bool {
	_, ok := t[filepath.Clean(path)]
	return ok
}

// Plan returns the mounts of ms (targets relative to root) that are not
// mounted yet, so that a system already set up (systemd, a second run) is
// left alone.
func Plan(root string, ms []Mount, t MountTable) (todo, skipped []Mount) {
	for _, m := range ms {
		if t.Mounted(filepath.Join(root, m.Target)) {
			skipped = append(skipped, m)
			continue
		}
		todo = append(todo, m)
	}
	return todo, skipped
}

// doMount creates the mount point and mounts m below root.
func doMount(root string, m Mount) error {
	target := filepath.Join(root, m.Target)
	if err := os.MkdirAll(target, m.Mode|0o700); err != nil {
		return fmt.Errorf("mount %s: %w", m, err)
	}
	if err := unix.Mount(m.Source, target, m.FSType, m.Flags, m.Data); err != nil {
		return fmt.Errorf("mount %s at %s: %w", m, target, err)
	}
	return nil
}

// Symlink is a link the init creates if nothing is at Path yet.
type Symlink struct {
	Path, Target string
	// Replace a node that is not a symlink (/dev/ptmx from devtmpfs).
	Replace bool
}

// DevSymlinks are the /dev links a fresh devtmpfs lacks.
func DevSymlinks() []Symlink {
	return []Symlink{
		{Path: "/dev/fd", Target: "/proc/self/fd"},
		{Path: "/dev/stdin", Target: "/proc/self/fd/0"},
		{Path: "/dev/stdout", Target: "/proc/self/fd/1"},
		{Path: "/dev/stderr", Target: "/proc/self/fd/2"},
		{Path: "/dev/core", Target: "/proc/kcore"},
		// The new devpts instance's ptmx; the devtmpfs node would still
		// work (the kernel looks up pts/ next to it) but the link makes it
		// explicit, as containers do.
		{Path: "/dev/ptmx", Target: "pts/ptmx", Replace: true},
	}
}

func makeSymlink(root string, s Symlink) error {
	path := filepath.Join(root, s.Path)
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode()&os.ModeSymlink != 0:
		return nil // keep whatever link is there
	case err == nil && !s.Replace:
		return nil
	case err == nil:
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("replace %s: %w", path, err)
		}
	case !os.IsNotExist(err):
		return err
	}
	if err := os.Symlink(s.Target, path); err != nil {
		return fmt.Errorf("symlink %s -> %s: %w", path, s.Target, err)
	}
	return nil
}

// mountSummary names mounts for logs.
func mountSummary(ms []Mount) string {
	var b strings.Builder
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(m.Target)
	}
	return b.String()
}
