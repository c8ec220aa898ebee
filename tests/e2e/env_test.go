package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kguest/kguest/tests/artifacts"
	"github.com/kguest/kguest/tests/qemu"
)

var (
	archFlag    = flag.String("arch", qemu.HostArch(), "guest architecture: x86_64, arm64 or s390x")
	bootTimeout = flag.Duration("boot-timeout", 0, "time allowed from QEMU start to agent ready (default by arch)")
)

// env is what every scenario boots: built once per test binary.
type env struct {
	arch      string
	tools     *artifacts.Tools
	kernel    *artifacts.Kernel
	guestTool string
	initrd    *artifacts.Image
}

var (
	envOnce sync.Once
	envVal  *env
	envErr  error
	envSkip string
)

// precondition skips the test when something the VM tests need is really
// missing on this machine.
func precondition(t *testing.T, arch string) {
	t.Helper()
	if testing.Short() {
		t.Skip("VM test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: virtiofsd, 9p and the cache under /var/cache/kguest")
	}
	if _, err := exec.LookPath(qemu.Binary(arch)); err != nil {
		t.Skipf("needs %s (apt-get install %s)", qemu.Binary(arch), qemu.DebianPackage(arch))
	}
	if _, err := os.Stat(artifacts.KernelSource); err != nil {
		t.Skipf("needs the kernel source %s (apt-get install linux-source-6.1)", artifacts.KernelSource)
	}
}

func setup(t *testing.T) *env {
	t.Helper()
	precondition(t, *archFlag)
	envOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
		defer cancel()
		e := &env{arch: *archFlag}
		if e.tools, envErr = artifacts.Build(ctx, e.arch); envErr != nil {
			return
		}
		// KGUEST_E2E_KERNEL and KGUEST_E2E_INITRD run the suite on other
		// artifacts (e.g. a kernel under development).
		if k := os.Getenv("KGUEST_E2E_KERNEL"); k != "" {
			st, err := os.Stat(k)
			if envErr = err; err != nil {
				return
			}
			e.kernel = &artifacts.Kernel{Dir: filepath.Dir(k), Boot: k, Size: st.Size()}
		} else if e.kernel, envErr = artifacts.BuildKernel(ctx, e.tools, e.arch); envErr != nil {
			return
		}
		if e.guestTool, envErr = artifacts.GuestTool(ctx, e.tools, e.arch); envErr != nil {
			return
		}
		opts := artifacts.RootfsOptions{
			Extras:     []artifacts.Extra{{Src: e.guestTool, Dst: "/usr/bin/guesttool"}},
			DebugShell: true,
		}
		if p := os.Getenv("KGUEST_E2E_INITRD"); p != "" {
			e.initrd = &artifacts.Image{Path: p}
		} else if e.initrd, envErr = artifacts.BuildInitrd(ctx, e.tools, e.arch, opts, "gzip"); envErr != nil {
			return
		}
		envVal = e
	})
	if envErr != nil {
		t.Fatalf("build artifacts: %v", envErr)
	}
	return envVal
}

// readyTimeout is the time allowed to boot to agent-ready under TCG.
func readyTimeout(arch string) time.Duration {
	if *bootTimeout > 0 {
		return *bootTimeout
	}
	if arch == qemu.HostArch() {
		return 90 * time.Second
	}
	return 5 * time.Minute
}

var logName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// LogDir keeps the console logs of failed tests.
func logDir() string {
	if d := os.Getenv("KGUEST_E2E_LOGS"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "kguest-e2e-logs")
}

// startVM boots cfg (kernel and arch from env unless set) and stops it when
// the test ends; if the test failed, the console log is kept and its tail
// printed.
func startVM(t *testing.T, e *env, cfg qemu.Config) *qemu.VM {
	t.Helper()
	if cfg.Arch == "" {
		cfg.Arch = e.arch
	}
	if cfg.Kernel == "" {
		cfg.Kernel = e.kernel.Boot
	}
	if cfg.Initrd == "" && cfg.Image == "" {
		cfg.Initrd = e.initrd.Path
	}
	if extra := os.Getenv("KGUEST_E2E_CMDLINE"); extra != "" {
		cfg.Cmdline = append(cfg.Cmdline, strings.Fields(extra)...)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = readyTimeout(cfg.Arch) + 10*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start VM: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			p := filepath.Join(logDir(), fmt.Sprintf("%s-%s.log", logName.ReplaceAllString(t.Name(), "_"), time.Now().Format("150405")))
			if err := vm.KeepLog(p); err != nil {
				t.Logf("keep console log: %v", err)
			}
			t.Logf("console (last 40 lines; full log in %s):\n%s", p, vm.ConsoleTail(40))
		}
		vm.Stop()
	})
	return vm
}

func hasLine(out, sub string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
