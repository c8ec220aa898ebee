package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kguest/kguest/agent/container/testutil"
	"github.com/kguest/kguest/init/reaper"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var idSeq atomic.Int64

type env struct {
	t      *testing.T
	rootfs string
	state  string
	reaper *reaper.Reaper
	ooms   chan string
}

func newEnv(t *testing.T) *env {
	testutil.Require(t)
	r, err := reaper.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, rootfs: testutil.Rootfs(t), state: t.TempDir(), reaper: r, ooms: make(chan string, 8)}
}

func (e *env) spec(args ...string) (string, *specs.Spec) {
	id := fmt.Sprintf("t%d-%d", os.Getpid(), idSeq.Add(1))
	return id, testutil.Spec(e.rootfs, id, args...)
}

func (e *env) create(id string, s *specs.Spec) *Container {
	e.t.Helper()
	c, err := Create(Config{ID: id, Spec: s, StateRoot: e.state, Reaper: e.reaper, OnOOM: func(id string) { e.ooms <- id }})
	if err != nil {
		e.t.Fatalf("create: %v", err)
	}
	e.t.Cleanup(func() {
		if err := c.Destroy(context.Background(), 0); err != nil {
			e.t.Errorf("destroy: %v", err)
		}
	})
	return c
}

func (e *env) run(args ...string) (*Container, *Process) {
	e.t.Helper()
	id, s := e.spec(args...)
	c := e.create(id, s)
	if err := c.Start(context.Background()); err != nil {
		e.t.Fatalf("start: %v", err)
	}
	return c, c.Init()
}

func readAll(t *testing.T, read func(context.Context, int) ([]byte, error)) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b strings.Builder
	for {
		d, err := read(ctx, 4096)
		b.Write(d)
		if errors.Is(err, io.EOF) {
			return b.String()
		}
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, b.String())
		}
	}
}

func wait(t *testing.T, p *Process) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return code
}

func TestExitCodeAndOutput(t *testing.T) {
	e := newEnv(t)
	_, p := e.run("sh", "-c", "echo out; echo err >&2; exit 7")
	if out := readAll(t, p.ReadStdout); out != "out\n" {
		t.Errorf("stdout %q", out)
	}
	if out := readAll(t, p.ReadStderr); out != "err\n" {
		t.Errorf("stderr %q", out)
	}
	if code := wait(t, p); code != 7 {
		t.Errorf("exit code %d, want 7", code)
	}
	if code := wait(t, p); code != 7 {
		t.Errorf("second wait: exit code %d, want 7", code)
	}
}

func TestSignals(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		args []string
		sig  unix.Signal
		want int
	}{
		// init ignores an uncaught SIGTERM: it becomes SIGKILL.
		{"uncaught SIGTERM", []string{"sh", "-c", "echo ready; exec sleep 100"}, unix.SIGTERM, 128 + 9},
		{"SIGKILL", []string{"sh", "-c", "echo ready; exec sleep 100"}, unix.SIGKILL, 128 + 9},
		{"trapped SIGUSR1", []string{"sh", "-c", "trap 'exit 3' USR1; echo ready; while :; do sleep 0.05; done"}, unix.SIGUSR1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := e.run(tc.args...)
			if tc.args[0] == "sh" {
				if d, err := p.ReadStdout(context.Background(), 6); err != nil || string(d) != "ready\n" {
					t.Fatalf("ready: %q %v", d, err)
				}
			}
			if err := c.Signal("", tc.sig, false); err != nil {
				t.Fatal(err)
			}
			if code := wait(t, p); code != tc.want {
				t.Errorf("exit code %d, want %d", code, tc.want)
			}
		})
	}
}

func TestStdin(t *testing.T) {
	e := newEnv(t)
	_, p := e.run("sh", "-c", "cat; echo done")
	ctx := context.Background()
	if _, err := p.WriteStdin(ctx, []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if err := p.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if out := readAll(t, p.ReadStdout); out != "hello\ndone\n" {
		t.Errorf("stdout %q", out)
	}
	if code := wait(t, p); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func TestTTY(t *testing.T) {
	e := newEnv(t)
	id, s := e.spec("sh", "-c", "tty; stty size; sleep 100 & echo bye")
	s.Process.Terminal = true
	s.Process.ConsoleSize = &specs.Box{Height: 30, Width: 100}
	c := e.create(id, s)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := c.Init()
	// A background child keeps the pty open: EOF still comes after exit.
	out := readAll(t, p.ReadStdout)
	if !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "30 100") || !strings.Contains(out, "bye") {
		t.Errorf("tty output %q", out)
	}
	if code := wait(t, p); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func TestExec(t *testing.T) {
	e := newEnv(t)
	c, initp := e.run("sleep", "100")
	ps := *c.Spec().Process
	ps.Args = []string{"sh", "-c", "echo in $(hostname); exit 5"}
	p, err := c.Exec("e1", &ps)
	if err != nil {
		t.Fatal(err)
	}
	if out := readAll(t, p.ReadStdout); out != "in test\n" {
		t.Errorf("exec stdout %q", out)
	}
	if code := wait(t, p); code != 5 {
		t.Errorf("exec exit %d", code)
	}
	if _, err := c.Exec("e1", &ps); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate exec id: %v", err)
	}
	if _, err := c.Process("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown exec id: %v", err)
	}
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := c.Signal("", unix.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	if code := wait(t, initp); code != 137 {
		t.Errorf("init exit %d", code)
	}
}

func TestValidate(t *testing.T) {
	e := newEnv(t)
	if err := os.Symlink("../../../../../etc", filepath.Join(e.rootfs, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(e.rootfs, "inside")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*specs.Spec)
		ok     bool
	}{
		{"valid", func(*specs.Spec) {}, true},
		{"absolute symlink stays inside", func(s *specs.Spec) { s.Process.Cwd = "/inside" }, true},
		{"cwd dotdot", func(s *specs.Spec) { s.Process.Cwd = "/../../etc" }, false},
		{"cwd relative", func(s *specs.Spec) { s.Process.Cwd = "tmp" }, false},
		{"cwd symlink escape", func(s *specs.Spec) { s.Process.Cwd = "/escape" }, false},
		{"mount dotdot", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/tmp/../../x", Type: "tmpfs", Source: "tmpfs"})
		}, false},
		{"mount symlink escape", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/escape/x", Type: "tmpfs", Source: "tmpfs"})
		}, false},
		{"missing rootfs", func(s *specs.Spec) { s.Root.Path = "/nonexistent/rootfs" }, false},
		{"no args", func(s *specs.Spec) { s.Process.Args = nil }, false},
		{"no process", func(s *specs.Spec) { s.Process = nil }, false},
		{"missing namespace path", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/none"})
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, s := e.spec("true")
			tc.mutate(s)
			err := Validate(s)
			if tc.ok && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestOOM(t *testing.T) {
	e := newEnv(t)
	id, s := e.spec("sh", "-c", "head -c 67108864 /dev/zero | tail")
	limit := int64(32 << 20)
	s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
	c := e.create(id, s)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := wait(t, c.Init()); code == 0 {
		t.Fatalf("allocating 64 MiB under a 32 MiB limit succeeded")
	}
	select {
	case got := <-e.ooms:
		if got != id {
			t.Fatalf("OOM event for %q, want %q", got, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OOM event")
	}
}
