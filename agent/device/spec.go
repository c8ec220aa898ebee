package device

import (
	"context"
	"errors"
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Device mirrors Kata's Device message: a host device handed to a container.
type Device struct {
	ID            string // PCI path, SCSI address or CCW bus id, per Type
	Type          string
	VMPath        string // guest node, when the runtime knows it
	ContainerPath string
	Options       []string
}

// Resolve finds the guest device node for d, waiting for hot-plug.
func (m *Manager) Resolve(ctx context.Context, d Device) (string, error) {
	switch d.Type {
	case DriverBlk, DriverVirtBlk:
		if d.ID == "" && d.VMPath != "" {
			return m.ByName(ctx, d.VMPath)
		}
		return m.VirtioBlkPCI(ctx, d.ID)
	case DriverBlkCCW:
		return m.VirtioBlkCCW(ctx, d.ID)
	case DriverMMIOBlk, DriverNVDIMM, DriverPmem:
		if d.VMPath == "" {
			return "", fmt.Errorf("device %q of type %s has no vm_path", d.ID, d.Type)
		}
		return m.ByName(ctx, d.VMPath)
	case DriverSCSI:
		return m.SCSI(ctx, d.ID)
	case "":
		return "", fmt.Errorf("device %q has no type", d.ID)
	case "vfio", "vfio-pci", "vfio-pci-gk", "vfio-ap", "vfio-ap-cold":
		return "", fmt.Errorf("device %q: %w %q", d.ID, ErrNotImplemented, d.Type)
	default:
		return "", fmt.Errorf("device %q: %w %q", d.ID, ErrUnsupported, d.Type)
	}
}

// ErrUnsupported marks device types no Kata runtime sends; ErrNotImplemented
// the Kata device types this agent does not handle (VFIO).
var (
	ErrUnsupported    = errors.New("unknown device type")
	ErrNotImplemented = errors.New("device type not implemented")
)

// Node is a resolved guest device node.
type Node struct {
	ContainerPath string
	GuestPath     string
	Type          string // "b" or "c"
	Major, Minor  int64
}

// StatNode reads the type and numbers of a device node.
func StatNode(containerPath, guestPath string) (Node, error) {
	var st unix.Stat_t
	if err := unix.Stat(guestPath, &st); err != nil {
		return Node{}, fmt.Errorf("stat %s: %w", guestPath, err)
	}
	n := Node{ContainerPath: containerPath, GuestPath: guestPath,
		Major: int64(unix.Major(uint64(st.Rdev))), Minor: int64(unix.Minor(uint64(st.Rdev)))}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		n.Type = "b"
	case unix.S_IFCHR:
		n.Type = "c"
	default:
		return Node{}, fmt.Errorf("%s is not a device node", guestPath)
	}
	return n, nil
}

// UpdateSpec rewrites spec.Linux.Devices entries at each node's container
// path to the guest's numbers, and the device cgroup rules that named the
// host's numbers, as Kata's update_spec_devices does. A spec device that is
// missing is added, so the container gets the node.
func UpdateSpec(spec *specs.Spec, nodes []Node) error {
	if len(nodes) == 0 {
		return nil
	}
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	type key struct {
		typ          string
		major, minor int64
	}
	remap := map[key][2]int64{}
	for _, n := range nodes {
		found := false
		for i := range spec.Linux.Devices {
			d := &spec.Linux.Devices[i]
			if d.Path != n.ContainerPath {
				continue
			}
			found = true
			remap[key{d.Type, d.Major, d.Minor}] = [2]int64{n.Major, n.Minor}
			d.Major, d.Minor = n.Major, n.Minor
			if d.Type == "" || d.Type == "u" {
				d.Type = n.Type
			}
		}
		if !found {
			mode := os.FileMode(0o660)
			spec.Linux.Devices = append(spec.Linux.Devices, specs.LinuxDevice{
				Path: n.ContainerPath, Type: n.Type, Major: n.Major, Minor: n.Minor, FileMode: &mode,
			})
		}
	}
	if spec.Linux.Resources == nil {
		return nil
	}
	for i := range spec.Linux.Resources.Devices {
		r := &spec.Linux.Resources.Devices[i]
		if r.Major == nil || r.Minor == nil {
			continue
		}
		if nm, ok := remap[key{r.Type, *r.Major, *r.Minor}]; ok {
			ma, mi := nm[0], nm[1]
			r.Major, r.Minor = &ma, &mi
		}
	}
	return nil
}
