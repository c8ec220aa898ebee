package client

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kguest/kguest/protocols/agentpb"
)

func TestDefaultSpec(t *testing.T) {
	s := DefaultSpec("c1", "/run/kata-containers/c1/rootfs", []string{"sh", "-c", "echo hi"})
	if s.Root.GetPath() != "/run/kata-containers/c1/rootfs" || s.Root.Readonly {
		t.Errorf("Root = %v", s.Root)
	}
	if !slices.Equal(s.Process.Args, []string{"sh", "-c", "echo hi"}) || s.Process.Cwd != "/" || s.Process.Terminal {
		t.Errorf("Process = %v", s.Process)
	}
	if !slices.Contains(s.Process.Env, DefaultPath) {
		t.Errorf("Env lacks PATH: %v", s.Process.Env)
	}
	var ns []string
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, n.Type)
	}
	for _, want := range []string{"pid", "ipc", "uts", "mount", "network"} {
		if !slices.Contains(ns, want) {
			t.Errorf("namespaces %v lack %s", ns, want)
		}
	}
	mounts := map[string]*agentpb.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	for dest, typ := range map[string]string{"/proc": "proc", "/dev": "tmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs", "/dev/mqueue": "mqueue", "/sys": "sysfs", "/sys/fs/cgroup": "cgroup"} {
		m := mounts[dest]
		if m == nil || m.Type != typ {
			t.Errorf("mount %s = %v, want type %s", dest, m, typ)
		}
	}
	if !slices.Contains(mounts["/sys"].Options, "ro") || !slices.Contains(mounts["/sys/fs/cgroup"].Options, "ro") {
		t.Error("/sys and cgroup must be read-only")
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Error("masked or read-only paths missing")
	}
	for _, set := range [][]string{s.Process.Capabilities.Bounding, s.Process.Capabilities.Effective, s.Process.Capabilities.Permitted} {
		if !slices.Equal(set, DefaultCapabilities) {
			t.Errorf("capability set %v", set)
		}
	}
	if slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		t.Error("default set must not include CAP_SYS_ADMIN")
	}
	if s.Linux.Resources.Memory != nil {
		t.Error("no memory limit by default")
	}
	SetMemoryLimit(s, 32<<20)
	if s.Linux.Resources.Memory.Limit != 32<<20 {
		t.Errorf("memory limit = %d", s.Linux.Resources.Memory.Limit)
	}
	// Specs are independent: changing one leaves the next untouched.
	s.Process.Capabilities.Bounding[0] = "CAP_SYS_ADMIN"
	if DefaultCapabilities[0] == "CAP_SYS_ADMIN" {
		t.Fatal("DefaultSpec shares the DefaultCapabilities slice")
	}
	if _, err := proto.Marshal(s); err != nil {
		t.Fatal(err)
	}
	if tty := DefaultProcess([]string{"sh"}, true); !tty.Terminal || !slices.Contains(tty.Env, "TERM=xterm") {
		t.Errorf("tty process = %v", tty)
	}
}
