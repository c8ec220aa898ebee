package container

import (
	"os"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// The proto spec (Kata's oci.proto) carries plain values where the
// runtime-spec has optional pointers: a zero value means "unset", as in
// Kata's agents. Device numbers below zero are wildcards.

// ToSpec converts Kata's proto OCI spec into a runtime-spec Spec.
func ToSpec(g *agentpb.Spec) (*specs.Spec, error) {
	if g == nil {
		return nil, invalidf("missing OCI spec")
	}
	s := &specs.Spec{
		Version:     g.Version,
		Hostname:    g.Hostname,
		Annotations: g.Annotations,
	}
	if s.Version == "" {
		s.Version = specs.Version
	}
	if p := g.Process; p != nil {
		s.Process = ToProcess(p)
	}
	if r := g.Root; r != nil {
		s.Root = &specs.Root{Path: r.Path, Readonly: r.Readonly}
	}
	for _, m := range g.Mounts {
		if m == nil {
			return nil, invalidf("null mount")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: m.Destination, Source: m.Source, Type: m.Type, Options: m.Options})
	}
	if h := g.Hooks; h != nil {
		s.Hooks = &specs.Hooks{
			Prestart:        toHooks(h.Prestart),
			CreateRuntime:   toHooks(h.CreateRuntime),
			CreateContainer: toHooks(h.CreateContainer),
			StartContainer:  toHooks(h.StartContainer),
			Poststart:       toHooks(h.Poststart),
			Poststop:        toHooks(h.Poststop),
		}
	}
	if l := g.Linux; l != nil {
		ls, err := toLinux(l)
		if err != nil {
			return nil, err
		}
		s.Linux = ls
	}
	return s, nil
}

// ToProcess converts a proto process.
func ToProcess(p *agentpb.Process) *specs.Process {
	if p == nil {
		return nil
	}
	sp := &specs.Process{
		Terminal:        p.Terminal,
		Args:            p.Args,
		Env:             p.Env,
		Cwd:             p.Cwd,
		NoNewPrivileges: p.NoNewPrivileges,
		ApparmorProfile: p.ApparmorProfile,
		SelinuxLabel:    p.SelinuxLabel,
	}
	if p.OOMScoreAdj != 0 {
		v := int(oomScoreAdj(p.OOMScoreAdj))
		sp.OOMScoreAdj = &v
	}
	if b := p.ConsoleSize; b != nil && (b.Height != 0 || b.Width != 0) {
		sp.ConsoleSize = &specs.Box{Height: uint(b.Height), Width: uint(b.Width)}
	}
	if u := p.User; u != nil {
		sp.User = specs.User{UID: u.UID, GID: u.GID, AdditionalGids: u.AdditionalGids, Username: u.Username}
	}
	if c := p.Capabilities; c != nil {
		sp.Capabilities = &specs.LinuxCapabilities{
			Bounding: c.Bounding, Effective: c.Effective, Inheritable: c.Inheritable,
			Permitted: c.Permitted, Ambient: c.Ambient,
		}
	}
	for _, r := range p.Rlimits {
		if r != nil {
			sp.Rlimits = append(sp.Rlimits, specs.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
		}
	}
	return sp
}

func toHooks(hs []*agentpb.Hook) []specs.Hook {
	var out []specs.Hook
	for _, h := range hs {
		if h == nil {
			continue
		}
		sh := specs.Hook{Path: h.Path, Args: h.Args, Env: h.Env}
		if h.Timeout > 0 {
			t := int(h.Timeout)
			sh.Timeout = &t
		}
		out = append(out, sh)
	}
	return out
}

func toLinux(l *agentpb.Linux) (*specs.Linux, error) {
	sl := &specs.Linux{
		Sysctl:            l.Sysctl,
		CgroupsPath:       l.CgroupsPath,
		RootfsPropagation: l.RootfsPropagation,
		MaskedPaths:       l.MaskedPaths,
		ReadonlyPaths:     l.ReadonlyPaths,
		MountLabel:        l.MountLabel,
	}
	for _, m := range l.UIDMappings {
		sl.UIDMappings = append(sl.UIDMappings, specs.LinuxIDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
	}
	for _, m := range l.GIDMappings {
		sl.GIDMappings = append(sl.GIDMappings, specs.LinuxIDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
	}
	for _, n := range l.Namespaces {
		if n == nil {
			return nil, invalidf("null namespace")
		}
		sl.Namespaces = append(sl.Namespaces, specs.LinuxNamespace{Type: specs.LinuxNamespaceType(n.Type), Path: n.Path})
	}
	for _, d := range l.Devices {
		if d == nil {
			return nil, invalidf("null device")
		}
		sd := specs.LinuxDevice{Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor}
		if d.FileMode != 0 {
			m := fileMode(d.FileMode)
			sd.FileMode = &m
		}
		uid, gid := d.UID, d.GID
		sd.UID, sd.GID = &uid, &gid
		sl.Devices = append(sl.Devices, sd)
	}
	if r := l.Resources; r != nil {
		sl.Resources = ToResources(r)
	}
	if sc := l.Seccomp; sc != nil {
		sl.Seccomp = toSeccomp(sc)
	}
	if r := l.IntelRdt; r != nil && r.L3CacheSchema != "" {
		sl.IntelRdt = &specs.LinuxIntelRdt{L3CacheSchema: r.L3CacheSchema}
	}
	return sl, nil
}

func i64(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}

func u64(v uint64) *uint64 {
	if v == 0 {
		return nil
	}
	return &v
}

func devNum(major, minor int64) (*int64, *int64) {
	if major == 0 && minor == 0 {
		return nil, nil
	}
	var ma, mi *int64
	if major >= 0 {
		ma = &major
	}
	if minor >= 0 {
		mi = &minor
	}
	return ma, mi
}

// ToResources converts proto resources (CreateContainer, UpdateContainer).
func ToResources(r *agentpb.LinuxResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	sr := &specs.LinuxResources{}
	for _, d := range r.Devices {
		if d == nil {
			continue
		}
		ma, mi := devNum(d.Major, d.Minor)
		sr.Devices = append(sr.Devices, specs.LinuxDeviceCgroup{Allow: d.Allow, Type: d.Type, Major: ma, Minor: mi, Access: d.Access})
	}
	if m := r.Memory; m != nil {
		sr.Memory = &specs.LinuxMemory{
			Limit:       i64(m.Limit),
			Reservation: i64(m.Reservation),
			Swap:        i64(m.Swap),
			Swappiness:  u64(m.Swappiness),
		}
		if m.DisableOOMKiller {
			t := true
			sr.Memory.DisableOOMKiller = &t
		}
	}
	if c := r.CPU; c != nil {
		sr.CPU = &specs.LinuxCPU{
			Shares:          u64(c.Shares),
			Quota:           i64(c.Quota),
			Period:          u64(c.Period),
			RealtimeRuntime: i64(c.RealtimeRuntime),
			RealtimePeriod:  u64(c.RealtimePeriod),
			Cpus:            c.Cpus,
			Mems:            c.Mems,
		}
	}
	if p := r.Pids; p != nil && p.Limit != 0 {
		v := p.Limit
		sr.Pids = &specs.LinuxPids{Limit: &v}
	}
	if b := r.BlockIO; b != nil {
		sb := &specs.LinuxBlockIO{}
		if b.Weight != 0 {
			w := uint16(b.Weight)
			sb.Weight = &w
		}
		if b.LeafWeight != 0 {
			w := uint16(b.LeafWeight)
			sb.LeafWeight = &w
		}
		for _, d := range b.WeightDevice {
			if d == nil {
				continue
			}
			wd := specs.LinuxWeightDevice{}
			wd.Major, wd.Minor = d.Major, d.Minor
			if d.Weight != 0 {
				w := uint16(d.Weight)
				wd.Weight = &w
			}
			if d.LeafWeight != 0 {
				w := uint16(d.LeafWeight)
				wd.LeafWeight = &w
			}
			sb.WeightDevice = append(sb.WeightDevice, wd)
		}
		sb.ThrottleReadBpsDevice = toThrottle(b.ThrottleReadBpsDevice)
		sb.ThrottleWriteBpsDevice = toThrottle(b.ThrottleWriteBpsDevice)
		sb.ThrottleReadIOPSDevice = toThrottle(b.ThrottleReadIOPSDevice)
		sb.ThrottleWriteIOPSDevice = toThrottle(b.ThrottleWriteIOPSDevice)
		sr.BlockIO = sb
	}
	for _, h := range r.HugepageLimits {
		if h != nil {
			sr.HugepageLimits = append(sr.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
		}
	}
	if n := r.Network; n != nil {
		sn := &specs.LinuxNetwork{}
		if n.ClassID != 0 {
			id := n.ClassID
			sn.ClassID = &id
		}
		for _, p := range n.Priorities {
			if p != nil {
				sn.Priorities = append(sn.Priorities, specs.LinuxInterfacePriority{Name: p.Name, Priority: p.Priority})
			}
		}
		sr.Network = sn
	}
	return sr
}

func toThrottle(ds []*agentpb.LinuxThrottleDevice) []specs.LinuxThrottleDevice {
	var out []specs.LinuxThrottleDevice
	for _, d := range ds {
		if d == nil {
			continue
		}
		td := specs.LinuxThrottleDevice{Rate: d.Rate}
		td.Major, td.Minor = d.Major, d.Minor
		out = append(out, td)
	}
	return out
}

func toSeccomp(sc *agentpb.LinuxSeccomp) *specs.LinuxSeccomp {
	s := &specs.LinuxSeccomp{DefaultAction: specs.LinuxSeccompAction(sc.DefaultAction)}
	for _, a := range sc.Architectures {
		s.Architectures = append(s.Architectures, specs.Arch(a))
	}
	for _, f := range sc.Flags {
		s.Flags = append(s.Flags, specs.LinuxSeccompFlag(f))
	}
	for _, sys := range sc.Syscalls {
		if sys == nil {
			continue
		}
		ss := specs.LinuxSyscall{Names: sys.Names, Action: specs.LinuxSeccompAction(sys.Action)}
		if e, ok := sys.ErrnoRet.(*agentpb.LinuxSyscall_Errnoret); ok {
			v := uint(e.Errnoret)
			ss.ErrnoRet = &v
		}
		for _, a := range sys.Args {
			if a != nil {
				ss.Args = append(ss.Args, specs.LinuxSeccompArg{Index: uint(a.Index), Value: a.Value, ValueTwo: a.ValueTwo, Op: specs.LinuxSeccompOperator(a.Op)})
			}
		}
		s.Syscalls = append(s.Syscalls, ss)
	}
	return s
}

// oomScoreAdj undoes the wrap of a negative score sent by a Kata 1.x host,
// whose API declares the field uint32: its runtime converts -997 (the score
// Kubernetes gives Guaranteed pods) to 2^32-997. Scores lie within
// [-1000, 1000], so nothing valid is taken for a wrapped one.
func oomScoreAdj(v int64) int64 {
	if v >= 1<<32-1000 && v < 1<<32 {
		return v - 1<<32
	}
	return v
}

func fileMode(m uint32) os.FileMode { return os.FileMode(m) }

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}

func devOrWild(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// FromSpec converts a runtime-spec Spec into Kata's proto OCI spec.
func FromSpec(s *specs.Spec) *agentpb.Spec {
	if s == nil {
		return nil
	}
	g := &agentpb.Spec{Version: s.Version, Hostname: s.Hostname, Annotations: s.Annotations}
	g.Process = FromProcess(s.Process)
	if s.Root != nil {
		g.Root = &agentpb.Root{Path: s.Root.Path, Readonly: s.Root.Readonly}
	}
	for _, m := range s.Mounts {
		g.Mounts = append(g.Mounts, &agentpb.Mount{Destination: m.Destination, Source: m.Source, Type: m.Type, Options: m.Options})
	}
	if h := s.Hooks; h != nil {
		g.Hooks = &agentpb.Hooks{
			Prestart: fromHooks(h.Prestart), CreateRuntime: fromHooks(h.CreateRuntime),
			CreateContainer: fromHooks(h.CreateContainer), StartContainer: fromHooks(h.StartContainer),
			Poststart: fromHooks(h.Poststart), Poststop: fromHooks(h.Poststop),
		}
	}
	if l := s.Linux; l != nil {
		gl := &agentpb.Linux{
			Sysctl: l.Sysctl, CgroupsPath: l.CgroupsPath, RootfsPropagation: l.RootfsPropagation,
			MaskedPaths: l.MaskedPaths, ReadonlyPaths: l.ReadonlyPaths, MountLabel: l.MountLabel,
		}
		for _, m := range l.UIDMappings {
			gl.UIDMappings = append(gl.UIDMappings, &agentpb.LinuxIDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
		}
		for _, m := range l.GIDMappings {
			gl.GIDMappings = append(gl.GIDMappings, &agentpb.LinuxIDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
		}
		for _, n := range l.Namespaces {
			gl.Namespaces = append(gl.Namespaces, &agentpb.LinuxNamespace{Type: string(n.Type), Path: n.Path})
		}
		for _, d := range l.Devices {
			gl.Devices = append(gl.Devices, &agentpb.LinuxDevice{
				Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor,
				FileMode: uint32(deref(d.FileMode)), UID: deref(d.UID), GID: deref(d.GID),
			})
		}
		gl.Resources = FromResources(l.Resources)
		if sc := l.Seccomp; sc != nil {
			gs := &agentpb.LinuxSeccomp{DefaultAction: string(sc.DefaultAction)}
			for _, a := range sc.Architectures {
				gs.Architectures = append(gs.Architectures, string(a))
			}
			for _, f := range sc.Flags {
				gs.Flags = append(gs.Flags, string(f))
			}
			for _, sys := range sc.Syscalls {
				gsys := &agentpb.LinuxSyscall{Names: sys.Names, Action: string(sys.Action)}
				if sys.ErrnoRet != nil {
					gsys.ErrnoRet = &agentpb.LinuxSyscall_Errnoret{Errnoret: uint32(*sys.ErrnoRet)}
				}
				for _, a := range sys.Args {
					gsys.Args = append(gsys.Args, &agentpb.LinuxSeccompArg{Index: uint64(a.Index), Value: a.Value, ValueTwo: a.ValueTwo, Op: string(a.Op)})
				}
				gs.Syscalls = append(gs.Syscalls, gsys)
			}
			gl.Seccomp = gs
		}
		g.Linux = gl
	}
	return g
}

// FromProcess converts a runtime-spec process.
func FromProcess(p *specs.Process) *agentpb.Process {
	if p == nil {
		return nil
	}
	gp := &agentpb.Process{
		Terminal: p.Terminal, Args: p.Args, Env: p.Env, Cwd: p.Cwd,
		NoNewPrivileges: p.NoNewPrivileges, ApparmorProfile: p.ApparmorProfile, SelinuxLabel: p.SelinuxLabel,
		OOMScoreAdj: int64(deref(p.OOMScoreAdj)),
		User:        &agentpb.User{UID: p.User.UID, GID: p.User.GID, AdditionalGids: p.User.AdditionalGids, Username: p.User.Username},
	}
	if b := p.ConsoleSize; b != nil {
		gp.ConsoleSize = &agentpb.Box{Height: uint32(b.Height), Width: uint32(b.Width)}
	}
	if c := p.Capabilities; c != nil {
		gp.Capabilities = &agentpb.LinuxCapabilities{Bounding: c.Bounding, Effective: c.Effective, Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
	}
	for _, r := range p.Rlimits {
		gp.Rlimits = append(gp.Rlimits, &agentpb.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return gp
}

func fromHooks(hs []specs.Hook) []*agentpb.Hook {
	var out []*agentpb.Hook
	for _, h := range hs {
		out = append(out, &agentpb.Hook{Path: h.Path, Args: h.Args, Env: h.Env, Timeout: int64(deref(h.Timeout))})
	}
	return out
}

// FromResources converts runtime-spec resources.
func FromResources(r *specs.LinuxResources) *agentpb.LinuxResources {
	if r == nil {
		return nil
	}
	g := &agentpb.LinuxResources{}
	for _, d := range r.Devices {
		g.Devices = append(g.Devices, &agentpb.LinuxDeviceCgroup{Allow: d.Allow, Type: d.Type, Major: devOrWild(d.Major), Minor: devOrWild(d.Minor), Access: d.Access})
	}
	if m := r.Memory; m != nil {
		g.Memory = &agentpb.LinuxMemory{
			Limit: deref(m.Limit), Reservation: deref(m.Reservation), Swap: deref(m.Swap),
			Swappiness: deref(m.Swappiness), DisableOOMKiller: deref(m.DisableOOMKiller),
		}
	}
	if c := r.CPU; c != nil {
		g.CPU = &agentpb.LinuxCPU{
			Shares: deref(c.Shares), Quota: deref(c.Quota), Period: deref(c.Period),
			RealtimeRuntime: deref(c.RealtimeRuntime), RealtimePeriod: deref(c.RealtimePeriod),
			Cpus: c.Cpus, Mems: c.Mems,
		}
	}
	if p := r.Pids; p != nil {
		g.Pids = &agentpb.LinuxPids{Limit: deref(p.Limit)}
	}
	if b := r.BlockIO; b != nil {
		g.BlockIO = &agentpb.LinuxBlockIO{Weight: uint32(deref(b.Weight)), LeafWeight: uint32(deref(b.LeafWeight))}
	}
	for _, h := range r.HugepageLimits {
		g.HugepageLimits = append(g.HugepageLimits, &agentpb.LinuxHugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
	}
	return g
}
