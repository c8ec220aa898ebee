//go:build seccomp

package container

import (
	"context"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// With the seccomp build tag the spec's profile applies: mkdir fails with
// the errno the profile names while other calls work.
func TestSeccompProfileApplies(t *testing.T) {
	e := newEnv(t)
	id, s := e.spec("sh", "-c", "echo before; mkdir /tmp/denied 2>&1; echo status $?")
	errno := uint(1) // EPERM
	s.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls: []specs.LinuxSyscall{{
			Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &errno,
		}},
	}
	c := e.create(id, s)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := readAll(t, c.Init().ReadStdout)
	if want := "before\nmkdir: can't create directory '/tmp/denied': Operation not permitted\nstatus 1\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}
