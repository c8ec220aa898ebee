package agent

import (
	"context"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Replaced by the storage manager.

// setupStorages mounts the storages of a container ("" for the sandbox);
// rollback undoes what it mounted.
func (a *Agent) setupStorages(ctx context.Context, containerID string, storages []*agentpb.Storage) (rollback func(), err error) {
	if len(storages) > 0 {
		return nil, status.Error(codes.Unimplemented, "storage drivers not available")
	}
	return nil, nil
}

// updateDevices maps the container's devices to the guest's device nodes.
func (a *Agent) updateDevices(ctx context.Context, spec *specs.Spec, devices []*agentpb.Device) error {
	if len(devices) > 0 {
		return status.Error(codes.Unimplemented, "storage drivers not available")
	}
	return nil
}

// releaseStorages unmounts the storages of a container ("" for the sandbox).
func (a *Agent) releaseStorages(containerID string) error {
	return nil
}
