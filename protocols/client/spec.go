package client

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kguest/kguest/protocols/agentpb"
)

// DefaultPath is the PATH given to container processes.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DefaultCapabilities is the capability set containerd and Docker give a
// non-privileged container.
var DefaultCapabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_NET_RAW",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// DefaultProcess is a process running args as root in / with the default
// capabilities, as used for the container's init and for exec.
func DefaultProcess(args []string, tty bool) *agentpb.Process {
	env := []string{DefaultPath}
	if tty {
		env = append(env, "TERM=xterm")
	}
	caps := func() []string { return append([]string(nil), DefaultCapabilities...) }
	return &agentpb.Process{
		Terminal: tty,
		User:     &agentpb.User{UID: 0, GID: 0},
		Args:     append([]string(nil), args...),
		Env:      env,
		Cwd:      "/",
		Capabilities: &agentpb.LinuxCapabilities{
			Bounding:  caps(),
			Effective: caps(),
			Permitted: caps(),
		},
		Rlimits:         []*agentpb.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		NoNewPrivileges: true,
	}
}

// DefaultSpec is a runc-like spec for a container with its root filesystem
// at rootfs (a path in the guest) running args: new pid, ipc, uts, mount and
// network namespaces, the usual /proc, /dev, /sys and cgroup mounts, masked
// and read-only kernel paths, and no device access beyond the defaults.
// Kata hosts put the container rootfs at Root.Path; the agent resolves it.
func DefaultSpec(id, rootfs string, args []string) *agentpb.Spec {
	return &agentpb.Spec{
		Version:  specs.Version,
		Process:  DefaultProcess(args, false),
		Root:     &agentpb.Root{Path: rootfs},
		Hostname: id,
		Mounts: []*agentpb.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &agentpb.Linux{
			Namespaces: []*agentpb.LinuxNamespace{
				{Type: string(specs.PIDNamespace)},
				{Type: string(specs.IPCNamespace)},
				{Type: string(specs.UTSNamespace)},
				{Type: string(specs.MountNamespace)},
				{Type: string(specs.NetworkNamespace)},
			},
			Resources: &agentpb.LinuxResources{
				Devices: []*agentpb.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			MaskedPaths: []string{
				"/proc/acpi",
				"/proc/asound",
				"/proc/kcore",
				"/proc/keys",
				"/proc/latency_stats",
				"/proc/timer_list",
				"/proc/timer_stats",
				"/proc/sched_debug",
				"/proc/scsi",
				"/sys/firmware",
				"/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus",
				"/proc/fs",
				"/proc/irq",
				"/proc/sys",
				"/proc/sysrq-trigger",
			},
		},
	}
}

// SetMemoryLimit sets the container's memory limit in bytes.
func SetMemoryLimit(s *agentpb.Spec, bytes int64) {
	if s.Linux == nil {
		s.Linux = &agentpb.Linux{}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &agentpb.LinuxResources{}
	}
	if s.Linux.Resources.Memory == nil {
		s.Linux.Resources.Memory = &agentpb.LinuxMemory{}
	}
	s.Linux.Resources.Memory.Limit = bytes
}
