package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kguest/kguest/agent/container"
	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// containerStatus maps errors of the container package to gRPC statuses.
func containerStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, container.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, container.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, container.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, container.ErrNotRunning), errors.Is(err, libcontainer.ErrNotRunning),
		errors.Is(err, libcontainer.ErrNotPaused), errors.Is(err, libcontainer.ErrPaused):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// validID accepts the container ids libcontainer accepts, which are also
// safe as path components.
func validID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "empty container id")
	}
	if id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || len(id) > 1024 {
		return status.Errorf(codes.InvalidArgument, "invalid container id %q", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_+-.", r)) {
			return status.Errorf(codes.InvalidArgument, "invalid container id %q", id)
		}
	}
	return nil
}

// CreateContainer creates a container whose init process waits for
// StartContainer.
func (a *Agent) CreateContainer(ctx context.Context, req *agentpb.CreateContainerRequest) (_ *emptypb.Empty, retErr error) {
	s, err := a.sandbox()
	if err != nil {
		return nil, err
	}
	id := req.ContainerId
	if err := validID(id); err != nil {
		return nil, err
	}
	if req.StdinPort != 0 || req.StdoutPort != 0 || req.StderrPort != 0 {
		return nil, status.Error(codes.Unimplemented, "stdio over pre-opened vsock ports is not supported")
	}
	spec, err := container.ToSpec(req.OCI)
	if err != nil {
		return nil, containerStatus(err)
	}
	// Reserve the id so concurrent creates of the same id fail fast.
	s.mu.Lock()
	if _, ok := s.containers[id]; ok || s.pending[id] {
		s.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "container %q already exists", id)
	}
	s.pending[id] = true
	hookPath, resolv, pause, sharedPid := s.hookPath, s.resolvConf, s.pause, s.sharedPid
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}()

	if spec.Linux == nil {
		return nil, status.Error(codes.InvalidArgument, "spec has no linux section")
	}
	// Storages first: the rootfs and mount sources usually live on them, so
	// the spec can only be resolved and validated once they are mounted.
	rollback, err := a.setupStorages(ctx, id, req.Storages)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			if rollback != nil {
				rollback()
			}
			_ = a.releaseStorages(id)
		}
	}()
	if err := s.resolveRoot(id, spec); err != nil {
		return nil, err
	}
	if err := container.Validate(spec); err != nil {
		return nil, containerStatus(err)
	}
	if pause != nil {
		// The containers of a pod share its IPC and UTS namespaces (Kata
		// hosts send these without a path).
		for i, n := range spec.Linux.Namespaces {
			if (n.Type == specs.IPCNamespace || n.Type == specs.UTSNamespace) && n.Path == "" {
				spec.Linux.Namespaces[i].Path = pause.nsPath(string(n.Type))
			}
		}
	}
	if req.SandboxPidns {
		if !sharedPid {
			return nil, status.Error(codes.FailedPrecondition, "sandbox has no shared pid namespace")
		}
		joinNamespace(spec, specs.PIDNamespace, pause.nsPath("pid"))
	} else if !slices.ContainsFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.PIDNamespace }) {
		// Kata hosts take the pid namespace out of the spec and leave it
		// to the agent: a container gets its own unless it shares the
		// sandbox's, never the agent's.
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	if resolv != "" && !hasMount(spec, "/etc/resolv.conf") {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: "/etc/resolv.conf", Source: resolv, Type: "bind",
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		})
	}
	if spec.Linux.CgroupsPath == "" {
		spec.Linux.CgroupsPath = "/kata_agent/" + id
	}
	addGuestHooks(spec, hookPath)

	if err := a.updateDevices(ctx, spec, req.Devices); err != nil {
		return nil, err
	}
	c, err := container.Create(container.Config{
		ID:         id,
		InitExecID: req.ExecId,
		Spec:       spec,
		StateRoot:  s.stateRoot(),
		Reaper:     s.reaper,
		Log:        s.log,
		OnOOM:      s.oom.push,
		PipeSize:   s.pipeSize,
	})
	if err != nil {
		return nil, containerStatus(err)
	}
	s.mu.Lock()
	s.containers[id] = c
	s.mu.Unlock()
	return &emptypb.Empty{}, nil
}

// resolveRoot makes the rootfs path absolute: relative paths are inside the
// container's bundle (<containers dir>/<id>) and may not leave it; the guest
// root itself is never a container rootfs.
func (s *sandbox) resolveRoot(id string, spec *specs.Spec) error {
	if spec.Root == nil || spec.Root.Path == "" {
		bundle := filepath.Join(s.containersDir, id, "rootfs")
		spec.Root = &specs.Root{Path: bundle}
	}
	p := spec.Root.Path
	if !filepath.IsAbs(p) {
		bundle := filepath.Join(s.containersDir, id)
		joined := filepath.Join(bundle, p)
		if joined != bundle && !strings.HasPrefix(joined, bundle+"/") {
			return status.Errorf(codes.InvalidArgument, "root path %q escapes the container bundle", p)
		}
		p = joined
	}
	p = filepath.Clean(p)
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	if p == "/" {
		return status.Error(codes.InvalidArgument, "root path is the guest root")
	}
	spec.Root.Path = p
	return nil
}

func hasMount(spec *specs.Spec, dest string) bool {
	for _, m := range spec.Mounts {
		if filepath.Clean(m.Destination) == dest {
			return true
		}
	}
	return false
}

func joinNamespace(spec *specs.Spec, t specs.LinuxNamespaceType, path string) {
	for i, n := range spec.Linux.Namespaces {
		if n.Type == t {
			spec.Linux.Namespaces[i].Path = path
			return
		}
	}
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: t, Path: path})
}

// StartContainer releases the init process and runs the poststart hooks.
func (a *Agent) StartContainer(ctx context.Context, req *agentpb.StartContainerRequest) (*emptypb.Empty, error) {
	c, err := a.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, containerStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// RemoveContainer kills every process of a container, waits for them (at
// most timeout seconds; 0 waits as long as the call lasts), removes it and
// releases its storages.
func (a *Agent) RemoveContainer(ctx context.Context, req *agentpb.RemoveContainerRequest) (*emptypb.Empty, error) {
	if err := a.removeContainer(ctx, req.ContainerId, time.Duration(req.Timeout)*time.Second); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (a *Agent) removeContainer(ctx context.Context, id string, timeout time.Duration) error {
	s, err := a.sandbox()
	if err != nil {
		return err
	}
	c, err := s.get(id)
	if err != nil {
		return err
	}
	if err := c.Destroy(ctx, timeout); err != nil {
		return containerStatus(err)
	}
	s.mu.Lock()
	delete(s.containers, id)
	s.mu.Unlock()
	err = a.releaseStorages(id)
	releaser.request()
	return err
}

// container finds a container by id.
func (a *Agent) container(id string) (*container.Container, error) {
	s, err := a.sandbox()
	if err != nil {
		return nil, err
	}
	return s.get(id)
}

// UpdateContainer applies new resource limits.
func (a *Agent) UpdateContainer(ctx context.Context, req *agentpb.UpdateContainerRequest) (*emptypb.Empty, error) {
	c, err := a.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.Update(container.ToResources(req.Resources)); err != nil {
		return nil, containerStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// PauseContainer freezes a container.
func (a *Agent) PauseContainer(ctx context.Context, req *agentpb.PauseContainerRequest) (*emptypb.Empty, error) {
	c, err := a.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.Pause(); err != nil {
		return nil, containerStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// ResumeContainer thaws a container.
func (a *Agent) ResumeContainer(ctx context.Context, req *agentpb.ResumeContainerRequest) (*emptypb.Empty, error) {
	c, err := a.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.Resume(); err != nil {
		return nil, containerStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// StatsContainer returns the container's cgroup statistics.
func (a *Agent) StatsContainer(ctx context.Context, req *agentpb.StatsContainerRequest) (*agentpb.StatsContainerResponse, error) {
	c, err := a.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	st, err := c.Stats()
	if err != nil {
		return nil, containerStatus(err)
	}
	resp := &agentpb.StatsContainerResponse{CgroupStats: cgroupStats(st.CgroupStats)}
	for _, n := range st.Interfaces {
		if n == nil {
			continue
		}
		resp.NetworkStats = append(resp.NetworkStats, &agentpb.NetworkStats{
			Name: n.Name, RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDropped: n.RxDropped,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDropped: n.TxDropped,
		})
	}
	return resp, nil
}

func cgroupStats(cs *cgroups.Stats) *agentpb.CgroupStats {
	if cs == nil {
		return nil
	}
	mem := func(d cgroups.MemoryData) *agentpb.MemoryData {
		return &agentpb.MemoryData{Usage: d.Usage, MaxUsage: d.MaxUsage, Failcnt: d.Failcnt, Limit: d.Limit}
	}
	blk := func(es []cgroups.BlkioStatEntry) []*agentpb.BlkioStatsEntry {
		var out []*agentpb.BlkioStatsEntry
		for _, e := range es {
			out = append(out, &agentpb.BlkioStatsEntry{Major: e.Major, Minor: e.Minor, Op: e.Op, Value: e.Value})
		}
		return out
	}
	g := &agentpb.CgroupStats{
		CpuStats: &agentpb.CpuStats{
			CpuUsage: &agentpb.CpuUsage{
				TotalUsage:        cs.CpuStats.CpuUsage.TotalUsage,
				PercpuUsage:       cs.CpuStats.CpuUsage.PercpuUsage,
				UsageInKernelmode: cs.CpuStats.CpuUsage.UsageInKernelmode,
				UsageInUsermode:   cs.CpuStats.CpuUsage.UsageInUsermode,
			},
			ThrottlingData: &agentpb.ThrottlingData{
				Periods:          cs.CpuStats.ThrottlingData.Periods,
				ThrottledPeriods: cs.CpuStats.ThrottlingData.ThrottledPeriods,
				ThrottledTime:    cs.CpuStats.ThrottlingData.ThrottledTime,
			},
		},
		MemoryStats: &agentpb.MemoryStats{
			Cache:        cs.MemoryStats.Cache,
			Usage:        mem(cs.MemoryStats.Usage),
			SwapUsage:    mem(cs.MemoryStats.SwapUsage),
			KernelUsage:  mem(cs.MemoryStats.KernelUsage),
			UseHierarchy: cs.MemoryStats.UseHierarchy,
			Stats:        cs.MemoryStats.Stats,
		},
		PidsStats: &agentpb.PidsStats{Current: cs.PidsStats.Current, Limit: cs.PidsStats.Limit},
		BlkioStats: &agentpb.BlkioStats{
			IoServiceBytesRecursive: blk(cs.BlkioStats.IoServiceBytesRecursive),
			IoServicedRecursive:     blk(cs.BlkioStats.IoServicedRecursive),
			IoQueuedRecursive:       blk(cs.BlkioStats.IoQueuedRecursive),
			IoServiceTimeRecursive:  blk(cs.BlkioStats.IoServiceTimeRecursive),
			IoWaitTimeRecursive:     blk(cs.BlkioStats.IoWaitTimeRecursive),
			IoMergedRecursive:       blk(cs.BlkioStats.IoMergedRecursive),
			IoTimeRecursive:         blk(cs.BlkioStats.IoTimeRecursive),
			SectorsRecursive:        blk(cs.BlkioStats.SectorsRecursive),
		},
	}
	if len(cs.HugetlbStats) > 0 {
		g.HugetlbStats = make(map[string]*agentpb.HugetlbStats, len(cs.HugetlbStats))
		for k, h := range cs.HugetlbStats {
			g.HugetlbStats[k] = &agentpb.HugetlbStats{Usage: h.Usage, MaxUsage: h.MaxUsage, Failcnt: h.Failcnt}
		}
	}
	return g
}

// ListProcesses lists the container's processes: "json" gives the pids as a
// JSON array, "table" the lines of ps(1) (default arguments -ef) for them.
func (a *Agent) ListProcesses(ctx context.Context, req *agentpb.ListProcessesRequest) (*agentpb.ListProcessesResponse, error) {
	c, err := a.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	pids, err := c.Pids()
	if err != nil {
		return nil, containerStatus(err)
	}
	switch req.Format {
	case "json":
		if pids == nil {
			pids = []int{}
		}
		b, err := json.Marshal(pids)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &agentpb.ListProcessesResponse{ProcessList: b}, nil
	case "table", "":
	default:
		return nil, status.Errorf(codes.InvalidArgument, "invalid format %q: want table or json", req.Format)
	}
	s, _ := a.sandbox()
	ps, err := exec.LookPath("ps")
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, "ps not found in the guest")
	}
	args := req.Args
	if len(args) == 0 {
		args = []string{"-ef"}
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(ps, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	code, err := s.reaper.Run(ctx, cmd)
	if err != nil || code != 0 {
		return nil, status.Errorf(codes.Internal, "ps %s: exit %d: %v %s", strings.Join(args, " "), code, err, strings.TrimSpace(errOut.String()))
	}
	table, err := filterPs(out.Bytes(), pids)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &agentpb.ListProcessesResponse{ProcessList: table}, nil
}

// filterPs keeps the header of ps output and the lines of the given pids.
func filterPs(out []byte, pids []int) ([]byte, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	if !sc.Scan() {
		return nil, errors.New("ps printed nothing")
	}
	header := sc.Text()
	col := slices.Index(strings.Fields(header), "PID")
	if col < 0 {
		return nil, fmt.Errorf("no PID column in ps header %q", header)
	}
	var b bytes.Buffer
	b.WriteString(header + "\n")
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) <= col {
			continue
		}
		pid, err := strconv.Atoi(f[col])
		if err == nil && slices.Contains(pids, pid) {
			b.WriteString(sc.Text() + "\n")
		}
	}
	return b.Bytes(), sc.Err()
}
