// Package testutil builds busybox root filesystems and runc-like specs for
// container tests.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"github.com/kguest/kguest/init/reaper"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Busybox is the static busybox from Debian's busybox-static.
const Busybox = "/bin/busybox"

// Require skips the test unless it runs as root with a static busybox.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: containers need namespaces, cgroups and mounts")
	}
	if _, serr := os.Stat(Busybox); serr != nil {
		t.Skipf("needs %s (Debian busybox-static): %v", Busybox, serr)
	}
}

// Rootfs lays out a busybox root filesystem in a new temporary directory.
func Rootfs(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := MakeRootfs(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// MakeRootfs lays out a busybox root filesystem in dir.
func MakeRootfs(dir string) error {
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	b, err := os.ReadFile(Busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		return err
	}
	// busybox --install -s links to the host path of busybox; relative
	// links work inside the container.
	// The process may have a reaper: children must go through it.
	r, err := reaper.Start(nil)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd := exec.Command(Busybox, "--list")
	cmd.Stdout = &out
	if code, err := r.Run(context.Background(), cmd); err != nil || code != 0 {
		return fmt.Errorf("busybox --list: exit %d: %v", code, err)
	}
	for _, name := range strings.Fields(out.String()) {
		if name == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", name)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
}

// Spec is runc's example spec (namespaces, masked paths, capabilities,
// /proc, /dev, /dev/pts, /dev/shm, /sys) for rootfs running args, without a
// terminal and with a cgroup of its own.
func Spec(rootfs, id string, args ...string) *specs.Spec {
	s := specconv.Example()
	s.Root = &specs.Root{Path: rootfs}
	s.Process.Terminal = false
	s.Process.Args = args
	s.Hostname = "test"
	s.Linux.CgroupsPath = CgroupParent + "/" + id
	return s
}

// CgroupParent holds the cgroups of test containers.
var CgroupParent = fmt.Sprintf("/kguest-test-%d", os.Getpid())

// RemoveCgroupParent removes CgroupParent from every hierarchy; call it once
// all test containers are gone.
func RemoveCgroupParent() {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + CgroupParent)
	if d := "/sys/fs/cgroup" + CgroupParent; isDir(d) {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		_ = os.Remove(d)
	}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
