// Package guest drives an agent in a VM the way a Kata runtime does: it
// builds OCI specs in the agent's proto form, creates sandboxes and
// containers, and runs processes to completion collecting their output.
package guest

import (
	"github.com/kguest/kguest/protocols/agentpb"
)

// SharedDir is where Kata mounts the virtio-fs share with container rootfs.
const SharedDir = "/run/kata-containers/shared/containers"

// SharedTag is the virtio-fs tag Kata uses for that share.
const SharedTag = "kataShared"

var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// ProcessSpec is a runc-like process running args as root.
func ProcessSpec(tty bool, args ...string) *agentpb.Process {
	return &agentpb.Process{
		Terminal: tty,
		User:     &agentpb.User{UID: 0, GID: 0},
		Args:     args,
		Env:      []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=xterm"},
		Cwd:      "/",
		Capabilities: &agentpb.LinuxCapabilities{
			Bounding: defaultCaps, Effective: defaultCaps, Permitted: defaultCaps,
		},
		NoNewPrivileges: true,
	}
}

// SpecOptions shape a container spec.
type SpecOptions struct {
	Rootfs      string // absolute guest path of the rootfs
	Args        []string
	TTY         bool
	Hostname    string
	MemoryLimit int64 // bytes; 0: none
	Mounts      []*agentpb.Mount
	NetNS       bool // give the container its own network namespace (Kata shares the VM's)
}

// Spec returns an OCI spec like the one runc's `spec` writes, in proto form.
// The container shares the VM's network namespace, as in Kata.
func Spec(id string, o SpecOptions) *agentpb.Spec {
	ns := []*agentpb.LinuxNamespace{{Type: "pid"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"}}
	if o.NetNS {
		ns = append(ns, &agentpb.LinuxNamespace{Type: "network"})
	}
	hostname := o.Hostname
	if hostname == "" {
		hostname = id
	}
	s := &agentpb.Spec{
		Version:  "1.0.2",
		Process:  ProcessSpec(o.TTY, o.Args...),
		Root:     &agentpb.Root{Path: o.Rootfs},
		Hostname: hostname,
		Mounts: []*agentpb.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &agentpb.Linux{
			Namespaces:    ns,
			CgroupsPath:   "/kguest-e2e/" + id,
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
			Resources:     &agentpb.LinuxResources{},
		},
	}
	s.Mounts = append(s.Mounts, o.Mounts...)
	if o.MemoryLimit > 0 {
		s.Linux.Resources.Memory = &agentpb.LinuxMemory{Limit: o.MemoryLimit, Swap: o.MemoryLimit}
	}
	return s
}
