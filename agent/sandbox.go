package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kguest/kguest/agent/container"
	"github.com/kguest/kguest/init/reaper"
	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Default locations, as Kata lays them out in the guest.
const (
	// DefaultRunDir holds the sandbox files (resolv.conf) and libcontainer
	// state.
	DefaultRunDir = "/run/kata-containers"
	// DefaultContainersDir is where the host puts container bundles:
	// <dir>/<id>/rootfs.
	DefaultContainersDir = "/run/kata-containers/shared/containers"
)

// sandbox is the container side of the agent: the sandbox settings and
// every container, with their processes.
type sandbox struct {
	log    *slog.Logger
	reaper *reaper.Reaper
	oom    *oomQueue

	runDir        string // sandbox files and libcontainer state
	containersDir string // host-provided bundles
	pipeSize      int

	mu         sync.Mutex
	created    bool
	id         string
	hostname   string
	resolvConf string // path of the sandbox resolv.conf, if DNS was given
	hookPath   string
	pause      *pauseProcess // holds the shared namespaces
	sharedPid  bool          // containers may join pause's pid namespace
	containers map[string]*container.Container
	pending    map[string]bool // ids being created
}

// SandboxConfig places the container side of the agent; zero values take
// Kata's guest defaults.
type SandboxConfig struct {
	RunDir        string
	ContainersDir string
	Log           *slog.Logger
	// PipeSize is the capacity of container stdio pipes; 0 keeps the
	// kernel's default.
	PipeSize int
}

// sandboxState is the Agent's field for the container side, set up on
// first use.
type sandboxState struct {
	mu  sync.Mutex
	cfg SandboxConfig
	s   *sandbox
}

// ConfigureSandbox places the container side of the agent; call it before
// serving (tests use it to stay out of the guest's paths).
func (a *Agent) ConfigureSandbox(cfg SandboxConfig) {
	a.containers.mu.Lock()
	a.containers.cfg = cfg
	a.containers.mu.Unlock()
}

// sandbox returns the container side of the agent, starting the reaper on
// first use.
func (a *Agent) sandbox() (*sandbox, error) {
	st := &a.containers
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s == nil {
		s, err := newSandbox(st.cfg)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "container support: %v", err)
		}
		st.s = s
	}
	return st.s, nil
}

func newSandbox(cfg SandboxConfig) (*sandbox, error) {
	if cfg.RunDir == "" {
		cfg.RunDir = DefaultRunDir
	}
	if cfg.ContainersDir == "" {
		cfg.ContainersDir = DefaultContainersDir
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	r, err := reaper.Start(cfg.Log)
	if err != nil {
		return nil, err
	}
	return &sandbox{
		log:           cfg.Log,
		reaper:        r,
		oom:           newOOMQueue(),
		runDir:        cfg.RunDir,
		containersDir: cfg.ContainersDir,
		pipeSize:      cfg.PipeSize,
		containers:    make(map[string]*container.Container),
		pending:       make(map[string]bool),
	}, nil
}

func (s *sandbox) stateRoot() string { return filepath.Join(s.runDir, "libcontainer") }

// get finds a container.
func (s *sandbox) get(id string) (*container.Container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %q not found", id)
	}
	return c, nil
}

// CreateSandbox sets up the sandbox: hostname, DNS, guest hooks, kernel
// modules, sandbox storages and an optional shared pid namespace.
func (a *Agent) CreateSandbox(ctx context.Context, req *agentpb.CreateSandboxRequest) (*emptypb.Empty, error) {
	s, err := a.sandbox()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.created {
		return nil, status.Errorf(codes.AlreadyExists, "sandbox %q already created", s.id)
	}
	for _, m := range req.KernelModules {
		if err := s.loadModule(ctx, m); err != nil {
			return nil, err
		}
	}
	if req.GuestHookPath != "" {
		if !filepath.IsAbs(req.GuestHookPath) {
			return nil, status.Errorf(codes.InvalidArgument, "guest hook path %q is not absolute", req.GuestHookPath)
		}
	}
	if err := os.MkdirAll(s.runDir, 0o755); err != nil {
		return nil, status.Errorf(codes.Internal, "sandbox dir: %v", err)
	}
	var undo []func()
	fail := func(err error) (*emptypb.Empty, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, err
	}
	if req.Hostname != "" {
		if err := setHostname(req.Hostname); err != nil {
			return fail(status.Errorf(codes.Internal, "set hostname: %v", err))
		}
	}
	resolv := ""
	if len(req.Dns) > 0 {
		p, err := s.writeResolvConf(req.Dns)
		if err != nil {
			return fail(err)
		}
		resolv = p
		undo = append(undo, func() { os.Remove(p) })
	}
	rollback, err := a.setupStorages(ctx, "", req.Storages)
	if err != nil {
		return fail(err)
	}
	if rollback != nil {
		undo = append(undo, rollback)
	}
	pause, err := startPause(s.reaper)
	if err != nil {
		return fail(status.Errorf(codes.Internal, "sandbox namespaces: %v", err))
	}
	s.created = true
	s.id = req.SandboxId
	s.hostname = req.Hostname
	s.resolvConf = resolv
	s.hookPath = req.GuestHookPath
	s.pause = pause
	s.sharedPid = req.SandboxPidns
	s.log.Info("sandbox created", "id", req.SandboxId, "hostname", req.Hostname, "pidns", req.SandboxPidns)
	return &emptypb.Empty{}, nil
}

// DestroySandbox kills and removes every container, stops the shared pid
// namespace, releases the sandbox storages and syncs.
func (a *Agent) DestroySandbox(ctx context.Context, _ *agentpb.DestroySandboxRequest) (*emptypb.Empty, error) {
	s, err := a.sandbox()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	ids := make([]string, 0, len(s.containers))
	for id := range s.containers {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	var errs []error
	for _, id := range ids {
		if err := a.removeContainer(ctx, id, 0); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	if s.pause != nil {
		s.pause.stop()
		s.pause = nil
		s.sharedPid = false
	}
	if s.resolvConf != "" {
		_ = os.Remove(s.resolvConf)
		s.resolvConf = ""
	}
	s.created = false
	s.id, s.hostname, s.hookPath = "", "", ""
	s.mu.Unlock()
	if err := a.releaseStorages(""); err != nil {
		errs = append(errs, err)
	}
	unix.Sync()
	releaser.request()
	if err := errors.Join(errs...); err != nil {
		return nil, status.Errorf(codes.Internal, "destroy sandbox: %v", err)
	}
	return &emptypb.Empty{}, nil
}

// setHostname sets the guest's hostname; on a host (not PID 1) the agent
// shares the machine's UTS namespace and leaves it alone.
func setHostname(name string) error {
	if os.Getpid() != 1 {
		return nil
	}
	return unix.Sethostname([]byte(name))
}

// writeResolvConf writes the sandbox resolv.conf that containers get
// bind-mounted on /etc/resolv.conf. Entries are the lines of the host's
// resolv.conf (Kata splits the file on newlines, so blank lines come too and
// are skipped) or bare nameserver addresses.
func (s *sandbox) writeResolvConf(dns []string) (string, error) {
	var b strings.Builder
	for _, d := range dns {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if strings.ContainsAny(d, "\n\r\x00") {
			return "", status.Errorf(codes.InvalidArgument, "invalid DNS entry %q", d)
		}
		if net.ParseIP(d) != nil {
			d = "nameserver " + d
		}
		b.WriteString(d + "\n")
	}
	dir := filepath.Join(s.runDir, "sandbox")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", status.Errorf(codes.Internal, "sandbox dir: %v", err)
	}
	p := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		return "", status.Errorf(codes.Internal, "write resolv.conf: %v", err)
	}
	return p, nil
}

// loadModule loads a kernel module with modprobe.
func (s *sandbox) loadModule(ctx context.Context, m *agentpb.KernelModule) error {
	if m.GetName() == "" {
		return status.Error(codes.InvalidArgument, "kernel module without a name")
	}
	modprobe, err := exec.LookPath("modprobe")
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "load module %s: modprobe not found", m.Name)
	}
	var out strings.Builder
	cmd := exec.Command(modprobe, append([]string{m.Name}, m.Parameters...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	code, err := s.reaper.Run(ctx, cmd)
	if err != nil {
		return status.Errorf(codes.Internal, "modprobe %s: %v", m.Name, err)
	}
	if code != 0 {
		return status.Errorf(codes.Internal, "modprobe %s: exit %d: %s", m.Name, code, strings.TrimSpace(out.String()))
	}
	return nil
}

// guestHooks lists the executables in <hookPath>/<kind>, in name order.
func guestHooks(hookPath, kind string) []specs.Hook {
	if hookPath == "" {
		return nil
	}
	dir := filepath.Join(hookPath, kind)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	hooks := make([]specs.Hook, 0, len(names))
	for _, n := range names {
		p := filepath.Join(dir, n)
		hooks = append(hooks, specs.Hook{Path: p, Args: []string{p, kind}})
	}
	return hooks
}

// addGuestHooks appends the sandbox's guest hooks to the spec.
func addGuestHooks(spec *specs.Spec, hookPath string) {
	pre, post, stop := guestHooks(hookPath, "prestart"), guestHooks(hookPath, "poststart"), guestHooks(hookPath, "poststop")
	if len(pre)+len(post)+len(stop) == 0 {
		return
	}
	if spec.Hooks == nil {
		spec.Hooks = &specs.Hooks{}
	}
	spec.Hooks.Prestart = append(spec.Hooks.Prestart, pre...) //nolint:staticcheck // Kata's guest hooks are prestart hooks
	spec.Hooks.Poststart = append(spec.Hooks.Poststart, post...)
	spec.Hooks.Poststop = append(spec.Hooks.Poststop, stop...)
}

// pauseProcess holds the sandbox's shared namespaces.
type pauseProcess struct {
	exit *reaper.Exit
}

func startPause(r *reaper.Reaper) (*pauseProcess, error) {
	cmd := container.PauseCommand()
	e, err := r.Start(cmd)
	if err != nil {
		return nil, err
	}
	go func() { <-e.Done(); _ = cmd.Wait() }()
	return &pauseProcess{exit: e}, nil
}

// nsPath is the path of one of its namespaces ("pid", "ipc", "uts").
func (p *pauseProcess) nsPath(kind string) string {
	return fmt.Sprintf("/proc/%d/ns/%s", p.exit.Pid(), kind)
}

func (p *pauseProcess) stop() {
	_ = unix.Kill(p.exit.Pid(), unix.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = p.exit.Wait(ctx)
}
