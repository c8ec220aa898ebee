package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watchSetup returns a manager whose watcher does not poll on its own
// (tests call SyncAll), and the directory a host would share.
func watchSetup(t *testing.T) (*Manager, *Watcher, string) {
	t.Helper()
	needRoot(t)
	m := newManager(t)
	w := m.Handlers[DriverWatchable].(*Watcher)
	w.Interval = time.Hour
	shared := filepath.Join(m.Root, "shared", "containers")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	return m, w, shared
}

func watchable(src, mp string) []Storage {
	return []Storage{{Driver: DriverWatchable, Source: src, MountPoint: mp, Fstype: "bind", Options: []string{"bind"}}}
}

func write(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// configMap lays out a config map version the way the kubelet does: the
// files in a timestamped directory, ..data pointing at it, and each key a
// symlink through ..data. A new version is swapped in by renaming a
// symlink over ..data.
func configMap(t *testing.T, dir, version string, keys map[string]string) {
	t.Helper()
	for k, v := range keys {
		write(t, filepath.Join(dir, version, k), v)
		if _, err := os.Lstat(filepath.Join(dir, k)); err != nil {
			if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWatchableConfigMapUpdate mirrors a config map into the tmpfs and
// follows a kubelet-style update: the reader sees the new content, and an
// inotify watch on the mount point sees ..data replaced.
func TestWatchableConfigMapUpdate(t *testing.T) {
	m, w, shared := watchSetup(t)
	src := filepath.Join(shared, "c1-cm")
	configMap(t, src, "..2026_12_01", map[string]string{"app.conf": "level=info\n", "extra": "x"})
	mp := filepath.Join(shared, "watchable", "c1-cm")
	if _, err := m.Add(context.Background(), "c1", watchable(src, mp)); err != nil {
		t.Fatal(err)
	}
	if fsType(t, w.Root) != unix.TMPFS_MAGIC || isMountPoint(t, mp) {
		t.Fatalf("want a mirror in a tmpfs at %s", w.Root)
	}
	if got := read(t, filepath.Join(mp, "app.conf")); got != "level=info\n" {
		t.Fatalf("mirrored app.conf = %q", got)
	}

	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, mp, unix.IN_MOVED_TO|unix.IN_CREATE|unix.IN_DELETE); err != nil {
		t.Fatal(err)
	}

	configMap(t, src, "..2026_12_02", map[string]string{"app.conf": "level=debug\n", "extra": "x"})
	w.SyncAll()
	if got := read(t, filepath.Join(mp, "app.conf")); got != "level=debug\n" {
		t.Errorf("after the update app.conf = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(mp, "..2026_12_01")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old version still mirrored: %v", err)
	}
	events := inotifyNames(t, fd)
	if !strings.Contains(events, "..data:moved_to") {
		t.Errorf("inotify events %q lack ..data replaced by rename", events)
	}

	if err := os.Remove(filepath.Join(src, "extra")); err != nil {
		t.Fatal(err)
	}
	w.SyncAll()
	if _, err := os.Lstat(filepath.Join(mp, "extra")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed key still mirrored: %v", err)
	}

	if err := m.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mirror left after release: %v", err)
	}
	if isMountPoint(t, w.Root) {
		t.Errorf("tmpfs left mounted at %s with no watchable storage", w.Root)
	}
}

func inotifyNames(t *testing.T, fd int) string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatalf("no inotify event: %v", err)
	}
	var out []string
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafePointer(buf[off:]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
		kind := fmt.Sprintf("%#x", ev.Mask)
		switch {
		case ev.Mask&unix.IN_MOVED_TO != 0:
			kind = "moved_to"
		case ev.Mask&unix.IN_CREATE != 0:
			kind = "create"
		case ev.Mask&unix.IN_DELETE != 0:
			kind = "delete"
		}
		out = append(out, name+":"+kind)
		off += unix.SizeofInotifyEvent + int(ev.Len)
	}
	return strings.Join(out, " ")
}

// TestWatchableFile mirrors a single file.
func TestWatchableFile(t *testing.T) {
	m, w, shared := watchSetup(t)
	src := filepath.Join(shared, "c1-token")
	write(t, src, "a")
	mp := filepath.Join(shared, "watchable", "c1-token")
	if _, err := m.Add(context.Background(), "c1", watchable(src, mp)); err != nil {
		t.Fatal(err)
	}
	write(t, src, "bb")
	w.SyncAll()
	if got := read(t, mp); got != "bb" {
		t.Errorf("mirrored file = %q, want bb", got)
	}
	if err := m.Release("c1"); err != nil {
		t.Fatal(err)
	}
}

// TestWatchableOverLimits checks the bind-mount fallback, from the start
// and when a mirrored source grows, and that releasing it leaves the
// source alone.
func TestWatchableOverLimits(t *testing.T) {
	m, w, shared := watchSetup(t)
	big := filepath.Join(shared, "big")
	for i := 0; i < WatchMaxEntries; i++ { // with the directory: one too many
		write(t, filepath.Join(big, fmt.Sprintf("f%02d", i)), "x")
	}
	growing := filepath.Join(shared, "growing")
	write(t, filepath.Join(growing, "small"), "x")

	bigMP, growMP := filepath.Join(shared, "watchable", "big"), filepath.Join(shared, "watchable", "growing")
	if _, err := m.Add(context.Background(), "c1", append(watchable(big, bigMP), watchable(growing, growMP)...)); err != nil {
		t.Fatal(err)
	}
	if !isMountPoint(t, bigMP) {
		t.Errorf("%d entries: want a bind mount", WatchMaxEntries+1)
	}
	if isMountPoint(t, growMP) {
		t.Errorf("2 entries: want a mirror")
	}
	write(t, filepath.Join(growing, "large"), strings.Repeat("x", WatchMaxBytes))
	w.SyncAll()
	if !isMountPoint(t, growMP) || read(t, filepath.Join(growMP, "small")) != "x" {
		t.Errorf("a source grown over %d bytes: want it bind-mounted", WatchMaxBytes)
	}
	if err := m.Release("c1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(big, "f00"), filepath.Join(growing, "small"), filepath.Join(growing, "large")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("source file gone after release: %v", err)
		}
	}
}

// TestWatchablePolls lets the watcher's own loop pick up a change.
func TestWatchablePolls(t *testing.T) {
	m, w, shared := watchSetup(t)
	w.Interval = 20 * time.Millisecond
	src := filepath.Join(shared, "polled")
	write(t, filepath.Join(src, "k"), "1")
	mp := filepath.Join(shared, "watchable", "polled")
	if _, err := m.Add(context.Background(), "c1", watchable(src, mp)); err != nil {
		t.Fatal(err)
	}
	defer m.Release("c1")
	write(t, filepath.Join(src, "k"), "2")
	deadline := time.Now().Add(10 * time.Second)
	for read(t, filepath.Join(mp, "k")) != "2" {
		if time.Now().After(deadline) {
			t.Fatal("the watcher never copied the change")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestScanSourceLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   int
		size    int
		tooBig  bool
		entries int
	}{
		{"empty", 0, 0, false, 1},
		{"15 files and the directory", WatchMaxEntries - 1, 1, false, WatchMaxEntries},
		{"16 files and the directory", WatchMaxEntries, 1, true, 0},
		{"1 MiB", 2, WatchMaxBytes / 2, false, 3},
		{"over 1 MiB", 2, WatchMaxBytes/2 + 1, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for i := 0; i < tc.files; i++ {
				write(t, filepath.Join(dir, fmt.Sprint(i)), strings.Repeat("x", tc.size))
			}
			cur, _, err := scanSource(dir)
			if tc.tooBig {
				if !errors.Is(err, errTooBig) {
					t.Errorf("err %v, want errTooBig", err)
				}
				return
			}
			if err != nil || len(cur) != tc.entries {
				t.Errorf("%d entries, err %v; want %d", len(cur), err, tc.entries)
			}
		})
	}
}

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
