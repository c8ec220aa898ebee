package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/kguest/kguest/agent/device"
	"github.com/kguest/kguest/agent/network"
	"github.com/kguest/kguest/agent/policy"
	"github.com/kguest/kguest/agent/storage"
	"github.com/kguest/kguest/protocols/agentpb"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Guest paths, as the Kata runtime lays them out.
const (
	defaultStorageRoot = "/run/kata-containers"
	kataSharedDir      = "/run/kata-containers/shared/containers"
	kataSandboxDir     = "/run/kata-containers/sandbox"
	agentCgroupParent  = "kata_agent"
)

// GuestConfig configures the agent's sandbox services. Zero values select
// the guest's defaults; tests point the roots at temp dirs.
type GuestConfig struct {
	// StorageRoot confines storage mount points and sources.
	StorageRoot string
	// CopyFileRoots are the directories CopyFile may write below (Kata's
	// shared containers dir and the sandbox dir).
	CopyFileRoots []string
	// SysfsRoot is /sys; CgroupRoot is /sys/fs/cgroup.
	SysfsRoot  string
	CgroupRoot string
	// RandomDev is /dev/random.
	RandomDev string
	// HotplugTimeout bounds waits for hot-plugged devices, CPUs and memory
	// (agent.hotplug_timeout).
	HotplugTimeout time.Duration
	// Log receives the services' logs; slog.Default() if nil.
	Log *slog.Logger
}

func (c GuestConfig) withDefaults() GuestConfig {
	if c.StorageRoot == "" {
		c.StorageRoot = defaultStorageRoot
	}
	if len(c.CopyFileRoots) == 0 {
		c.CopyFileRoots = []string{kataSharedDir, kataSandboxDir}
	}
	if c.SysfsRoot == "" {
		c.SysfsRoot = "/sys"
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	if c.RandomDev == "" {
		c.RandomDev = "/dev/random"
	}
	if c.HotplugTimeout <= 0 {
		c.HotplugTimeout = device.DefaultTimeout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// guestState is the Agent's sandbox-side state: storages, devices,
// network, policy. It is set up on first use.
type guestState struct {
	mu      sync.Mutex
	cfg     GuestConfig
	ready   bool
	watcher *device.Watcher
	devices *device.Manager
	storage *storage.Manager
	net     *network.Manager
	policy  *policy.Policy
	copyMu  sync.Mutex
}

// ConfigureGuest sets the sandbox services' configuration; call it before
// serving. Later calls only update the hot-plug timeout.
func (a *Agent) ConfigureGuest(cfg GuestConfig) {
	g := &a.guest
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ready {
		if cfg.HotplugTimeout > 0 {
			g.devices.Timeout = cfg.HotplugTimeout
			g.cfg.HotplugTimeout = cfg.HotplugTimeout
		}
		return
	}
	g.cfg = cfg
}

// guestServices returns the initialised sandbox services.
func (a *Agent) guestServices() *guestState {
	g := &a.guest
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ready {
		return g
	}
	g.cfg = g.cfg.withDefaults()
	// Without the uevent socket only devices already present are found;
	// the lookups say so when they fail.
	w, err := device.NewWatcher()
	if err != nil {
		g.cfg.Log.Warn("uevent watcher unavailable", "err", err)
	}
	g.watcher = w
	g.devices = device.NewManager(w, g.cfg.HotplugTimeout)
	g.devices.SysfsRoot = g.cfg.SysfsRoot
	g.storage = storage.NewManager(g.cfg.StorageRoot, g.devices)
	g.net = network.New(nil)
	g.policy = policy.New()
	g.ready = true
	return g
}

// Authorize is the server's authorizer hook: the agent policy decides.
func (a *Agent) Authorize(ctx context.Context, fullMethod string, req any) error {
	return a.guestServices().policy.Authorize(ctx, fullMethod, req)
}

// LoadPolicy loads the policy document at path (agent.policy_file or
// KATA_AGENT_POLICY_FILE) at start.
func (a *Agent) LoadPolicy(path string) error {
	if path == "" {
		return nil
	}
	return a.guestServices().policy.LoadFile(path)
}

// SetPolicy replaces the policy; the current policy has already allowed
// the SetPolicyRequest through the authorizer.
func (a *Agent) SetPolicy(_ context.Context, req *agentpb.SetPolicyRequest) (*emptypb.Empty, error) {
	if err := a.guestServices().policy.Set(req.GetPolicy()); err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.InvalidArgument, "set policy: %v", err)
	}
	return &emptypb.Empty{}, nil
}

// StorageHandlers and DeviceHandlers list the drivers, for AgentDetails.
func StorageHandlers() []string { return storage.Drivers() }

// DeviceHandlers lists the Device message types the agent resolves.
func DeviceHandlers() []string { return device.Handlers() }

// PolicyEnabled reports whether the Rego policy engine is built in.
func PolicyEnabled() bool { return policy.Enabled() }

// policySuffix marks the agent version of a build with the policy engine
// (semver build metadata), so Health.Version tells the builds apart.
func policySuffix() string {
	if policy.Enabled() {
		return "+policy"
	}
	return ""
}

// OnlineCPUMem onlines hot-added CPUs (waiting for nb_cpus of them) and
// memory blocks, then widens the containers' cpusets. Without wait it
// answers at once and works in the background.
func (a *Agent) OnlineCPUMem(ctx context.Context, req *agentpb.OnlineCPUMemRequest) (*emptypb.Empty, error) {
	g := a.guestServices()
	if !req.GetWait() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), g.cfg.HotplugTimeout+time.Second)
			defer cancel()
			if err := g.onlineCPUMem(ctx, req.GetNbCpus(), req.GetCpuOnly()); err != nil {
				g.cfg.Log.Error("online CPUs and memory", "err", err)
			}
		}()
		return &emptypb.Empty{}, nil
	}
	if err := g.onlineCPUMem(ctx, req.GetNbCpus(), req.GetCpuOnly()); err != nil {
		if errors.Is(err, device.ErrTimeout) {
			return nil, status.Errorf(codes.DeadlineExceeded, "online CPUs: %v", err)
		}
		return nil, status.Errorf(codes.Internal, "online CPUs and memory: %v", err)
	}
	return &emptypb.Empty{}, nil
}

func (g *guestState) onlineCPUMem(ctx context.Context, nbCPUs uint32, cpuOnly bool) error {
	cpuDir := filepath.Join(g.cfg.SysfsRoot, "devices/system/cpu")
	oldOnline, _ := os.ReadFile(filepath.Join(cpuDir, "online"))
	onlined := 0
	deadline := time.Now().Add(g.cfg.HotplugTimeout)
	for {
		// Register for the next CPU uevent before scanning, so a CPU that
		// appears during the scan is not missed.
		var wt *device.Wait
		if g.watcher != nil && uint32(onlined) < nbCPUs {
			wt, _ = g.watcher.Watch(func(u *device.Uevent) bool { return u.Subsystem == "cpu" })
		}
		n, err := onlineAll(cpuDir, "cpu")
		onlined += n
		if err != nil {
			if wt != nil {
				wt.Cancel()
			}
			return err
		}
		if uint32(onlined) >= nbCPUs {
			if wt != nil {
				wt.Cancel()
			}
			break
		}
		if wt == nil {
			return fmt.Errorf("onlined %d of %d CPUs and cannot wait for more: %w", onlined, nbCPUs, device.ErrTimeout)
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		_, err = wt.Wait(wctx)
		cancel()
		if err != nil {
			if n, _ := onlineAll(cpuDir, "cpu"); onlined+n >= int(nbCPUs) {
				onlined += n
				break
			}
			return fmt.Errorf("onlined %d of %d CPUs: %w", onlined, nbCPUs, device.ErrTimeout)
		}
	}
	if !cpuOnly {
		// A block the kernel cannot online (no room in a zone, say) must not
		// fail the call for the others.
		if n, err := onlineAll(filepath.Join(g.cfg.SysfsRoot, "devices/system/memory"), "memory"); err != nil {
			g.cfg.Log.Warn("online memory", "onlined", n, "err", err)
		}
	}
	newOnline, err := os.ReadFile(filepath.Join(cpuDir, "online"))
	if err != nil {
		return nil // no cpu sysfs: nothing to fix
	}
	return g.fixCpusets(strings.TrimSpace(string(oldOnline)), strings.TrimSpace(string(newOnline)))
}

// onlineAll writes 1 to the online file of every offline prefixN below dir
// and returns how many it brought online.
func onlineAll(dir, prefix string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		if _, err := strconv.Atoi(rest); err != nil {
			continue
		}
		f := filepath.Join(dir, e.Name(), "online")
		b, err := os.ReadFile(f)
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			continue // no online file: cpu0 or a block that cannot go offline
		}
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("online %s: %w", e.Name(), err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// fixCpusets widens cpuset.cpus of the agent's cgroup and of every
// container cgroup that had all the old CPUs (so did not pin its own set),
// on cgroup v1 and v2.
func (g *guestState) fixCpusets(oldCPUs, newCPUs string) error {
	if oldCPUs == newCPUs || newCPUs == "" {
		return nil
	}
	var errs []error
	for _, parent := range []string{
		filepath.Join(g.cfg.CgroupRoot, "cpuset", agentCgroupParent), // v1
		filepath.Join(g.cfg.CgroupRoot, agentCgroupParent),           // v2
	} {
		if _, err := os.Stat(filepath.Join(parent, "cpuset.cpus")); err != nil {
			continue
		}
		errs = append(errs, widenCpuset(parent, oldCPUs, newCPUs, true))
	}
	return errors.Join(errs...)
}

func widenCpuset(dir, oldCPUs, newCPUs string, force bool) error {
	f := filepath.Join(dir, "cpuset.cpus")
	cur, err := os.ReadFile(f)
	if err != nil {
		return nil
	}
	c := strings.TrimSpace(string(cur))
	if !force && c != oldCPUs {
		return nil // pinned by the container's spec, or inherited (v2: empty)
	}
	if c != newCPUs {
		if err := os.WriteFile(f, []byte(newCPUs), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", f, err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			errs = append(errs, widenCpuset(filepath.Join(dir, e.Name()), oldCPUs, newCPUs, false))
		}
	}
	return errors.Join(errs...)
}

// MemHotplugByProbe tells the kernel about hot-added memory at the given
// physical addresses.
func (a *Agent) MemHotplugByProbe(_ context.Context, req *agentpb.MemHotplugByProbeRequest) (*emptypb.Empty, error) {
	g := a.guestServices()
	probe := filepath.Join(g.cfg.SysfsRoot, "devices/system/memory/probe")
	if _, err := os.Stat(probe); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "memory probe interface: %v", err)
	}
	for _, addr := range req.GetMemHotplugProbeAddr() {
		if err := os.WriteFile(probe, []byte(fmt.Sprintf("%#x", addr)), 0o200); err != nil {
			return nil, status.Errorf(codes.Internal, "probe memory at %#x: %v", addr, err)
		}
	}
	return &emptypb.Empty{}, nil
}

// SetGuestDateTime sets the guest clock.
func (a *Agent) SetGuestDateTime(_ context.Context, req *agentpb.SetGuestDateTimeRequest) (*emptypb.Empty, error) {
	tv := unix.Timeval{Sec: req.GetSec(), Usec: req.GetUsec()}
	if req.GetUsec() < 0 || req.GetUsec() >= 1e6 {
		return nil, status.Errorf(codes.InvalidArgument, "usec %d out of range", req.GetUsec())
	}
	if err := unix.Settimeofday(&tv); err != nil {
		code := codes.Internal
		switch err {
		case unix.EINVAL: // e.g. a time before the guest booted
			code = codes.InvalidArgument
		case unix.EPERM:
			code = codes.PermissionDenied
		}
		return nil, status.Errorf(code, "settimeofday %d.%06d: %v", req.GetSec(), req.GetUsec(), err)
	}
	return &emptypb.Empty{}, nil
}

// RNG ioctls from <linux/random.h>.
const (
	rndAddToEntCnt = 0x40045201 // _IOW('R', 0x01, int)
	rndReseedCRNG  = 0x5207     // _IO('R', 0x07)
)

// ReseedRandomDev mixes the host's bytes into the guest's pool, credits
// them as entropy and reseeds the CRNG.
func (a *Agent) ReseedRandomDev(_ context.Context, req *agentpb.ReseedRandomDevRequest) (*emptypb.Empty, error) {
	if err := reseed(a.guestServices().cfg.RandomDev, req.GetData()); err != nil {
		return nil, status.Errorf(codes.Internal, "reseed: %v", err)
	}
	return &emptypb.Empty{}, nil
}

func reseed(dev string, data []byte) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", dev, err)
	}
	bits := int32(len(data) * 8)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddToEntCnt, uintptr(unsafe.Pointer(&bits))); e != 0 {
		return fmt.Errorf("RNDADDTOENTCNT: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); e != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", e)
	}
	return nil
}
