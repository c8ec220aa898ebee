package e2e

import (
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/kguest/kguest/tests/qemu"
)

// TestHarness checks the harness itself on the project's kernel: the console
// is captured, QMP answers, and the hard timeout kills QEMU and cleans up.
func TestHarness(t *testing.T) {
	e := setup(t)
	ctx := ctxT(t, 3*time.Minute)
	vm := startVM(t, e, qemu.Config{})
	if _, err := vm.WaitConsole(ctx, regexp.MustCompile(`Linux version 6\.1`)); err != nil {
		t.Fatal(err)
	}
	q, err := qemu.DialQMP(ctx, vm.QMPSock)
	if err != nil {
		t.Fatal(err)
	}
	st, err := q.Execute(ctx, "query-status", nil)
	q.Close()
	if err != nil || !regexp.MustCompile(`"running":\s*true`).Match(st) {
		t.Fatalf("query-status: %s %v", st, err)
	}

	short, err := qemu.Start(ctx, qemu.Config{Arch: e.arch, Kernel: e.kernel.Boot, Initrd: e.initrd.Path, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-short.Done():
	case <-time.After(30 * time.Second):
		short.Stop()
		t.Fatal("hard timeout did not kill QEMU")
	}
	if !regexp.MustCompile(`hard timeout`).MatchString(short.Stderr()) {
		t.Errorf("stderr does not say why QEMU was killed: %q", short.Stderr())
	}
	dir := short.Dir
	short.Stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("VM directory %s left behind: %v", dir, err)
	}
}
