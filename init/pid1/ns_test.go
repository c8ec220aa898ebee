package pid1

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kguest/kguest/init/cmdline"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The tests below re-run the test binary as PID 1 of new pid, mount and
// network namespaces, where the helper named by this variable does the
// privileged work against a scratch root. The namespaces (and every mount
// in them) vanish when the helper exits.
const helperEnv = "KGUEST_PID1_HELPER"

func runHelper(t *testing.T, name string, env ...string) (string, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts in new mount and pid namespaces")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelper$", "-test.v")
	cmd.Env = append(os.Environ(), append(env, helperEnv+"="+name)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNET,
		// Go makes / recursively private in the child before anything
		// else runs, so nothing mounted there leaks out.
		Unshareflags: syscall.CLONE_NEWNS,
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func TestSetupInNamespaceV1(t *testing.T) {
	root := t.TempDir()
	out, err := runHelper(t, "setup", "ROOT="+root)
	if err != nil || !strings.Contains(out, "HELPER OK") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	assertNothingLeft(t, root)
}

func TestSetupInNamespaceV2(t *testing.T) {
	root := t.TempDir()
	out, err := runHelper(t, "setup", "ROOT="+root, "CGROUP2=1")
	if err != nil || !strings.Contains(out, "HELPER OK") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	assertNothingLeft(t, root)
}

func TestPoweroffInNamespace(t *testing.T) {
	console := filepath.Join(t.TempDir(), "console")
	if err := os.WriteFile(console, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runHelper(t, "poweroff", "CONSOLE="+console)
	// reboot(POWER_OFF) by a pid namespace's init ends the namespace as if
	// its init had been killed by SIGINT.
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper did not die: %v\n%s", err, out)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Fatalf("helper ended with %v, want killed by SIGINT (power off)\n%s", ws, out)
	}
	if strings.Contains(out, "RETURNED") {
		t.Fatal("Poweroff returned")
	}
	b, _ := os.ReadFile(console)
	if !strings.Contains(string(b), "powering off: disk on fire") {
		t.Fatalf("console = %q, want the reason", b)
	}
}

func TestSignalsInNamespace(t *testing.T) {
	out, err := runHelper(t, "signals")
	if err != nil || !strings.Contains(out, "HELPER OK") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

func assertNothingLeft(t *testing.T, root string) {
	t.Helper()
	tab, err := ReadMountTable()
	if err != nil {
		t.Fatal(err)
	}
	for p := range tab {
		if strings.HasPrefix(p, root) {
			t.Errorf("mount left behind: %s", p)
		}
	}
}

// TestHelper is the body of the re-executed test binary.
func TestHelper(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		t.Skip("runs only as the namespace helper of the tests above")
	case "setup":
		helperSetup(t)
	case "poweroff":
		ConsolePath = os.Getenv("CONSOLE")
		Poweroff("disk on fire")
		fmt.Println("RETURNED")
	case "signals":
		helperSignals(t)
	}
}

func helperSetup(t *testing.T) {
	if !IsPID1() {
		t.Fatalf("helper is pid %d, want 1", os.Getpid())
	}
	root := os.Getenv("ROOT")
	cfg := cmdline.Default()
	cfg.UnifiedCgroupHierarchy = os.Getenv("CGROUP2") == "1"
	oldPath := os.Getenv("PATH")
	defer os.Setenv("PATH", oldPath)

	in := &Init{Root: root, Loopback: true}
	if err := in.Setup(cfg); err != nil {
		// A v1 controller the host has bound with other options may
		// refuse; everything else must work.
		if !cfg.UnifiedCgroupHierarchy && strings.Contains(err.Error(), "type cgroup") && !strings.Contains(err.Error(), "tmpfs") {
			t.Logf("some cgroup v1 controllers: %v", err)
		} else {
			t.Fatalf("Setup: %v", err)
		}
	}
	tab, err := ReadMountTable()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/dev/pts": "devpts",
		"/dev/shm": "tmpfs", "/run": "tmpfs",
	}
	if cfg.UnifiedCgroupHierarchy {
		want[CgroupRoot] = "cgroup2"
	} else {
		want[CgroupRoot] = "tmpfs"
		want[CgroupRoot+"/memory"] = "cgroup"
		want[CgroupRoot+"/pids"] = "cgroup"
	}
	for p, fstype := range want {
		m, ok := tab[filepath.Join(root, p)]
		if !ok {
			t.Errorf("%s not mounted", p)
			continue
		}
		if m.FSType != fstype {
			t.Errorf("%s is %s, want %s", p, m.FSType, fstype)
		}
	}
	if m := tab[filepath.Join(root, "/dev/pts")]; m != nil && !strings.Contains(m.VFSOptions, "ptmxmode=666") {
		t.Errorf("devpts options %q", m.VFSOptions)
	}
	if got, _ := os.Readlink(filepath.Join(root, "dev/ptmx")); got != "pts/ptmx" {
		t.Errorf("/dev/ptmx -> %q", got)
	}
	if got, _ := os.Readlink(filepath.Join(root, "dev/fd")); got != "/proc/self/fd" {
		t.Errorf("/dev/fd -> %q", got)
	}
	// The new devpts instance works through the link.
	ptmx, err := os.OpenFile(filepath.Join(root, "dev/ptmx"), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Errorf("open ptmx: %v", err)
	} else {
		n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
		if err != nil {
			t.Errorf("TIOCGPTN: %v", err)
		} else if _, err := os.Stat(filepath.Join(root, "dev/pts", fmt.Sprint(n))); err != nil {
			t.Errorf("pty %d not in our devpts: %v", n, err)
		}
		ptmx.Close()
	}
	if cfg.UnifiedCgroupHierarchy {
		ctl, _ := os.ReadFile(filepath.Join(root, CgroupRoot, "cgroup.controllers"))
		sub, _ := os.ReadFile(filepath.Join(root, CgroupRoot, "cgroup.subtree_control"))
		if strings.Join(strings.Fields(string(ctl)), " ") != strings.Join(strings.Fields(string(sub)), " ") {
			t.Errorf("subtree_control %q, want every controller of %q", sub, ctl)
		}
	} else {
		b, _ := os.ReadFile("/proc/cgroups")
		ctrls, _ := ParseProcCgroups(bytes.NewReader(b))
		_, links := CgroupV1Mounts(ctrls)
		for _, l := range links {
			if _, err := os.Stat(filepath.Join(root, l.Path)); err != nil {
				t.Errorf("cgroup link %s: %v", l.Path, err)
			}
		}
	}
	if os.Getenv("PATH") != DefaultPath {
		t.Errorf("PATH = %q", os.Getenv("PATH"))
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil || lo.Attrs().OperState == netlink.OperDown || lo.Attrs().Flags&(1<<0) == 0 {
		t.Errorf("lo not up: %v %+v", err, lo)
	}

	// A second run finds everything in place and mounts nothing more.
	if err := in.Setup(cfg); err != nil && cfg.UnifiedCgroupHierarchy {
		t.Errorf("second Setup: %v", err)
	}
	tab2, _ := ReadMountTable()
	if len(tab2) != len(tab) {
		t.Errorf("second Setup changed the mount table: %d -> %d mounts", len(tab), len(tab2))
	}
	if !t.Failed() {
		fmt.Println("HELPER OK")
	}
}

func helperSignals(t *testing.T) {
	SetupSignals()
	for _, s := range []syscall.Signal{unix.SIGINT, unix.SIGQUIT, unix.SIGHUP, unix.SIGTERM, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGPIPE} {
		if err := unix.Kill(os.Getpid(), s); err != nil {
			t.Fatal(err)
		}
	}
	// Children get default dispositions back: a child killed by SIGINT
	// dies of it.
	cmd := exec.Command("sh", "-c", "kill -INT $$; sleep 5")
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Errorf("child survived SIGINT: %v", err)
	}
	if !t.Failed() {
		fmt.Println("HELPER OK")
	}
}
