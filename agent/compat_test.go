package agent

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// kataSpec drops the namespaces a Kata host takes out of the spec it sends
// (pid, network, cgroup) and empties the paths of the others.
func kataSpec(s *agentpb.Spec) *agentpb.Spec {
	var keep []*agentpb.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		switch n.Type {
		case "pid", "network", "cgroup":
			continue
		}
		n.Path = ""
		keep = append(keep, n)
	}
	s.Linux.Namespaces = keep
	return s
}

// The calls a Kata 2.x/3.x host makes for a pod, with its values: DNS as
// the lines of the host's resolv.conf (blank ones included), the init
// process named by exec id == container id, output read until an error.
func TestKataHostContainerFlow(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	c := ctx(t)
	resolv := "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
	if _, err := h.c.CreateSandbox(c, &agentpb.CreateSandboxRequest{
		Hostname: "pod", Dns: strings.Split(resolv, "\n"), SandboxId: "pod",
	}); err != nil {
		t.Fatalf("CreateSandbox with Kata's DNS lines: %v", err)
	}
	id := newID()
	if _, err := h.c.CreateContainer(c, &agentpb.CreateContainerRequest{
		ContainerId: id, ExecId: id, OCI: kataSpec(h.spec(id, "sh", "-c", "echo $$; cat /etc/resolv.conf; read x; exit 3")),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.WriteStdin(c, &agentpb.WriteStreamRequest{ContainerId: id, ExecId: id, Data: []byte("go\n")}); err != nil {
		t.Fatalf("WriteStdin with exec id = container id: %v", err)
	}
	// PID 1 of its own pid namespace, though the spec had none.
	if out := h.readAll(h.c, id, id, false); out != "1\n"+resolv {
		t.Errorf("container pid and resolv.conf %q, want %q", out, "1\n"+resolv)
	}
	if code := h.wait(id, id); code != 3 {
		t.Errorf("WaitProcess(exec id = container id) = %d, want 3", code)
	}

	// The containers of the pod share its IPC and UTS namespaces, which are
	// not the agent's. The first container stays up meanwhile, so that its
	// namespaces cannot be freed and their numbers reused.
	show := []string{"sh", "-c", "readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts"}
	run := func(args ...string) string {
		id := newID()
		if _, err := h.c.CreateContainer(c, &agentpb.CreateContainerRequest{
			ContainerId: id, ExecId: id, OCI: kataSpec(h.spec(id, args...)),
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.c.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	up := run("sleep", "1000")
	h.exec(up, "show", false, show...)
	first := h.readAll(h.c, up, "show", false)
	h.wait(up, "show")
	other := run(show...)
	second := h.readAll(h.c, other, other, false)
	h.wait(other, other)
	if first == "" || first != second {
		t.Errorf("containers of one sandbox in different namespaces: %q and %q", first, second)
	}
	ipc, _ := os.Readlink("/proc/self/ns/ipc")
	uts, _ := os.Readlink("/proc/self/ns/uts")
	if strings.Contains(first, ipc) || strings.Contains(first, uts) {
		t.Errorf("container namespaces %q include the agent's %s %s", first, ipc, uts)
	}
	h.remove(up)

	sleeper := newID()
	if _, err := h.c.CreateContainer(c, &agentpb.CreateContainerRequest{
		ContainerId: sleeper, ExecId: sleeper, OCI: kataSpec(h.spec(sleeper, "sleep", "1000")),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: sleeper}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.SignalProcess(c, &agentpb.SignalProcessRequest{ContainerId: sleeper, ExecId: sleeper, Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if code := h.wait(sleeper, sleeper); code != 128+int32(unix.SIGKILL) {
		t.Errorf("killed init: status %d, want %d", code, 128+int32(unix.SIGKILL))
	}
}

// RemoveContainer kills at once: the timeout bounds the wait for the
// processes to go, it is not a grace period to sit through.
func TestRemoveContainerTimeoutBoundsTheKill(t *testing.T) {
	h := newHarness(t, client.GRPC)
	id := h.start("sleep", "1000")
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := h.c.RemoveContainer(c, &agentpb.RemoveContainerRequest{ContainerId: id, Timeout: 3600}); err != nil {
		t.Fatalf("RemoveContainer(timeout 3600) of a running container: %v", err)
	}
	_, err := h.c.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: id})
	wantCode(t, err, codes.NotFound)
}

// openFDs counts the test process's descriptors once the garbage collector
// has closed those of unreachable objects (os.Process keeps a pidfd).
func openFDs(t *testing.T) int {
	t.Helper()
	runtime.GC()
	runtime.GC()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// An exec process is forgotten once waited for and its output read, so a
// host that runs exec probes for days does not make the agent run out of
// file descriptors; output not yet read when the wait returns stays readable.
func TestExecForgottenAfterWait(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	id := h.start("sleep", "1000")
	c := ctx(t)

	// Warm up: the first exec opens descriptors that stay (clients, cgroup files).
	h.exec(id, "warm", false, "true")
	h.readAll(h.c, id, "warm", false)
	h.readAll(h.c, id, "warm", true)
	h.wait(id, "warm")
	before := openFDs(t)
	const n = 20
	for i := range n {
		e := "probe" + string(rune('a'+i))
		h.exec(id, e, false, "echo", "ok")
		if out := h.readAll(h.c, id, e, false); out != "ok\n" {
			t.Fatalf("exec %s output %q", e, out)
		}
		h.readAll(h.c, id, e, true)
		if code := h.wait(id, e); code != 0 {
			t.Fatalf("exec %s status %d", e, code)
		}
	}
	gone := func(e string) bool {
		_, err := h.c.WaitProcess(c, &agentpb.WaitProcessRequest{ContainerId: id, ExecId: e})
		return err != nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for !gone("probet") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_, err := h.c.WaitProcess(c, &agentpb.WaitProcessRequest{ContainerId: id, ExecId: "probet"})
	wantCode(t, err, codes.NotFound)
	if after := openFDs(t); after > before+3 {
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			t.Log(e.Name(), l)
		}
		t.Errorf("open descriptors went from %d to %d over %d execs", before, after, n)
	}

	// Waited for before its output was read: the output is still there.
	h.exec(id, "late", false, "echo", "late")
	if code := h.wait(id, "late"); code != 0 {
		t.Fatalf("exec late status %d", code)
	}
	if out := h.readAll(h.c, id, "late", false); out != "late\n" {
		t.Errorf("output read after the wait: %q", out)
	}
	h.remove(id)
}

// What the agent does not do it says so, naming the call, rather than
// answering a success that did nothing.
func TestUndoneRPCsAnswerUnimplemented(t *testing.T) {
	a, err := New(Config{RunDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c := context.Background()
	calls := map[string]func() error{
		"StartTracing": func() error { _, err := a.StartTracing(c, &agentpb.StartTracingRequest{}); return err },
		"StopTracing":  func() error { _, err := a.StopTracing(c, &agentpb.StopTracingRequest{}); return err },
		"MemAgentMemcgSet": func() error {
			_, err := a.MemAgentMemcgSet(c, &agentpb.MemAgentMemcgConfig{})
			return err
		},
		"MemAgentCompactSet": func() error {
			_, err := a.MemAgentCompactSet(c, &agentpb.MemAgentCompactConfig{})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want Unimplemented naming it", name, err)
		}
	}
}

// The init process answers to the exec id given at creation, and no exec
// may take one of its names.
func TestInitExecID(t *testing.T) {
	h := newHarness(t, client.GRPC)
	c := ctx(t)
	id := newID()
	if _, err := h.c.CreateContainer(c, &agentpb.CreateContainerRequest{
		ContainerId: id, ExecId: "init-" + id, OCI: h.spec(id, "sleep", "1000"),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{id, "init-" + id} {
		_, err := h.c.ExecProcess(c, &agentpb.ExecProcessRequest{ContainerId: id, ExecId: e, Process: client.DefaultProcess([]string{"true"}, false)})
		wantCode(t, err, codes.AlreadyExists)
	}
	if _, err := h.c.SignalProcess(c, &agentpb.SignalProcessRequest{ContainerId: id, ExecId: "init-" + id, Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if code := h.wait(id, "init-"+id); code != 128+int32(unix.SIGKILL) {
		t.Errorf("init status %d", code)
	}
	h.remove(id)
}

// What Kata's host runtimes rely on in the agent's answers, each case with
// the host code that depends on it.
func TestKataHostErrorContract(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	sigkill := uint32(unix.SIGKILL)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c context.Context)
	}{
		{
			// The Go shim copies output with io.Copy, which spins on an empty
			// answer without error: the end must be an error, every time.
			"ReadStdout at EOF is an error, again and again",
			func(t *testing.T, c context.Context) {
				id := h.start("echo", "out")
				if out := h.readAll(h.c, id, id, false); out != "out\n" {
					t.Fatalf("output %q", out)
				}
				for i := range 3 {
					resp, err := h.c.ReadStdout(c, &agentpb.ReadStreamRequest{ContainerId: id, ExecId: id, Len: 4096})
					if err == nil {
						t.Fatalf("read %d after EOF: %d bytes and no error", i, len(resp.Data))
					}
				}
				h.remove(id)
			},
		},
		{
			// runtime-rs ends stdin with an empty WriteStdin, never CloseStdin.
			"empty WriteStdin ends stdin",
			func(t *testing.T, c context.Context) {
				id := h.start("cat")
				if _, err := h.c.WriteStdin(c, &agentpb.WriteStreamRequest{ContainerId: id, Data: []byte("in\n")}); err != nil {
					t.Fatal(err)
				}
				for range 2 { // twice: the end of stdin may be repeated
					if resp, err := h.c.WriteStdin(c, &agentpb.WriteStreamRequest{ContainerId: id}); err != nil || resp.Len != 0 {
						t.Fatalf("empty WriteStdin: %v %v", resp, err)
					}
				}
				if out := h.readAll(h.c, id, "", false); out != "in\n" {
					t.Errorf("output %q", out)
				}
				if code := h.wait(id, ""); code != 0 {
					t.Errorf("cat exit %d", code)
				}
				h.remove(id)
			},
		},
		{
			// Kill of a finished process is not an error for Kata's agent
			// (ESRCH is ignored); shims kill again when they stop a task.
			"SignalProcess of an exited init succeeds",
			func(t *testing.T, c context.Context) {
				id := h.start("true")
				h.wait(id, id)
				for _, e := range []string{id, ""} {
					for _, sig := range []uint32{sigkill, uint32(unix.SIGTERM)} {
						if _, err := h.c.SignalProcess(c, &agentpb.SignalProcessRequest{ContainerId: id, ExecId: e, Signal: sig}); err != nil {
							t.Errorf("signal %d to exited init (exec id %q): %v", sig, e, err)
						}
					}
				}
				h.remove(id)
			},
		},
		{
			// Hosts stop a container with SIGTERM and an empty exec id; it is
			// the init's to handle (runc and Kata alike), only SIGKILL goes
			// to every process. The init here kills its child itself: the
			// child dies of SIGKILL (137), not of a SIGTERM of ours (143).
			"SIGTERM with an empty exec id reaches the init alone",
			func(t *testing.T, c context.Context) {
				id := h.start("sh", "-c", `trap 'kill -9 $child; wait $child; echo child $?; exit 0' TERM; sleep 1000 & child=$!; echo ready; wait`)
				resp, err := h.c.ReadStdout(c, &agentpb.ReadStreamRequest{ContainerId: id, Len: 6})
				if err != nil || string(resp.Data) != "ready\n" {
					t.Fatalf("ready: %v %v", resp, err)
				}
				if _, err := h.c.SignalProcess(c, &agentpb.SignalProcessRequest{ContainerId: id, Signal: uint32(unix.SIGTERM)}); err != nil {
					t.Fatal(err)
				}
				if out := h.readAll(h.c, id, "", false); out != "child 137\n" {
					t.Errorf("init reported %q, want the child killed by the init alone", out)
				}
				h.wait(id, "")
				h.remove(id)

				// SIGKILL with an empty exec id reaches every process, so a
				// child that left the init's process group goes too.
				id = h.start("sh", "-c", `setsid sleep 1000 & echo ready; wait`)
				if _, err := h.c.ReadStdout(c, &agentpb.ReadStreamRequest{ContainerId: id, Len: 6}); err != nil {
					t.Fatal(err)
				}
				if _, err := h.c.SignalProcess(c, &agentpb.SignalProcessRequest{ContainerId: id, Signal: sigkill}); err != nil {
					t.Fatal(err)
				}
				h.wait(id, "")
				deadline := time.Now().Add(10 * time.Second)
				for {
					resp, err := h.c.ListProcesses(c, &agentpb.ListProcessesRequest{ContainerId: id, Format: "json"})
					if err != nil {
						t.Fatal(err)
					}
					if string(resp.ProcessList) == "[]" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("processes left after SIGKILL to all: %s", resp.ProcessList)
					}
					time.Sleep(20 * time.Millisecond)
				}
				h.remove(id)
			},
		},
		{
			// Kata 1.x declares OOMScoreAdj uint32 and wraps negative scores:
			// Kubernetes gives Guaranteed pods -997.
			"a Kata 1.x host's wrapped negative OOM score",
			func(t *testing.T, c context.Context) {
				if !haveCap(t, unix.CAP_SYS_RESOURCE) {
					t.Skip("needs CAP_SYS_RESOURCE to lower an OOM score (the guest's agent has it)")
				}
				g := h.dial(client.GRPC)
				defer g.Close()
				id := newID()
				s := h.spec(id, "cat", "/proc/self/oom_score_adj")
				s.Process.OOMScoreAdj = 1<<32 - 997
				if _, err := g.CreateContainer(c, &agentpb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: s}); err != nil {
					t.Fatal(err)
				}
				if _, err := g.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
					t.Fatal(err)
				}
				if out := h.readAll(g, id, id, false); out != "-997\n" {
					t.Errorf("oom_score_adj %q, want -997", out)
				}
				h.wait(id, id)
				h.remove(id)
			},
		},
		{
			"WaitProcess of the init twice gives its status twice",
			func(t *testing.T, c context.Context) {
				id := h.start("sh", "-c", "exit 5")
				if a, b := h.wait(id, id), h.wait(id, ""); a != 5 || b != 5 {
					t.Errorf("statuses %d and %d, want 5 twice", a, b)
				}
				h.remove(id)
			},
		},
		{
			"RemoveContainer of a running container kills it; then it is NotFound",
			func(t *testing.T, c context.Context) {
				id := h.start("sleep", "1000")
				h.remove(id)
				_, err := h.c.RemoveContainer(c, &agentpb.RemoveContainerRequest{ContainerId: id})
				wantCode(t, err, codes.NotFound)
			},
		},
		{
			"CreateContainer with an existing id is AlreadyExists",
			func(t *testing.T, c context.Context) {
				id := h.start("sleep", "1000")
				_, err := h.c.CreateContainer(c, &agentpb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: h.spec(id, "true")})
				wantCode(t, err, codes.AlreadyExists)
				h.remove(id)
			},
		},
		{
			// The Go shim stops watching for OOM events for good on NotFound
			// (its sign of an agent without the call), and disables agent
			// metrics the same way: neither may ever answer it.
			"GetOOMEvent and GetMetrics never answer NotFound",
			func(t *testing.T, c context.Context) {
				short, cancel := context.WithTimeout(c, 200*time.Millisecond)
				defer cancel()
				_, err := h.c.GetOOMEvent(short, &agentpb.GetOOMEventRequest{})
				if status.Code(err) == codes.NotFound || err == nil {
					t.Errorf("GetOOMEvent with nothing to report: %v", err)
				}
				if _, err := h.c.GetMetrics(c, &agentpb.GetMetricsRequest{}); status.Code(err) == codes.NotFound {
					t.Errorf("GetMetrics: %v", err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, ctx(t)) })
	}
}

// haveCap tells whether the test process has capability c in its effective set.
func haveCap(t *testing.T, c int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("CapEff %q: %v", v, err)
			}
			return set&(1<<c) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}
