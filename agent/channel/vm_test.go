package channel

// An end-to-end check of the virtio-serial channel in a real guest kernel:
// the test binary itself, built static, is the initramfs's /init. As PID 1 it
// does the init's set-up, picks the channel automatically (vsock loopback is
// loaded but there is no host transport, so virtio-serial must win) and
// serves a line protocol on yamux streams. The host side dials QEMU's chardev
// socket, hangs up and reconnects, and finally powers the guest off.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/kguest/kguest/init/cmdline"
	"github.com/kguest/kguest/init/logging"
	"github.com/kguest/kguest/init/pid1"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

const guestEnv = "KGUEST_CHANNEL_GUEST"

// Modules the guest loads when its kernel has them as modules, in order.
var guestModules = []string{
	"virtio_ring.ko", "virtio.ko", "virtio_pci_modern_dev.ko", "virtio_pci_legacy_dev.ko", "virtio_pci.ko",
	"virtio_console.ko", "vsock.ko", "vmw_vsock_virtio_transport_common.ko", "vsock_loopback.ko",
}

// testKernel finds a kernel (and its module tree, if modular) for the VM test.
func testKernel() (kernel, modules string) {
	if k := os.Getenv("KGUEST_TEST_KERNEL"); k != "" {
		return k, os.Getenv("KGUEST_TEST_MODULES")
	}
	base := "/var/cache/kguest/debian-kernel/x"
	ks, _ := filepath.Glob(filepath.Join(base, "boot/vmlinuz-*"))
	if len(ks) == 0 {
		return "", ""
	}
	ver := strings.TrimPrefix(filepath.Base(ks[0]), "vmlinuz-")
	return ks[0], filepath.Join(base, "lib/modules", ver)
}

func TestVirtioSerialInVM(t *testing.T) {
	// Two boots: cgroup v1 (the default) and v2.
	for _, v := range []struct{ name, cmdline, cgroup string }{
		{"cgroup-v1", "", "cgroup=v1"},
		{"cgroup-v2", "agent.unified_cgroup_hierarchy=1", "cgroup=v2"},
	} {
		t.Run(v.name, func(t *testing.T) { testVirtioSerialInVM(t, v.cmdline, v.cgroup) })
	}
}

func testVirtioSerialInVM(t *testing.T, extraCmdline, wantCgroup string) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: mknod for the initramfs console")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil || runtime.GOARCH != "amd64" {
		t.Skip("needs qemu-system-x86_64 on amd64")
	}
	kernel, modDir := testKernel()
	if kernel == "" {
		t.Skip("needs a guest kernel: set KGUEST_TEST_KERNEL (and KGUEST_TEST_MODULES for a modular one)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	os.MkdirAll(filepath.Join(root, "modules"), 0o755)
	if err := unix.Mknod(filepath.Join(root, "dev/console"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 1))); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin/go"), "test", "-c", "-o", filepath.Join(root, "init"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build guest init: %v\n%s", err, out)
	}
	if modDir != "" {
		for _, m := range guestModules {
			found, _ := filepath.Glob(filepath.Join(modDir, "kernel/*/*", m))
			more, _ := filepath.Glob(filepath.Join(modDir, "kernel/*/*/*", m))
			found = append(found, more...)
			if len(found) == 0 {
				continue
			}
			b, err := os.ReadFile(found[0])
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(root, "modules", m), b, 0o644)
		}
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	pack := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+initrd)
	pack.Dir = root
	if out, err := pack.CombinedOutput(); err != nil {
		t.Skipf("needs cpio: %v %s", err, out)
	}

	sock := filepath.Join(dir, "agent.sock")
	consoleLog := filepath.Join(dir, "console.log")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	vm := exec.CommandContext(ctx, qemu,
		"-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-reboot", "-display", "none",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 agent.log=debug "+extraCmdline+" "+guestEnv+"=1 -- -test.run=^TestGuestInit$ -test.v",
		"-serial", "file:"+consoleLog,
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=agent,path="+sock+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+DefaultSerialName,
	)
	vmOut, _ := os.Create(filepath.Join(dir, "qemu.log"))
	vm.Stdout, vm.Stderr = vmOut, vmOut
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	vmDone := make(chan error, 1)
	go func() { vmDone <- vm.Wait() }()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(consoleLog)
			q, _ := os.ReadFile(filepath.Join(dir, "qemu.log"))
			t.Logf("guest console:\n%s\nqemu:\n%s", b, q)
		}
	}()

	connect := func() (*yamux.Session, net.Conn) {
		t.Helper()
		var c net.Conn
		for {
			c, err = net.Dial("unix", sock)
			if err == nil {
				break
			}
			select {
			case err := <-vmDone:
				t.Fatalf("qemu exited: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		// Frames the guest's previous session sent after the last host
		// left arrive first; nothing else comes unasked, so drop what
		// arrives before the client speaks.
		buf := make([]byte, 4096)
		for {
			c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		c.SetReadDeadline(time.Time{})
		s, err := yamux.Client(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s, c
	}
	call := func(s *yamux.Session, req string, timeout time.Duration) string {
		t.Helper()
		st, err := s.Open()
		if err != nil {
			t.Fatalf("open stream for %q: %v", req, err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(timeout))
		fmt.Fprintln(st, req)
		line, err := bufio.NewReader(st).ReadString('\n')
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		return strings.TrimSpace(line)
	}

	start := time.Now()
	s, c := connect()
	if got := call(s, "echo first", 2*time.Minute); got != "first" {
		t.Fatalf("echo = %q", got)
	}
	t.Logf("guest answered %v after QEMU start", time.Since(start).Round(time.Millisecond))
	status := call(s, "status", 30*time.Second)
	t.Logf("guest status: %s", status)
	for _, want := range []string{"pid1=true", "channel=serial", "setup=ok", "vsock-loopback=ok", "log-port=ok", wantCgroup} {
		if !strings.Contains(status, want) {
			t.Errorf("status %q lacks %q", status, want)
		}
	}
	// The host hangs up (closing the chardev socket) and comes back,
	// several times; the guest keeps serving.
	for i := 0; i < 3; i++ {
		s.Close()
		c.Close()
		s, c = connect()
		msg := fmt.Sprintf("again-%d", i)
		if got := call(s, "echo "+msg, 30*time.Second); got != msg {
			t.Fatalf("after reconnect %d: echo = %q", i, got)
		}
	}
	// A large message through the port.
	big := strings.Repeat("z", 300000)
	if got := call(s, "echo "+big, 60*time.Second); got != big {
		t.Fatalf("big echo: got %d bytes", len(got))
	}
	call(s, "poweroff", 30*time.Second)
	select {
	case err := <-vmDone:
		if err != nil {
			t.Errorf("qemu: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("guest did not power off")
	}
	s.Close()
	c.Close()
	b, _ := os.ReadFile(consoleLog)
	if !strings.Contains(string(b), "powering off: requested by test") {
		t.Errorf("console lacks the power-off reason")
	}
	// Each hang-up must have been seen by the guest and answered with a
	// new session on the reopened port.
	if n := strings.Count(string(b), "host side went away, reopening") + strings.Count(string(b), "new host session on the same port"); n < 3 {
		t.Errorf("guest saw %d host hang-ups, want at least 3", n)
	}
}

// TestGuestInit is the guest's /init.
func TestGuestInit(t *testing.T) {
	if os.Getenv(guestEnv) == "" || !pid1.IsPID1() {
		t.Skip("runs only as /init of TestVirtioSerialInVM's guest")
	}
	cfg, warns := cmdline.Load()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	slog.SetDefault(log)
	for _, w := range warns {
		log.Warn("cmdline", "warning", w.String())
	}
	setup := "ok"
	if err := pid1.Setup(cfg); err != nil {
		setup = "failed"
		log.Error("setup", "error", err)
	}
	pid1.SetupSignals()
	for _, m := range guestModules {
		f, err := os.Open(filepath.Join("/modules", m))
		if err != nil {
			continue
		}
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
			log.Warn("load module", "module", m, "error", err)
		}
		f.Close()
	}

	l, err := Listen(context.Background(), Config{UseVsock: cfg.UseVsock, Addr: cfg.ServerAddr}, log)
	if err != nil {
		pid1.Poweroff("listen: " + err.Error())
	}
	kind := l.Addr().Network()

	loop := "failed"
	if vl, err := ListenAddr(context.Background(), Addr{Kind: KindVsock, CID: CIDAny, Port: 1024}, log); err == nil {
		go func() {
			c, err := vl.Accept()
			if err == nil {
				io.Copy(c, c)
				c.Close()
			}
		}()
		if c, err := vsock.Dial(unix.VMADDR_CID_LOCAL, 1024, nil); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("ping"))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err == nil && string(buf) == "ping" {
				loop = "ok"
			}
			c.Close()
		} else {
			log.Warn("vsock loopback dial", "error", err)
		}
		vl.Close()
	} else {
		log.Warn("vsock listen", "error", err)
	}

	// Logs served on a vsock port, read back through the loopback.
	logPort := "failed"
	lcfg := cfg
	lcfg.LogVport = 1030
	if vlog, err := logging.SetupWith(lcfg, logging.Options{}); err == nil {
		vlog.Info("to the log port")
		if c, err := vsock.Dial(unix.VMADDR_CID_LOCAL, 1030, nil); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			if strings.Contains(line, "to the log port") {
				logPort = "ok"
			}
			c.Close()
		}
	} else {
		log.Warn("log port", "error", err)
	}
	slog.SetDefault(log)

	for {
		c, err := l.Accept()
		if err != nil {
			pid1.Poweroff("accept: " + err.Error())
		}
		go func() {
			defer c.Close()
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch cmd {
			case "echo":
				fmt.Fprintln(c, arg)
			case "status":
				fmt.Fprintf(c, "pid1=%v channel=%s setup=%s vsock-loopback=%s log-port=%s cgroup=%s\n", pid1.IsPID1(), kind, setup, loop, logPort, guestCgroups())
			case "poweroff":
				fmt.Fprintln(c, "bye")
				time.Sleep(100 * time.Millisecond)
				pid1.Poweroff("requested by test")
			}
		}()
	}
}

// guestCgroups describes the cgroup set-up: v1 when the memory and
// cpu,cpuacct hierarchies are mounted, v2 when the unified hierarchy has
// every controller enabled for its children.
func guestCgroups() string {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return "none"
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		ctl, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		sub, _ := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control")
		if len(strings.Fields(string(ctl))) == 0 || strings.Join(strings.Fields(string(ctl)), " ") != strings.Join(strings.Fields(string(sub)), " ") {
			return fmt.Sprintf("v2-partial(%q/%q)", strings.TrimSpace(string(sub)), strings.TrimSpace(string(ctl)))
		}
		return "v2"
	}
	for _, d := range []string{"memory", "cpu,cpuacct", "cpu", "pids", "devices", "freezer"} {
		if err := unix.Statfs(filepath.Join("/sys/fs/cgroup", d), &st); err != nil || st.Type != unix.CGROUP_SUPER_MAGIC {
			return "v1-missing-" + d
		}
	}
	return "v1"
}
