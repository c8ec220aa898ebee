package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/runc/libcontainer/seccomp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kguest/kguest/internal/version"
	"github.com/kguest/kguest/protocols/agentpb"
)

// GetGuestDetails reports the guest's memory hot-plug parameters, when
// asked, and what this agent supports.
func (a *Agent) GetGuestDetails(_ context.Context, req *agentpb.GuestDetailsRequest) (*agentpb.GuestDetailsResponse, error) {
	cfg := a.config()
	resp := &agentpb.GuestDetailsResponse{AgentDetails: a.details()}
	memDir := filepath.Join(cfg.SysfsRoot, "devices/system/memory")
	if req.GetMemBlockSize() {
		n, err := memBlockSize(filepath.Join(memDir, "block_size_bytes"))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "memory block size: %v", err)
		}
		resp.MemBlockSizeBytes = n
	}
	if req.GetMemHotplugProbe() {
		_, err := os.Stat(filepath.Join(memDir, "probe"))
		switch {
		case err == nil:
			resp.SupportMemHotplugProbe = true
		case !errors.Is(err, fs.ErrNotExist):
			return nil, status.Errorf(codes.Internal, "memory hotplug probe: %v", err)
		}
	}
	return resp, nil
}

// memBlockSize reads the hexadecimal memory block size; a kernel without
// memory hot-plug has no such file, which gives 0 as in Kata.
func memBlockSize(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := string(bytes.TrimSpace(b))
	if s == "" {
		return 0, errors.New(path + " is empty")
	}
	n, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// details describes this agent build and its handlers.
func (a *Agent) details() *agentpb.AgentDetails {
	d := &agentpb.AgentDetails{
		Version:         version.Version,
		InitDaemon:      a.config().InitDaemon,
		DeviceHandlers:  DeviceHandlers(),
		StorageHandlers: StorageHandlers(),
		SupportsSeccomp: supportsSeccomp(),
	}
	if PolicyEnabled() {
		d.ExtraFeatures = append(d.ExtraFeatures, "policy")
	}
	return d
}

// supportsSeccomp reports whether container seccomp profiles can be
// applied: libcontainer built with seccomp (cgo and the seccomp tag),
// libseccomp linked in, and a kernel with seccomp.
func supportsSeccomp() bool {
	if !seccomp.Enabled {
		return false
	}
	if major, _, _ := seccomp.Version(); major == 0 {
		return false
	}
	return kernelSeccomp("/proc/self/status")
}

// kernelSeccomp reports whether the kernel has seccomp: it then shows a
// Seccomp field in /proc/<pid>/status.
func kernelSeccomp(statusPath string) bool {
	f, err := os.Open(statusPath)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), []byte("Seccomp:")) {
			return true
		}
	}
	return false
}
