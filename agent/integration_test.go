package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	// libcontainer re-executes the test binary as "BINARY init": handled
	// there, as in the agent.
	_ "github.com/kguest/kguest/agent/container/reexec"
	"github.com/kguest/kguest/agent/container/testutil"
	"github.com/kguest/kguest/agent/server"
	"github.com/kguest/kguest/init/reaper"
	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveCgroupParent()
	os.Exit(code)
}

// harness is an agent served on a unix socket, with a busybox rootfs.
type harness struct {
	t      testing.TB
	agent  *Agent
	sock   string
	rootfs string
	c      client.Client
	run    string
	// failed gets the method of each call the server finished with an
	// error (dropped when full).
	failed chan string
}

// failedCalls is a slog handler on the server's call log that reports the
// calls that finished with an error: the server logs a call once its
// handler has returned.
type failedCalls chan string

func (f failedCalls) Enabled(context.Context, slog.Level) bool { return true }
func (f failedCalls) WithAttrs([]slog.Attr) slog.Handler       { return f }
func (f failedCalls) WithGroup(string) slog.Handler            { return f }
func (f failedCalls) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "rpc" {
		return nil
	}
	var method string
	failed := false
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "method":
			method = a.Value.String()
		case "code":
			failed = true
		}
		return true
	})
	if failed {
		select {
		case f <- method:
		default:
		}
	}
	return nil
}

var ctrSeq atomic.Int64

func newHarness(t testing.TB, proto client.Protocol) *harness {
	t.Helper()
	testutil.Require(t)
	dir := t.TempDir()
	h := &harness{t: t, rootfs: testutil.Rootfs(t), run: filepath.Join(dir, "run"), failed: make(chan string, 64)}
	a, err := New(Config{RunDir: h.run, ContainersDir: filepath.Join(dir, "containers"), SandboxDir: filepath.Join(h.run, "sandbox")})
	if err != nil {
		t.Fatal(err)
	}
	h.agent = a
	srv := server.New(server.Options{Logger: slog.New(failedCalls(h.failed))})
	agentpb.RegisterAgentServiceServer(srv.GRPC(), h.agent)
	agentpb.RegisterTTRPCAgentServiceService(srv.TTRPC(), h.agent)
	h.sock = filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	h.c = h.dial(proto)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.agent.DestroySandbox(ctx, &agentpb.DestroySandboxRequest{}); err != nil {
			t.Errorf("destroy sandbox: %v", err)
		}
		h.c.Close()
		l.Close()
	})
	return h
}

func (h *harness) dial(proto client.Protocol) client.Client {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, "unix://"+h.sock, proto)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func newID() string { return fmt.Sprintf("c%d-%d", os.Getpid(), ctrSeq.Add(1)) }

func (h *harness) spec(id string, args ...string) *agentpb.Spec {
	s := client.DefaultSpec(id, h.rootfs, args)
	s.Linux.CgroupsPath = testutil.CgroupParent + "/" + id
	return s
}

func (h *harness) create(id string, s *agentpb.Spec) {
	h.t.Helper()
	if _, err := h.c.CreateContainer(ctx(h.t), &agentpb.CreateContainerRequest{ContainerId: id, OCI: s}); err != nil {
		h.t.Fatalf("create %s: %v", id, err)
	}
}

// start creates and starts a container running args.
func (h *harness) start(args ...string) string {
	h.t.Helper()
	id := newID()
	h.create(id, h.spec(id, args...))
	if _, err := h.c.StartContainer(ctx(h.t), &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		h.t.Fatalf("start %s: %v", id, err)
	}
	return id
}

func isEOF(err error) bool {
	return status.Code(err) == codes.OutOfRange && strings.Contains(err.Error(), "EOF")
}

func (h *harness) readAll(c client.Client, id, exec string, stderr bool) string {
	h.t.Helper()
	var b bytes.Buffer
	for {
		req := &agentpb.ReadStreamRequest{ContainerId: id, ExecId: exec, Len: 4096}
		var resp *agentpb.ReadStreamResponse
		var err error
		if stderr {
			resp, err = c.ReadStderr(ctx(h.t), req)
		} else {
			resp, err = c.ReadStdout(ctx(h.t), req)
		}
		if isEOF(err) {
			return b.String()
		}
		if err != nil {
			h.t.Fatalf("read %s/%s: %v", id, exec, err)
		}
		b.Write(resp.Data)
	}
}

func (h *harness) wait(id, exec string) int32 {
	h.t.Helper()
	resp, err := h.c.WaitProcess(ctx(h.t), &agentpb.WaitProcessRequest{ContainerId: id, ExecId: exec})
	if err != nil {
		h.t.Fatalf("wait %s/%s: %v", id, exec, err)
	}
	return resp.Status
}

func (h *harness) remove(id string) {
	h.t.Helper()
	if _, err := h.c.RemoveContainer(ctx(h.t), &agentpb.RemoveContainerRequest{ContainerId: id}); err != nil {
		h.t.Fatalf("remove %s: %v", id, err)
	}
}

func (h *harness) exec(id, execID string, tty bool, args ...string) {
	h.t.Helper()
	p := client.DefaultProcess(args, tty)
	if _, err := h.c.ExecProcess(ctx(h.t), &agentpb.ExecProcessRequest{ContainerId: id, ExecId: execID, Process: p}); err != nil {
		h.t.Fatalf("exec %s in %s: %v", execID, id, err)
	}
}

func wantCode(t testing.TB, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %s", err, code)
	}
}

func TestExitCodeAndOutput(t *testing.T) {
	for _, proto := range []client.Protocol{client.TTRPC, client.GRPC} {
		t.Run(string(proto), func(t *testing.T) {
			h := newHarness(t, proto)
			id := h.start("sh", "-c", "echo hello; echo oops >&2; exit 7")
			if out := h.readAll(h.c, id, "", false); out != "hello\n" {
				t.Errorf("stdout %q", out)
			}
			if out := h.readAll(h.c, id, "", true); out != "oops\n" {
				t.Errorf("stderr %q", out)
			}
			if code := h.wait(id, ""); code != 7 {
				t.Errorf("exit %d, want 7", code)
			}
			if code := h.wait(id, ""); code != 7 {
				t.Errorf("second wait: exit %d, want 7", code)
			}
			h.remove(id)
			_, err := h.c.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: id})
			wantCode(t, err, codes.NotFound)
		})
	}
}

func TestSignals(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	for _, tc := range []struct {
		name   string
		script string
		sig    uint32
		want   int32
	}{
		{"SIGKILL", "echo ready; exec sleep 100", 9, 137},
		{"uncaught SIGTERM becomes SIGKILL", "echo ready; exec sleep 100", 15, 137},
		{"trapped SIGTERM", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done", 15, 42},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := h.start("sh", "-c", tc.script)
			resp, err := h.c.ReadStdout(ctx(t), &agentpb.ReadStreamRequest{ContainerId: id, Len: 6})
			if err != nil || string(resp.Data) != "ready\n" {
				t.Fatalf("ready: %v %v", resp, err)
			}
			if _, err := h.c.SignalProcess(ctx(t), &agentpb.SignalProcessRequest{ContainerId: id, Signal: tc.sig}); err != nil {
				t.Fatal(err)
			}
			if code := h.wait(id, ""); code != tc.want {
				t.Errorf("exit %d, want %d", code, tc.want)
			}
			h.remove(id)
		})
	}
}

func TestStdin(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	id := h.start("sh", "-c", "read line; echo got $line; cat >&2")
	for _, d := range []string{"hello\n", "to stderr\n"} {
		resp, err := h.c.WriteStdin(ctx(t), &agentpb.WriteStreamRequest{ContainerId: id, Data: []byte(d)})
		if err != nil || resp.Len != uint32(len(d)) {
			t.Fatalf("write stdin: %v %v", resp, err)
		}
	}
	if _, err := h.c.CloseStdin(ctx(t), &agentpb.CloseStdinRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if out := h.readAll(h.c, id, "", false); out != "got hello\n" {
		t.Errorf("stdout %q", out)
	}
	if out := h.readAll(h.c, id, "", true); out != "to stderr\n" {
		t.Errorf("stderr %q", out)
	}
	if code := h.wait(id, ""); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestTTY(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	id := newID()
	s := h.spec(id, "sh", "-c", "read x; tty; stty size; sleep 100 & echo bye")
	s.Process.Terminal = true
	h.create(id, s)
	if _, err := h.c.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.TtyWinResize(ctx(t), &agentpb.TtyWinResizeRequest{ContainerId: id, Row: 33, Column: 111}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.WriteStdin(ctx(t), &agentpb.WriteStreamRequest{ContainerId: id, Data: []byte("go\n")}); err != nil {
		t.Fatal(err)
	}
	// The background sleep holds the pty open: EOF must come anyway.
	out := h.readAll(h.c, id, "", false)
	for _, want := range []string{"/dev/pts/", "33 111", "bye"} {
		if !strings.Contains(out, want) {
			t.Errorf("tty output %q lacks %q", out, want)
		}
	}
	if code := h.wait(id, ""); code != 0 {
		t.Errorf("exit %d", code)
	}
	// A tty process has no separate stderr.
	if out := h.readAll(h.c, id, "", true); out != "" {
		t.Errorf("stderr %q", out)
	}
}

func TestExecPauseStats(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	id := h.start("sleep", "1000")
	h.exec(id, "e1", false, "sh", "-c", "echo in $(hostname); exit 3")
	if out := h.readAll(h.c, id, "e1", false); out != "in "+id+"\n" {
		t.Errorf("exec stdout %q", out)
	}
	if code := h.wait(id, "e1"); code != 3 {
		t.Errorf("exec exit %d", code)
	}
	_, err := h.c.ExecProcess(ctx(t), &agentpb.ExecProcessRequest{ContainerId: id, ExecId: "e1", Process: client.DefaultProcess([]string{"true"}, false)})
	wantCode(t, err, codes.AlreadyExists)

	h.exec(id, "tty", true, "sh", "-c", "tty")
	if out := h.readAll(h.c, id, "tty", false); !strings.Contains(out, "/dev/pts/") {
		t.Errorf("exec tty output %q", out)
	}

	if _, err := h.c.PauseContainer(ctx(t), &agentpb.PauseContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	freezer := "/sys/fs/cgroup/freezer" + testutil.CgroupParent + "/" + id + "/freezer.state"
	if b, err := os.ReadFile(freezer); err == nil && strings.TrimSpace(string(b)) != "FROZEN" {
		t.Errorf("paused container's freezer state %q", b)
	}
	if _, err := h.c.ResumeContainer(ctx(t), &agentpb.ResumeContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	limit := int64(64 << 20)
	if _, err := h.c.UpdateContainer(ctx(t), &agentpb.UpdateContainerRequest{ContainerId: id,
		Resources: &agentpb.LinuxResources{Memory: &agentpb.LinuxMemory{Limit: limit}}}); err != nil {
		t.Fatal(err)
	}
	st, err := h.c.StatsContainer(ctx(t), &agentpb.StatsContainerRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	cs := st.GetCgroupStats()
	if cs.GetPidsStats().GetCurrent() < 1 || cs.GetMemoryStats().GetUsage().GetUsage() == 0 || cs.GetCpuStats().GetCpuUsage().GetTotalUsage() == 0 {
		t.Errorf("implausible stats: %v", cs)
	}
	if got := cs.GetMemoryStats().GetUsage().GetLimit(); got != uint64(limit) {
		t.Errorf("memory limit after update %d, want %d", got, limit)
	}
	ps, err := h.c.ListProcesses(ctx(t), &agentpb.ListProcessesRequest{ContainerId: id, Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ps.ProcessList, []byte("[")) || len(ps.ProcessList) < 3 {
		t.Errorf("json process list %q", ps.ProcessList)
	}
	ps, err = h.c.ListProcesses(ctx(t), &agentpb.ListProcessesRequest{ContainerId: id, Format: "table"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ps.ProcessList), "PID") || !strings.Contains(string(ps.ProcessList), "sleep 1000") {
		t.Errorf("process table %q", ps.ProcessList)
	}
	_, err = h.c.ListProcesses(ctx(t), &agentpb.ListProcessesRequest{ContainerId: id, Format: "yaml"})
	wantCode(t, err, codes.InvalidArgument)
}

func TestOOMEvent(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	id := newID()
	s := h.spec(id, "sh", "-c", "head -c 67108864 /dev/zero | tail")
	client.SetMemoryLimit(s, 32<<20)
	h.create(id, s)
	if _, err := h.c.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if code := h.wait(id, ""); code == 0 {
		t.Fatal("allocating 64 MiB under a 32 MiB limit succeeded")
	}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := h.c.GetOOMEvent(c, &agentpb.GetOOMEventRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev.ContainerId != id {
		t.Fatalf("OOM event for %q, want %q", ev.ContainerId, id)
	}
}

// A container that merely runs within its limit gives no OOM event.
func TestNoOOMEventWithoutKill(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	id := newID()
	s := h.spec(id, "sh", "-c", "head -c 8388608 /dev/zero | tail | wc -c")
	client.SetMemoryLimit(s, 32<<20)
	h.create(id, s)
	if _, err := h.c.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if code := h.wait(id, ""); code != 0 {
		t.Fatalf("exit %d", code)
	}
	c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ev, err := h.c.GetOOMEvent(c, &agentpb.GetOOMEventRequest{})
	if err == nil {
		t.Fatalf("unexpected OOM event %v", ev)
	}
}

func TestRemoveWithTimeout(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	// Ignores SIGTERM: RemoveContainer kills with SIGKILL at once, the
	// timeout only bounds the wait for the processes to be gone.
	id := h.start("sh", "-c", "trap '' TERM; while :; do sleep 0.1; done")
	if _, err := h.c.RemoveContainer(ctx(t), &agentpb.RemoveContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := h.c.RemoveContainer(ctx(t), &agentpb.RemoveContainerRequest{ContainerId: id})
	wantCode(t, err, codes.NotFound)
	if _, err := os.Stat("/sys/fs/cgroup/memory" + testutil.CgroupParent + "/" + id); !os.IsNotExist(err) {
		t.Errorf("cgroup of removed container: %v", err)
	}
}

func fdCount(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// zombies counts our children that are zombies.
func zombies(t testing.TB) int {
	n := 0
	me := strconv.Itoa(os.Getpid())
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == me {
			n++
		}
	}
	return n
}

func TestManyExecsNoLeak(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	id := h.start("sleep", "1000")
	// One exec first so lazily created state does not count.
	h.exec(id, "warm", false, "true")
	h.readAll(h.c, id, "warm", false)
	h.wait(id, "warm")
	time.Sleep(100 * time.Millisecond)
	before := fdCount(t)
	for i := 0; i < 200; i++ {
		e := "x" + strconv.Itoa(i)
		h.exec(id, e, i%10 == 0, "sh", "-c", "echo "+e)
		if out := h.readAll(h.c, id, e, false); !strings.Contains(out, e) {
			t.Fatalf("exec %s output %q", e, out)
		}
		if code := h.wait(id, e); code != 0 {
			t.Fatalf("exec %s exit %d", e, code)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after, z := fdCount(t), zombies(t)
		if after <= before && z == 0 {
			t.Logf("fds before %d after %d, zombies %d", before, after, z)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 200 execs: fds %d -> %d, %d zombies", before, after, z)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Output is buffered in the agent: a client that goes away mid-stream,
// even with a read pending, loses nothing for the next one.
func TestReconnectLosesNoOutput(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	id := h.start("sh", "-c", "read x; i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done")
	first := h.dial(client.TTRPC)
	pending := make(chan error, 1)
	go func() {
		_, err := first.ReadStdout(context.Background(), &agentpb.ReadStreamRequest{ContainerId: id, Len: 100})
		pending <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the read block in the agent
	first.Close()
	if err := <-pending; err == nil {
		t.Fatal("read on a closed connection succeeded")
	}
	// The client gave up at once; the agent's read ends only when the server
	// sees the connection close. Output that a read still pending then takes
	// has nowhere to go, so wait for it to end first.
	for ended := false; !ended; {
		select {
		case m := <-h.failed:
			ended = strings.HasSuffix(m, "/ReadStdout")
		case <-time.After(10 * time.Second):
			t.Fatal("the agent's ReadStdout on the closed connection did not end")
		}
	}
	// Only now is there output: the abandoned read must not have taken any.
	if _, err := h.c.WriteStdin(ctx(t), &agentpb.WriteStreamRequest{ContainerId: id, Data: []byte("go\n")}); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	second := h.dial(client.TTRPC)
	for i := 0; i < 5; i++ {
		resp, err := second.ReadStdout(ctx(t), &agentpb.ReadStreamRequest{ContainerId: id, Len: 1000})
		if err != nil {
			t.Fatal(err)
		}
		got.Write(resp.Data)
	}
	second.Close()
	got.WriteString(h.readAll(h.c, id, "", false))
	lines := strings.Split(strings.TrimSuffix(got.String(), "\n"), "\n")
	if len(lines) != 3000 {
		t.Fatalf("got %d lines, want 3000", len(lines))
	}
	for i, l := range lines {
		if l != "line "+strconv.Itoa(i) {
			t.Fatalf("line %d is %q", i, l)
		}
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	// A healthy container that no bad call may harm.
	good := h.start("sleep", "1000")
	c := ctx(t)

	_, err := h.c.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: "nope"})
	wantCode(t, err, codes.NotFound)
	_, err = h.c.WaitProcess(c, &agentpb.WaitProcessRequest{ContainerId: "nope"})
	wantCode(t, err, codes.NotFound)
	_, err = h.c.WaitProcess(c, &agentpb.WaitProcessRequest{ContainerId: good, ExecId: "nope"})
	wantCode(t, err, codes.NotFound)
	_, err = h.c.SignalProcess(c, &agentpb.SignalProcessRequest{ContainerId: "nope", Signal: 9})
	wantCode(t, err, codes.NotFound)
	_, err = h.c.ReadStdout(c, &agentpb.ReadStreamRequest{ContainerId: "nope"})
	wantCode(t, err, codes.NotFound)
	_, err = h.c.StatsContainer(c, &agentpb.StatsContainerRequest{ContainerId: "nope"})
	wantCode(t, err, codes.NotFound)
	_, err = h.c.PauseContainer(c, &agentpb.PauseContainerRequest{ContainerId: "nope"})
	wantCode(t, err, codes.NotFound)
	_, err = h.c.RemoveContainer(c, &agentpb.RemoveContainerRequest{ContainerId: "nope"})
	wantCode(t, err, codes.NotFound)

	_, err = h.c.CreateContainer(c, &agentpb.CreateContainerRequest{ContainerId: good, OCI: h.spec(good, "true")})
	wantCode(t, err, codes.AlreadyExists)

	escape := filepath.Join(h.rootfs, "escape")
	if err := os.Symlink("../../../../../../../etc", escape); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*agentpb.Spec)
	}{
		{"cwd dotdot", func(s *agentpb.Spec) { s.Process.Cwd = "/../../etc" }},
		{"cwd symlink", func(s *agentpb.Spec) { s.Process.Cwd = "/escape" }},
		{"mount dotdot", func(s *agentpb.Spec) {
			s.Mounts = append(s.Mounts, &agentpb.Mount{Destination: "/../../tmp/x", Type: "tmpfs", Source: "tmpfs"})
		}},
		{"mount symlink", func(s *agentpb.Spec) {
			s.Mounts = append(s.Mounts, &agentpb.Mount{Destination: "/escape/x", Type: "tmpfs", Source: "tmpfs"})
		}},
		{"rootfs relative escape", func(s *agentpb.Spec) { s.Root.Path = "../../../../etc" }},
		{"rootfs is guest root", func(s *agentpb.Spec) { s.Root.Path = "/" }},
		{"rootfs missing", func(s *agentpb.Spec) { s.Root.Path = "/nonexistent/rootfs" }},
		{"no process", func(s *agentpb.Spec) { s.Process = nil }},
		{"no args", func(s *agentpb.Spec) { s.Process.Args = nil }},
		{"relative cwd", func(s *agentpb.Spec) { s.Process.Cwd = "tmp" }},
		{"no linux", func(s *agentpb.Spec) { s.Linux = nil }},
		{"bad namespace", func(s *agentpb.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, &agentpb.LinuxNamespace{Type: "bogus"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID()
			s := h.spec(id, "true")
			tc.mutate(s)
			_, err := h.c.CreateContainer(c, &agentpb.CreateContainerRequest{ContainerId: id, OCI: s})
			wantCode(t, err, codes.InvalidArgument)
			// The id stays free.
			_, err = h.c.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: id})
			wantCode(t, err, codes.NotFound)
		})
	}
	_, err = h.c.CreateContainer(c, &agentpb.CreateContainerRequest{ContainerId: "x"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.c.CreateContainer(c, &agentpb.CreateContainerRequest{ContainerId: "../x", OCI: h.spec("x", "true")})
	wantCode(t, err, codes.InvalidArgument)

	// The healthy container still runs and execs.
	h.exec(good, "after", false, "echo", "fine")
	if out := h.readAll(h.c, good, "after", false); out != "fine\n" {
		t.Errorf("exec after bad input: %q", out)
	}
}

func TestSandbox(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	hooks := t.TempDir()
	outDir := t.TempDir()
	for _, kind := range []string{"prestart", "poststart", "poststop"} {
		if err := os.MkdirAll(filepath.Join(hooks, kind), 0o755); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\ncat > " + filepath.Join(outDir, kind) + "\n"
		if err := os.WriteFile(filepath.Join(hooks, kind, "10-record"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := ctx(t)
	req := &agentpb.CreateSandboxRequest{
		Hostname: "sbx", Dns: []string{"nameserver 10.0.0.53", "192.0.2.1"},
		SandboxPidns: true, SandboxId: "sbx", GuestHookPath: hooks,
	}
	if _, err := h.c.CreateSandbox(c, req); err != nil {
		t.Fatal(err)
	}
	_, err := h.c.CreateSandbox(c, req)
	wantCode(t, err, codes.AlreadyExists)

	id := newID()
	h.create(id, h.spec(id, "sh", "-c", "cat /etc/resolv.conf; tr '\\0' ' ' < /proc/1/cmdline"))
	if _, err := os.Stat(filepath.Join(outDir, "prestart")); err != nil {
		t.Errorf("prestart hook did not run: %v", err)
	}
	if _, err := h.c.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	out := h.readAll(h.c, id, "", false)
	if !strings.Contains(out, "nameserver 10.0.0.53\nnameserver 192.0.2.1\n") {
		t.Errorf("container resolv.conf: %q", out)
	}
	h.wait(id, "")
	if b, err := os.ReadFile(filepath.Join(outDir, "poststart")); err != nil || !strings.Contains(string(b), id) {
		t.Errorf("poststart hook state %q: %v", b, err)
	}
	h.remove(id)
	if b, err := os.ReadFile(filepath.Join(outDir, "poststop")); err != nil || !strings.Contains(string(b), id) {
		t.Errorf("poststop hook state %q: %v", b, err)
	}

	// Containers asking for it share the sandbox's pid namespace.
	shared := newID()
	if _, err := h.c.CreateContainer(c, &agentpb.CreateContainerRequest{ContainerId: shared, SandboxPidns: true,
		OCI: h.spec(shared, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: shared}); err != nil {
		t.Fatal(err)
	}
	if out := h.readAll(h.c, shared, "", false); !strings.Contains(out, "__kguest_pause") {
		t.Errorf("pid 1 of a shared-pidns container: %q", out)
	}
	h.wait(shared, "")

	running := h.start("sleep", "1000")
	if _, err := h.c.DestroySandbox(c, &agentpb.DestroySandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err = h.c.WaitProcess(c, &agentpb.WaitProcessRequest{ContainerId: running})
	wantCode(t, err, codes.NotFound)
	if _, err := os.Stat(filepath.Join(h.run, "sandbox", "resolv.conf")); !os.IsNotExist(err) {
		t.Errorf("resolv.conf after destroy: %v", err)
	}
	// A new sandbox can follow.
	if _, err := h.c.CreateSandbox(c, &agentpb.CreateSandboxRequest{SandboxId: "again"}); err != nil {
		t.Fatal(err)
	}
}

// A kernel module that cannot be loaded fails CreateSandbox, which leaves no
// half-made sandbox behind.
func TestCreateSandboxModuleFailure(t *testing.T) {
	h := newHarness(t, client.TTRPC)
	c := ctx(t)
	_, err := h.c.CreateSandbox(c, &agentpb.CreateSandboxRequest{
		SandboxId:     "mods",
		KernelModules: []*agentpb.KernelModule{{Name: "kguest_no_such_module"}},
	})
	if err == nil {
		t.Fatal("loading a missing module succeeded")
	}
	if code := status.Code(err); code != codes.Internal && code != codes.FailedPrecondition {
		t.Fatalf("got %v", err)
	}
	if _, err := h.c.CreateSandbox(c, &agentpb.CreateSandboxRequest{SandboxId: "mods"}); err != nil {
		t.Fatalf("sandbox after a failed one: %v", err)
	}
}

// hostOutput and hostCombined run a host tool for a test. They go through
// the reaper, which the tests share with the agent under test: a plain
// exec.Cmd wait could find its child already reaped.
func hostOutput(name string, args ...string) ([]byte, error) {
	return reaper.Output(context.Background(), exec.Command(name, args...))
}

func hostCombined(name string, args ...string) ([]byte, error) {
	return reaper.CombinedOutput(context.Background(), exec.Command(name, args...))
}
