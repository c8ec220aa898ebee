package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kguest/kguest/init/reaper"
	"github.com/opencontainers/runc/libcontainer"
	// Device cgroup rules need the devices manager registered.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Config describes a container to create.
type Config struct {
	ID   string
	Spec *specs.Spec // validated; Root.Path absolute
	// InitExecID is the exec id the host gave the init process (Kata
	// hosts give the container id); "" and the container id name it too.
	InitExecID string
	// StateRoot is libcontainer's state directory (one subdirectory per
	// container).
	StateRoot string
	Reaper    *reaper.Reaper
	Log       *slog.Logger
	// OnOOM is called with the container id for every OOM kill in its
	// memory cgroup.
	OnOOM func(id string)
	// PipeSize, if set, is the capacity of stdio pipes
	// (agent.container_pipe_size).
	PipeSize int
}

// Container is a libcontainer container and its processes.
type Container struct {
	id     string
	spec   *specs.Spec
	lc     *libcontainer.Container
	reaper *reaper.Reaper
	log    *slog.Logger

	poststart []configs.Hook
	pipeSize  int

	mu       sync.Mutex
	init     *Process
	initExec string // the init's exec id, besides "" and the container id
	execs    map[string]*Process
	started  bool
	removed  bool
}

// Create converts the spec to a libcontainer config, creates the container
// and starts its init process, which waits on the exec fifo until Start.
func Create(cfg Config) (_ *Container, retErr error) {
	if err := Validate(cfg.Spec); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	lcfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:   cfg.ID,
		NoPivotRoot:  rootIsRamfs(),
		NoNewKeyring: false,
		Spec:         cfg.Spec,
	})
	if err != nil {
		return nil, invalidf("convert spec: %v", err)
	}
	c := &Container{
		id:       cfg.ID,
		spec:     cfg.Spec,
		reaper:   cfg.Reaper,
		log:      cfg.Log.With("container", cfg.ID),
		execs:    make(map[string]*Process),
		pipeSize: cfg.PipeSize,
		initExec: cfg.InitExecID,
	}
	// Poststart hooks run when the container is started, not created.
	if lcfg.Hooks != nil {
		c.poststart = lcfg.Hooks[configs.Poststart]
		delete(lcfg.Hooks, configs.Poststart)
	}
	if err := os.MkdirAll(cfg.StateRoot, 0o700); err != nil {
		return nil, err
	}
	lc, err := libcontainer.Create(cfg.StateRoot, cfg.ID, lcfg)
	if err != nil {
		if errors.Is(err, libcontainer.ErrExist) {
			return nil, fmt.Errorf("container %s: %w", cfg.ID, ErrAlreadyExists)
		}
		return nil, fmt.Errorf("create container: %w", err)
	}
	c.lc = lc
	defer func() {
		if retErr != nil {
			_ = c.reaper.Hold(lc.Destroy)
		}
	}()

	p, err := c.startProcess(cfg.Spec.Process, "", true)
	if err != nil {
		return nil, err
	}
	c.init = p
	if cfg.OnOOM != nil {
		if err := c.watchOOM(cfg.OnOOM); err != nil {
			c.log.Warn("OOM events unavailable", "err", err)
		}
	}
	return c, nil
}

// startProcess starts an init (held on the exec fifo) or a setns process,
// under the reaper lock so that its exit cannot be missed and libcontainer's
// own waits for its intermediate processes succeed.
func (c *Container) startProcess(sp *specs.Process, execID string, init bool) (*Process, error) {
	p := &Process{ID: execID, Init: init, TTY: sp.Terminal}
	lp := libcontainerProcess(sp, init)
	io, err := setupStdio(p, sp, lp, c.pipeSize)
	if err != nil {
		return nil, err
	}
	exit, err := c.reaper.Spawn(func() (int, error) {
		if err := c.lc.Start(lp); err != nil {
			return 0, err
		}
		return lp.Pid()
	})
	if err != nil {
		io.closeAll()
		return nil, fmt.Errorf("start process: %w", err)
	}
	p.exit = exit
	if err := io.finish(); err != nil {
		_ = unix.Kill(exit.Pid(), unix.SIGKILL)
		io.closeAll()
		return nil, err
	}
	go p.afterExit()
	return p, nil
}

// ID is the container id.
func (c *Container) ID() string { return c.id }

// Spec is the container's spec.
func (c *Container) Spec() *specs.Spec { return c.spec }

// Init is the container's init process.
func (c *Container) Init() *Process { return c.init }

// Start releases the init process held on the exec fifo and runs the
// poststart hooks.
func (c *Container) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return fmt.Errorf("container %s already started: %w", c.id, ErrAlreadyExists)
	}
	if err := c.lc.Exec(); err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	c.started = true
	if len(c.poststart) > 0 {
		st, err := c.lc.OCIState()
		if err != nil {
			return err
		}
		hooks := configs.Hooks{configs.Poststart: c.poststart}
		if err := c.reaper.Hold(func() error { return hooks.Run(configs.Poststart, st) }); err != nil {
			_ = c.Signal("", unix.SIGKILL, true)
			return fmt.Errorf("poststart hook: %w", err)
		}
	}
	return nil
}

// Exec starts another process in the container's namespaces and cgroup.
func (c *Container) Exec(execID string, sp *specs.Process) (*Process, error) {
	if execID == "" {
		return nil, invalidf("empty exec id")
	}
	if c.isInit(execID) {
		return nil, fmt.Errorf("exec id %s names the init process: %w", execID, ErrAlreadyExists)
	}
	if err := ValidateProcess(c.spec.Root.Path, sp); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[execID]; ok {
		return nil, fmt.Errorf("exec id %s: %w", execID, ErrAlreadyExists)
	}
	if c.init.exit.Exited() {
		return nil, fmt.Errorf("container %s: %w", c.id, ErrNotRunning)
	}
	p, err := c.startProcess(sp, execID, false)
	if err != nil {
		return nil, err
	}
	c.execs[execID] = p
	return p, nil
}

func (c *Container) isInit(execID string) bool {
	return execID == "" || execID == c.id || execID == c.initExec
}

// Process finds a process by exec id; "" (or the container id, as some
// runtimes send) is the init process.
func (c *Container) Process(execID string) (*Process, error) {
	if c.isInit(execID) {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("process %s in container %s: %w", execID, c.id, ErrNotFound)
	}
	return p, nil
}

// Signal sends sig to a process. SIGTERM to an init process that does not
// catch it becomes SIGKILL (init ignores unhandled signals). With all set,
// every process of the container's cgroup gets it too.
func (c *Container) Signal(execID string, sig unix.Signal, all bool) error {
	p, err := c.Process(execID)
	if err != nil {
		return err
	}
	if p.Init && sig == unix.SIGTERM && !catchesSignal(p.Pid(), sig) {
		sig = unix.SIGKILL
	}
	if !p.exit.Exited() {
		if err := unix.Kill(p.Pid(), sig); err != nil && err != unix.ESRCH {
			return fmt.Errorf("signal %d: %w", p.Pid(), err)
		}
	}
	if all {
		pids, err := c.lc.Processes()
		if err == nil {
			for _, pid := range pids {
				_ = unix.Kill(pid, sig)
			}
		}
		if sig == unix.SIGKILL {
			// A frozen cgroup delivers SIGKILL only once thawed.
			if st, err := c.lc.Status(); err == nil && st == libcontainer.Paused {
				_ = c.lc.Resume()
			}
		}
	}
	return nil
}

// Pause freezes the container.
func (c *Container) Pause() error { return c.lc.Pause() }

// Resume thaws the container.
func (c *Container) Resume() error { return c.lc.Resume() }

// Pids lists the pids in the container's cgroup.
func (c *Container) Pids() ([]int, error) { return c.lc.Processes() }

// Stats returns libcontainer's statistics (cgroup and network).
func (c *Container) Stats() (*libcontainer.Stats, error) { return c.lc.Stats() }

// Status is libcontainer's view of the container.
func (c *Container) Status() (libcontainer.Status, error) { return c.lc.Status() }

// Update applies new resource limits.
func (c *Container) Update(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	cfg := c.lc.Config()
	if err := applyResources(cfg.Cgroups.Resources, r); err != nil {
		return err
	}
	return c.lc.Set(cfg)
}

// Destroy removes the container the way Kata's RemoveContainer does: it
// kills every process at once, waits for the init process to be gone (at
// most timeout, or as long as ctx allows when timeout is 0), then removes
// the cgroup and state (running poststop hooks) and releases all stdio. If
// the wait fails the container stays, so that removing it can be retried.
func (c *Container) Destroy(ctx context.Context, timeout time.Duration) error {
	c.mu.Lock()
	if c.removed {
		c.mu.Unlock()
		return nil
	}
	c.removed = true
	c.mu.Unlock()
	_ = c.Signal("", unix.SIGKILL, true)
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var waitErr error
	select {
	case <-c.init.exit.Done():
	case <-expired:
		waitErr = context.DeadlineExceeded
	case <-ctx.Done():
		waitErr = ctx.Err()
	}
	if waitErr != nil {
		c.mu.Lock()
		c.removed = false
		c.mu.Unlock()
		return fmt.Errorf("container %s: init %d still there after SIGKILL: %w", c.id, c.init.Pid(), waitErr)
	}
	err := c.reaper.Hold(c.lc.Destroy)
	c.mu.Lock()
	procs := []*Process{c.init}
	for _, p := range c.execs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		p.release()
	}
	if err != nil {
		return fmt.Errorf("destroy container %s: %w", c.id, err)
	}
	return nil
}

// rootIsRamfs tells whether / is an initramfs, where pivot_root fails.
func rootIsRamfs() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return false
	}
	return st.Type == unix.RAMFS_MAGIC || st.Type == unix.TMPFS_MAGIC
}

// ResolveRoot makes a spec's root path absolute: a relative path is taken
// relative to the bundle directory.
func ResolveRoot(spec *specs.Spec, bundle string) {
	if spec.Root != nil && spec.Root.Path != "" && !filepath.IsAbs(spec.Root.Path) {
		spec.Root.Path = filepath.Join(bundle, spec.Root.Path)
	}
}
