package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kguest/kguest/agent/device"
	"github.com/kguest/kguest/agent/storage"
	"github.com/kguest/kguest/init/reaper"
	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func toStorages(in []*agentpb.Storage) []storage.Storage {
	out := make([]storage.Storage, 0, len(in))
	for _, s := range in {
		if s == nil {
			continue
		}
		st := storage.Storage{
			Driver: s.GetDriver(), DriverOptions: s.GetDriverOptions(), Source: s.GetSource(),
			Fstype: s.GetFstype(), Options: s.GetOptions(), MountPoint: s.GetMountPoint(),
		}
		if fg := s.GetFsGroup(); fg != nil {
			st.FSGroup = &storage.FSGroup{GroupID: fg.GetGroupId()}
		}
		out = append(out, st)
	}
	return out
}

// storageStatus maps storage and device errors to gRPC codes.
func storageStatus(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, storage.ErrInvalid), errors.Is(err, device.ErrUnsupported):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, device.ErrNotImplemented):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, storage.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, device.ErrTimeout):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// setupStorages mounts the storages of a container (containerID "" for
// the sandbox). On error nothing stays mounted; the rollback undoes the
// call when a later step of CreateContainer fails.
func (a *Agent) setupStorages(ctx context.Context, containerID string, storages []*agentpb.Storage) (rollback func(), err error) {
	if len(storages) == 0 {
		return func() {}, nil
	}
	rb, err := a.guestServices().storage.Add(ctx, containerID, toStorages(storages))
	if err != nil {
		return nil, storageStatus(err)
	}
	return rb, nil
}

// releaseStorages drops the container's (or, for "", the sandbox's)
// references, unmounting storages nobody uses any more.
func (a *Agent) releaseStorages(containerID string) error {
	return storageStatus(a.guestServices().storage.Release(containerID))
}

// updateDevices finds each Device's guest node (waiting for hot-plug) and
// rewrites the spec's devices and device cgroup rules to its numbers.
func (a *Agent) updateDevices(ctx context.Context, spec *specs.Spec, devices []*agentpb.Device) error {
	if len(devices) == 0 {
		return nil
	}
	g := a.guestServices()
	nodes := make([]device.Node, 0, len(devices))
	for _, d := range devices {
		if d == nil {
			continue
		}
		path, err := g.devices.Resolve(ctx, device.Device{
			ID: d.GetId(), Type: d.GetType(), VMPath: d.GetVmPath(),
			ContainerPath: d.GetContainerPath(), Options: d.GetOptions(),
		})
		if err != nil {
			return storageStatus(err)
		}
		if d.GetContainerPath() == "" {
			continue // only needed in the guest (a disk a storage mounts)
		}
		n, err := device.StatNode(d.GetContainerPath(), path)
		if err != nil {
			return status.Errorf(codes.Internal, "device %s: %v", d.GetId(), err)
		}
		nodes = append(nodes, n)
	}
	if err := device.UpdateSpec(spec, nodes); err != nil {
		return status.Errorf(codes.InvalidArgument, "update spec devices: %v", err)
	}
	return nil
}

// UpdateEphemeralMounts remounts existing ephemeral storages with new
// options.
func (a *Agent) UpdateEphemeralMounts(_ context.Context, req *agentpb.UpdateEphemeralMountsRequest) (*emptypb.Empty, error) {
	if err := a.guestServices().storage.UpdateEphemeral(toStorages(req.GetStorages())); err != nil {
		return nil, storageStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// GetVolumeStats reports a volume's byte and inode usage.
func (a *Agent) GetVolumeStats(_ context.Context, req *agentpb.VolumeStatsRequest) (*agentpb.VolumeStatsResponse, error) {
	p := req.GetVolumeGuestPath()
	if p == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume path")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, status.Errorf(codes.NotFound, "volume %s: %v", p, err)
		}
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", p, err)
	}
	bs := uint64(st.Bsize)
	return &agentpb.VolumeStatsResponse{
		Usage: []*agentpb.VolumeUsage{
			{Unit: agentpb.VolumeUsage_BYTES, Total: st.Blocks * bs, Available: st.Bavail * bs, Used: (st.Blocks - st.Bfree) * bs},
			{Unit: agentpb.VolumeUsage_INODES, Total: st.Files, Available: st.Ffree, Used: st.Files - st.Ffree},
		},
		VolumeCondition: &agentpb.VolumeCondition{Abnormal: false, Message: "volume is normal"},
	}, nil
}

// ResizeVolume grows the file system mounted at the volume path to fill its
// (already resized) block device.
func (a *Agent) ResizeVolume(ctx context.Context, req *agentpb.ResizeVolumeRequest) (*emptypb.Empty, error) {
	p := filepath.Clean(req.GetVolumeGuestPath())
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(p))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "mountinfo: %v", err)
	}
	if len(mounts) == 0 {
		return nil, status.Errorf(codes.NotFound, "no file system mounted at %s", p)
	}
	m := mounts[len(mounts)-1]
	var cmd []string
	switch m.FSType {
	case "ext2", "ext3", "ext4":
		cmd = []string{"resize2fs", m.Source}
	case "xfs":
		cmd = []string{"xfs_growfs", p}
	default:
		return nil, status.Errorf(codes.FailedPrecondition, "cannot resize a %s file system", m.FSType)
	}
	tool, err := exec.LookPath(cmd[0])
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is not installed in the guest", cmd[0])
	}
	if out, err := reaper.CombinedOutput(ctx, exec.Command(tool, cmd[1:]...)); err != nil {
		return nil, status.Errorf(codes.Internal, "%s: %v: %s", cmd[0], err, strings.TrimSpace(string(out)))
	}
	return &emptypb.Empty{}, nil
}

// RemoveStaleVirtiofsShareMounts stats every mount below the shared
// directory: virtiofsd drops its cached entries (and their host fds) for
// paths the host has removed once the guest looks them up again.
func (a *Agent) RemoveStaleVirtiofsShareMounts(_ context.Context, _ *agentpb.RemoveStaleVirtiofsShareMountsRequest) (*emptypb.Empty, error) {
	g := a.guestServices()
	shared := filepath.Join(g.cfg.StorageRoot, "shared/containers")
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(shared))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "mountinfo: %v", err)
	}
	for _, m := range mounts {
		if _, err := os.Stat(m.Mountpoint); err != nil {
			g.cfg.Log.Info("stale share mount", "path", m.Mountpoint, "err", err)
		}
	}
	return &emptypb.Empty{}, nil
}
