package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInitReexecSkipsAgentPackages runs this test binary, which links what
// the agent links, as libcontainer runs the agent for every container
// process ("BINARY init"), and checks with GODEBUG=inittrace=1 that
// libcontainer's init takes over before the agent's heavy packages are
// initialized: their init is paid by every container start and exec. Without
// an init pipe libcontainer's init fails at once (exit status 255).
func TestInitReexecSkipsAgentPackages(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "init")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 255 {
		t.Fatalf("%s init: %v, want exit status 255; stderr:\n%s", exe, err, stderr.String())
	}
	inited := map[string]bool{}
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 1 && f[0] == "init" {
			inited[f[1]] = true
		}
	}
	if !inited["github.com/opencontainers/runc/libcontainer"] {
		t.Fatalf("libcontainer was not initialized: no inittrace output?\n%s", stderr.String())
	}
	for _, pkg := range []string{
		"github.com/kguest/kguest/agent",
		"github.com/kguest/kguest/protocols/agentpb",
		"google.golang.org/grpc",
		"github.com/prometheus/client_golang/prometheus",
	} {
		if inited[pkg] {
			t.Errorf("%s was initialized before libcontainer's init took over", pkg)
		}
	}
}

// BenchmarkInitReexec measures what every container process pays before
// libcontainer's init gets to work: starting this binary, which links what
// the agent links, as "BINARY init" up to libcontainer's init failing for
// want of an init pipe. It reports the CPU time of the child per run.
//
//	go test -run '^$' -bench InitReexec -benchtime 500x ./cmd/kata-agent/
func BenchmarkInitReexec(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(exe, "init")
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 255 {
			b.Fatalf("%s init: %v, want exit status 255", exe, err)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
