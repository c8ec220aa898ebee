// Package agent implements the Kata agent API: one Agent serves every RPC
// of AgentService, on gRPC and ttrpc alike, with handlers grouped by concern
// in the files of this package.
package agent

import (
	"log/slog"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
)

// Default guest locations, as Kata lays them out.
const (
	// DefaultSandboxDir holds per-sandbox state shared with the host.
	DefaultSandboxDir = "/run/kata-containers/sandbox"
	// DefaultHotplugTimeout is how long to wait for a hot-plugged device
	// (agent.hotplug_timeout).
	DefaultHotplugTimeout = 3 * time.Second
)

// Config is what the handlers need from the agent's configuration; zero
// values take Kata's guest defaults.
type Config struct {
	// InitDaemon is true when the agent is the guest's init (PID 1).
	InitDaemon bool
	// HotplugTimeout bounds waits for hot-plugged devices, CPUs and memory.
	HotplugTimeout time.Duration
	// ContainerPipeSize is the size of container stdio pipes; 0 keeps the
	// kernel default.
	ContainerPipeSize uint32
	// RunDir holds sandbox files and libcontainer state
	// (/run/kata-containers).
	RunDir string
	// ContainersDir is where the host shares container bundles
	// (/run/kata-containers/shared/containers).
	ContainersDir string
	// SandboxDir is the shared sandbox directory
	// (/run/kata-containers/sandbox).
	SandboxDir string
	// SysfsRoot is /sys; tests point it elsewhere.
	SysfsRoot string
	// Log receives the handlers' logs; slog.Default() if nil.
	Log *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.HotplugTimeout <= 0 {
		c.HotplugTimeout = DefaultHotplugTimeout
	}
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if c.ContainersDir == "" {
		c.ContainersDir = DefaultContainersDir
	}
	if c.SandboxDir == "" {
		c.SandboxDir = DefaultSandboxDir
	}
	if c.SysfsRoot == "" {
		c.SysfsRoot = "/sys"
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Agent implements agentpb.AgentService. RPCs without a handler answer
// Unimplemented through the embedded type. The zero value is usable and
// takes the default Config.
type Agent struct {
	agentpb.UnimplementedAgentServiceServer

	cfg Config

	// State by concern: one field each, set up on first use by its own file.
	containers sandboxState // sandbox.go: sandbox, containers, processes
	guest      guestState   // guest.go: storages, devices, network, policy
}

// New returns an Agent configured by cfg.
func New(cfg Config) (*Agent, error) {
	cfg = cfg.withDefaults()
	a := &Agent{cfg: cfg}
	a.ConfigureSandbox(SandboxConfig{RunDir: cfg.RunDir, ContainersDir: cfg.ContainersDir, Log: cfg.Log, PipeSize: int(cfg.ContainerPipeSize)})
	a.ConfigureGuest(GuestConfig{
		StorageRoot:    cfg.RunDir,
		CopyFileRoots:  []string{cfg.ContainersDir, cfg.SandboxDir},
		SysfsRoot:      cfg.SysfsRoot,
		HotplugTimeout: cfg.HotplugTimeout,
		Log:            cfg.Log,
	})
	return a, nil
}

// config is the Agent's configuration with defaults filled in, so that a
// zero Agent works too.
func (a *Agent) config() Config { return a.cfg.withDefaults() }

// Compile-time checks: the same Agent serves both protocols.
var (
	_ agentpb.AgentServiceServer       = (*Agent)(nil)
	_ agentpb.TTRPCAgentServiceService = (*Agent)(nil)
)
