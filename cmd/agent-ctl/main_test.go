package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kguest/kguest/protocols/agentpb"
)

// fakeAgent implements enough of the agent API, in memory, to drive every
// agent-ctl verb. Its "processes" understand two commands:
//
//	emit OUT ERR CODE  writes OUT to stdout, ERR to stderr, exits CODE
//	cat                copies stdin to stdout until stdin is closed or a signal arrives
type fakeAgent struct {
	agentpb.UnimplementedAgentServiceServer
	agentpb.UnimplementedHealthServer

	mu         sync.Mutex
	sandbox    *agentpb.CreateSandboxRequest
	containers map[string]*fakeContainer
	removed    []string
	signals    []uint32
}

type fakeContainer struct {
	req   *agentpb.CreateContainerRequest
	procs map[string]*fakeProc
}

type fakeProc struct {
	args           []string
	stdinR         *io.PipeReader
	stdinW         *io.PipeWriter
	stdoutR        *io.PipeReader
	stdoutW        *io.PipeWriter
	stderrR        *io.PipeReader
	stderrW        *io.PipeWriter
	done           chan struct{}
	status         int32
	started        bool
	killed         chan uint32
	closeStdinOnce sync.Once
}

func newFakeProc(args []string) *fakeProc {
	p := &fakeProc{args: args, done: make(chan struct{}), killed: make(chan uint32, 1)}
	p.stdinR, p.stdinW = io.Pipe()
	p.stdoutR, p.stdoutW = io.Pipe()
	p.stderrR, p.stderrW = io.Pipe()
	return p
}

func (p *fakeProc) start() {
	p.started = true
	go func() {
		defer close(p.done)
		defer p.stdoutW.Close()
		defer p.stderrW.Close()
		switch p.args[0] {
		case "emit":
			p.stdoutW.Write([]byte(p.args[1]))
			p.stderrW.Write([]byte(p.args[2]))
			n, _ := strconv.Atoi(p.args[3])
			p.status = int32(n)
		case "cat":
			copied := make(chan struct{})
			go func() { io.Copy(p.stdoutW, p.stdinR); close(copied) }()
			select {
			case <-copied:
			case sig := <-p.killed:
				p.stdinR.Close()
				p.status = 128 + int32(sig)
			}
		default:
			p.stderrW.Write([]byte("unknown command\n"))
			p.status = 127
		}
	}()
}

func newFakeAgent() *fakeAgent { return &fakeAgent{containers: map[string]*fakeContainer{}} }

func (a *fakeAgent) Check(context.Context, *agentpb.CheckRequest) (*agentpb.HealthCheckResponse, error) {
	return &agentpb.HealthCheckResponse{Status: agentpb.HealthCheckResponse_SERVING}, nil
}

func (a *fakeAgent) Version(context.Context, *agentpb.CheckRequest) (*agentpb.VersionCheckResponse, error) {
	return &agentpb.VersionCheckResponse{AgentVersion: "9.9.9", GrpcVersion: "1"}, nil
}

func (a *fakeAgent) GetGuestDetails(_ context.Context, r *agentpb.GuestDetailsRequest) (*agentpb.GuestDetailsResponse, error) {
	resp := &agentpb.GuestDetailsResponse{AgentDetails: &agentpb.AgentDetails{Version: "9.9.9"}}
	if r.MemBlockSize {
		resp.MemBlockSizeBytes = 128 << 20
	}
	return resp, nil
}

func (a *fakeAgent) CreateSandbox(_ context.Context, r *agentpb.CreateSandboxRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sandbox != nil {
		return nil, status.Error(codes.AlreadyExists, "sandbox already exists")
	}
	a.sandbox = r
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) DestroySandbox(context.Context, *agentpb.DestroySandboxRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sandbox == nil {
		return nil, status.Error(codes.FailedPrecondition, "no sandbox")
	}
	a.sandbox = nil
	a.containers = map[string]*fakeContainer{}
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) proc(cid, eid string) (*fakeProc, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.containers[cid]
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "container %q not found", cid)
	}
	if eid == "" {
		eid = cid
	}
	p := c.procs[eid]
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "process %q not found", eid)
	}
	return p, nil
}

func (a *fakeAgent) CreateContainer(_ context.Context, r *agentpb.CreateContainerRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sandbox == nil {
		return nil, status.Error(codes.FailedPrecondition, "no sandbox")
	}
	if a.containers[r.ContainerId] != nil {
		return nil, status.Errorf(codes.AlreadyExists, "container %q exists", r.ContainerId)
	}
	if r.ExecId != r.ContainerId {
		return nil, status.Errorf(codes.InvalidArgument, "init exec id %q", r.ExecId)
	}
	a.containers[r.ContainerId] = &fakeContainer{req: r, procs: map[string]*fakeProc{r.ExecId: newFakeProc(r.OCI.Process.Args)}}
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) StartContainer(_ context.Context, r *agentpb.StartContainerRequest) (*emptypb.Empty, error) {
	p, err := a.proc(r.ContainerId, "")
	if err != nil {
		return nil, err
	}
	p.start()
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) ExecProcess(_ context.Context, r *agentpb.ExecProcessRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.containers[r.ContainerId]
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "container %q not found", r.ContainerId)
	}
	p := newFakeProc(r.Process.Args)
	c.procs[r.ExecId] = p
	p.start()
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) RemoveContainer(_ context.Context, r *agentpb.RemoveContainerRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.containers[r.ContainerId] == nil {
		return nil, status.Errorf(codes.NotFound, "container %q not found", r.ContainerId)
	}
	delete(a.containers, r.ContainerId)
	a.removed = append(a.removed, r.ContainerId)
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) SignalProcess(_ context.Context, r *agentpb.SignalProcessRequest) (*emptypb.Empty, error) {
	p, err := a.proc(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.signals = append(a.signals, r.Signal)
	a.mu.Unlock()
	select {
	case p.killed <- r.Signal:
	default:
	}
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) WaitProcess(ctx context.Context, r *agentpb.WaitProcessRequest) (*agentpb.WaitProcessResponse, error) {
	p, err := a.proc(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	if !p.started {
		return nil, status.Error(codes.FailedPrecondition, "not started")
	}
	select {
	case <-p.done:
		return &agentpb.WaitProcessResponse{Status: p.status}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func read(r io.Reader, n uint32) (*agentpb.ReadStreamResponse, error) {
	buf := make([]byte, n)
	k, err := r.Read(buf)
	if k == 0 && err != nil {
		return nil, err // io.EOF reaches the client as Unknown "EOF"
	}
	return &agentpb.ReadStreamResponse{Data: buf[:k]}, nil
}

func (a *fakeAgent) ReadStdout(_ context.Context, r *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	p, err := a.proc(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	return read(p.stdoutR, r.Len)
}

func (a *fakeAgent) ReadStderr(_ context.Context, r *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	p, err := a.proc(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	return read(p.stderrR, r.Len)
}

func (a *fakeAgent) WriteStdin(_ context.Context, r *agentpb.WriteStreamRequest) (*agentpb.WriteStreamResponse, error) {
	p, err := a.proc(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	n, err := p.stdinW.Write(r.Data)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, "stdin closed")
	}
	return &agentpb.WriteStreamResponse{Len: uint32(n)}, nil
}

func (a *fakeAgent) CloseStdin(_ context.Context, r *agentpb.CloseStdinRequest) (*emptypb.Empty, error) {
	p, err := a.proc(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	p.closeStdinOnce.Do(func() { p.stdinW.Close() })
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) StatsContainer(_ context.Context, r *agentpb.StatsContainerRequest) (*agentpb.StatsContainerResponse, error) {
	if _, err := a.proc(r.ContainerId, ""); err != nil {
		return nil, err
	}
	return &agentpb.StatsContainerResponse{CgroupStats: &agentpb.CgroupStats{
		MemoryStats: &agentpb.MemoryStats{Usage: &agentpb.MemoryData{Usage: 4096}},
	}}, nil
}

func (a *fakeAgent) ListProcesses(_ context.Context, r *agentpb.ListProcessesRequest) (*agentpb.ListProcessesResponse, error) {
	p, err := a.proc(r.ContainerId, "")
	if err != nil {
		return nil, err
	}
	return &agentpb.ListProcessesResponse{ProcessList: []byte("PID CMD\n1   " + strings.Join(p.args, " ") + " (" + r.Format + ")\n")}, nil
}

// serve starts the fake on a unix socket with the given protocol.
func serve(t *testing.T, a *fakeAgent, proto string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	switch proto {
	case "grpc":
		s := grpc.NewServer()
		agentpb.RegisterAgentServiceServer(s, a)
		agentpb.RegisterHealthServer(s, a)
		go s.Serve(l)
		t.Cleanup(s.Stop)
	case "ttrpc":
		s, err := ttrpc.NewServer()
		if err != nil {
			t.Fatal(err)
		}
		agentpb.RegisterTTRPCAgentServiceService(s, a)
		agentpb.RegisterTTRPCHealthService(s, a)
		go s.Serve(context.Background(), l)
		t.Cleanup(func() { s.Close() })
	}
	return "unix://" + sock
}

type result struct {
	code           int
	stdout, stderr string
}

func ctl(stdin string, args ...string) result {
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func TestVerbs(t *testing.T) {
	rootfs := t.TempDir()
	for _, proto := range []string{"grpc", "ttrpc"} {
		t.Run(proto, func(t *testing.T) {
			a := newFakeAgent()
			addr := serve(t, a, proto)
			g := []string{"--addr", addr, "--proto", proto, "--timeout", "10s"}
			steps := []struct {
				name       string
				stdin      string
				args       []string
				wantCode   int
				wantOut    string // substring of stdout
				wantErr    string // substring of stderr
				exactOut   bool
				afterCheck func(t *testing.T)
			}{
				{name: "check", args: []string{"check"}, wantOut: "SERVING\n", exactOut: true},
				{name: "version", args: []string{"version"}, wantOut: "agent version: 9.9.9\napi version: 1\n", exactOut: true},
				{name: "call guest details", args: []string{"call", "GetGuestDetails", `{"memBlockSize":true}`}, wantOut: `"memBlockSizeBytes": "134217728"`},
				{name: "call health by service", args: []string{"call", "Health.Check"}, wantOut: `"status": "SERVING"`},
				{name: "call by method path", args: []string{"call", "grpc.Health/Version"}, wantOut: `"agentVersion": "9.9.9"`},
				{name: "call not found", args: []string{"call", "StartContainer", `{"containerId":"x"}`}, wantCode: 1, wantErr: "agent-ctl: NotFound: container \"x\" not found\n"},
				{name: "call unimplemented", args: []string{"call", "SetPolicy"}, wantCode: 1, wantErr: "agent-ctl: Unimplemented: "},
				{name: "call bad json", args: []string{"call", "StartContainer", `{"nope":1}`}, wantCode: 2, wantErr: "request for StartContainer"},
				{name: "call unknown rpc", args: []string{"call", "Frobnicate"}, wantCode: 2, wantErr: `unknown RPC "Frobnicate"`},
				{name: "create-sandbox", args: []string{"create-sandbox", "--hostname", "h1", "--dns", "1.1.1.1", "--dns", "search example.com"},
					afterCheck: func(t *testing.T) {
						if a.sandbox.Hostname != "h1" || strings.Join(a.sandbox.Dns, "|") != "nameserver 1.1.1.1|search example.com" {
							t.Errorf("sandbox request = %v", a.sandbox)
						}
					}},
				{name: "create-sandbox again", args: []string{"create-sandbox"}, wantCode: 1, wantErr: "AlreadyExists"},
				{name: "run", args: []string{"run", "--id", "r1", "--rootfs", rootfs, "--env", "FOO=bar", "--memory", "33554432", "--", "emit", "hello\n", "oops\n", "7"},
					wantCode: 7, wantOut: "hello\n", wantErr: "oops\n", exactOut: true,
					afterCheck: func(t *testing.T) {
						if a.removed[len(a.removed)-1] != "r1" {
							t.Errorf("run did not remove its container: %v", a.removed)
						}
					}},
				{name: "run stdin", stdin: "from stdin\n", args: []string{"run", "--rootfs", rootfs, "--", "cat"}, wantOut: "from stdin\n", exactOut: true},
				{name: "create", args: []string{"create", "--id", "c1", "--rootfs", rootfs, "--memory", "1048576", "--env", "PATH=/bin", "--", "cat"},
					afterCheck: func(t *testing.T) {
						a.mu.Lock()
						defer a.mu.Unlock()
						spec := a.containers["c1"].req.OCI
						if spec.Root.Path != rootfs || spec.Linux.Resources.Memory.GetLimit() != 1048576 {
							t.Errorf("spec root %v memory %v", spec.Root, spec.Linux.Resources.Memory)
						}
						if strings.Join(spec.Process.Env, " ") != "PATH=/bin" {
							t.Errorf("env = %v", spec.Process.Env)
						}
					}},
				{name: "create duplicate", args: []string{"create", "--id", "c1", "--rootfs", rootfs, "--", "cat"}, wantCode: 1, wantErr: "AlreadyExists"},
				{name: "start", args: []string{"start", "--id", "c1"}},
				{name: "exec", args: []string{"exec", "--id", "c1", "--exec-id", "e1", "--", "emit", "out", "err", "3"}, wantCode: 3, wantOut: "out", wantErr: "err", exactOut: true},
				{name: "exec stdin", stdin: "piped", args: []string{"exec", "--id", "c1", "--", "cat"}, wantOut: "piped", exactOut: true},
				{name: "stats", args: []string{"stats", "--id", "c1"}, wantOut: `"usage": "4096"`},
				{name: "ps", args: []string{"ps", "--id", "c1"}, wantOut: "1   cat (table)\n"},
				{name: "kill", args: []string{"kill", "--id", "c1", "--signal", "KILL"},
					afterCheck: func(t *testing.T) {
						if a.signals[len(a.signals)-1] != 9 {
							t.Errorf("signal = %v", a.signals)
						}
					}},
				{name: "wait", args: []string{"wait", "--id", "c1"}, wantCode: 137, wantOut: "137\n", exactOut: true},
				{name: "rm", args: []string{"rm", "--id", "c1", "--timeout", "5"}},
				{name: "rm gone", args: []string{"rm", "--id", "c1"}, wantCode: 1, wantErr: "agent-ctl: NotFound: container \"c1\" not found"},
				{name: "kill bad signal", args: []string{"kill", "--id", "c1", "--signal", "NOPE"}, wantCode: 2, wantErr: "unknown signal"},
				{name: "create without rootfs", args: []string{"create", "--id", "c2", "--", "cat"}, wantCode: 2, wantErr: "--rootfs is required"},
				{name: "run without command", args: []string{"run", "--rootfs", rootfs}, wantCode: 2, wantErr: "no command"},
				{name: "destroy-sandbox", args: []string{"destroy-sandbox"}},
			}
			for _, st := range steps {
				r := ctl(st.stdin, append(g, st.args...)...)
				if r.code != st.wantCode {
					t.Errorf("%s: exit %d, want %d (stdout %q, stderr %q)", st.name, r.code, st.wantCode, r.stdout, r.stderr)
				}
				if st.exactOut && r.stdout != st.wantOut || !strings.Contains(r.stdout, st.wantOut) {
					t.Errorf("%s: stdout %q, want %q", st.name, r.stdout, st.wantOut)
				}
				if !strings.Contains(r.stderr, st.wantErr) {
					t.Errorf("%s: stderr %q, want %q", st.name, r.stderr, st.wantErr)
				}
				if st.afterCheck != nil {
					st.afterCheck(t)
				}
			}
		})
	}
}

func TestAddrFromEnvironment(t *testing.T) {
	addr := serve(t, newFakeAgent(), "ttrpc")
	t.Setenv("KATA_AGENT_ADDR", addr)
	if r := ctl("", "check"); r.code != 0 || r.stdout != "SERVING\n" {
		t.Fatalf("check via KATA_AGENT_ADDR: %+v", r)
	}
	if r := ctl("", "wait-ready", "--timeout", "5s"); r.code != 0 || !strings.HasPrefix(r.stdout, "ready after") {
		t.Fatalf("wait-ready: %+v", r)
	}
	t.Setenv("KATA_AGENT_ADDR", "")
	if r := ctl("", "check"); r.code != 2 || !strings.Contains(r.stderr, "no agent address") {
		t.Fatalf("check without address: %+v", r)
	}
}

func TestWaitReadyTimesOut(t *testing.T) {
	sock := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	r := ctl("", "--addr", sock, "wait-ready", "--timeout", "100ms")
	if r.code != 1 || !strings.Contains(r.stderr, "not ready") {
		t.Fatalf("wait-ready on nothing: %+v", r)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{nil, 2, "Verbs:"},
		{[]string{"frob"}, 2, `unknown verb "frob"`},
		{[]string{"--proto", "http", "check"}, 2, "unknown protocol"},
		{[]string{"run", "--help"}, 0, "Usage: agent-ctl [GLOBAL OPTIONS] run"},
		{[]string{"run", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"--addr", "unix:///nonexistent.sock", "update", "--id", "x"}, 2, "update needs --memory"},
		{[]string{"--addr", "unix:///nonexistent.sock", "pause"}, 2, "--id is required"},
	}
	for _, tc := range tests {
		r := ctl("", tc.args...)
		if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.wantErr) {
			t.Errorf("%v: %+v, want exit %d and %q", tc.args, r, tc.wantCode, tc.wantErr)
		}
	}
}

func TestParseSignal(t *testing.T) {
	tests := map[string]uint32{"9": 9, "KILL": 9, "SIGTERM": 15, "term": 15, "hup": 1}
	for in, want := range tests {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"0", "65", "NOPE", ""} {
		if _, err := parseSignal(bad); err == nil {
			t.Errorf("parseSignal(%q) accepted", bad)
		}
	}
}

func TestDescribe(t *testing.T) {
	st := status.Error(codes.NotFound, `container "x" not found`)
	tests := []struct {
		err  error
		want string
	}{
		{st, `NotFound: container "x" not found`},
		{fmt.Errorf("start container x: %w", st), `NotFound: start container x: container "x" not found`},
		{io.ErrUnexpectedEOF, "unexpected EOF"},
	}
	for _, tc := range tests {
		if got := describe(tc.err); got != tc.want {
			t.Errorf("describe(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
