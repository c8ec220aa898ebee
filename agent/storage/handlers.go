package storage

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/kguest/kguest/agent/device"
	"golang.org/x/sys/unix"
)

// Driver names, as the Kata runtime puts them in Storage.driver.
const (
	DriverBlk       = device.DriverBlk
	DriverVirtBlk   = device.DriverVirtBlk
	DriverBlkCCW    = device.DriverBlkCCW
	DriverMMIOBlk   = device.DriverMMIOBlk
	DriverSCSI      = device.DriverSCSI
	DriverNVDIMM    = device.DriverNVDIMM
	DriverPmem      = device.DriverPmem
	Driver9P        = "9p"
	DriverVirtioFS  = "virtio-fs"
	DriverEphemeral = "ephemeral"
	DriverLocal     = "local"
	DriverOverlayFS = "overlayfs"
	DriverBind      = "bind"
	DriverWatchable = "watchable-bind"
)

// Handler makes one kind of storage available at its (already confined)
// mount point.
type Handler interface {
	Mount(ctx context.Context, env *Env, s *Storage, mountPoint string) error
}

// Cleaner is implemented by handlers whose storages need more than an
// unmount when the last user goes.
type Cleaner interface {
	Cleanup(mountPoint string) error
}

// Env is what handlers may use: device lookup and path confinement.
type Env struct {
	Devices *device.Manager
	// Confine resolves a source path the storage names (bind sources,
	// overlay layers) below the agent's storage root.
	Confine func(string) (string, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, env *Env, s *Storage, mountPoint string) error

// Mount implements Handler.
func (f HandlerFunc) Mount(ctx context.Context, env *Env, s *Storage, mp string) error {
	return f(ctx, env, s, mp)
}

// Registry maps driver names to handlers.
type Registry map[string]Handler

// DefaultRegistry returns the handlers for every driver the agent supports.
func DefaultRegistry() Registry {
	blk := HandlerFunc(mountBlock)
	shared := HandlerFunc(mountShared)
	return Registry{
		DriverBlk:       blk,
		DriverVirtBlk:   blk,
		DriverBlkCCW:    blk,
		DriverMMIOBlk:   blk,
		DriverSCSI:      blk,
		DriverNVDIMM:    blk,
		DriverPmem:      blk,
		Driver9P:        shared,
		DriverVirtioFS:  shared,
		DriverEphemeral: HandlerFunc(mountEphemeral),
		DriverLocal:     localHandler{},
		DriverOverlayFS: HandlerFunc(mountOverlay),
		DriverBind:      HandlerFunc(mountBind),
		DriverWatchable: NewWatcher(""),
	}
}

// Drivers lists the registry's driver names, sorted.
func (r Registry) Drivers() []string {
	out := make([]string, 0, len(r))
	for k := range r {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Drivers lists the storage drivers the agent supports, for AgentDetails.
func Drivers() []string { return DefaultRegistry().Drivers() }

func mkdirMountPoint(mp string) error {
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	return nil
}

// doMount mounts and then applies propagation flags, which mount(2) takes
// in a separate call.
func doMount(source, target, fstype string, options []string) error {
	flags, prop, data := ParseMountOptions(options)
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", source, target, fstype, err)
	}
	// A read-only bind needs a remount to take effect.
	if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
		if err := unix.Mount("", target, "", flags|unix.MS_REMOUNT, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	if prop != 0 {
		if err := unix.Mount("", target, "", prop, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("set propagation on %s: %w", target, err)
		}
	}
	return nil
}

// mountBlock finds the disk the storage names and mounts its file system.
func mountBlock(ctx context.Context, env *Env, s *Storage, mp string) error {
	if s.Fstype == "" {
		return fmt.Errorf("%w: %s storage %q has no fstype", ErrInvalid, s.Driver, s.Source)
	}
	if env.Devices == nil {
		return fmt.Errorf("%s storage: no device manager", s.Driver)
	}
	var dev string
	var err error
	switch s.Driver {
	case DriverBlk, DriverVirtBlk:
		if strings.HasPrefix(s.Source, "/dev/") {
			dev, err = env.Devices.ByName(ctx, s.Source)
		} else {
			dev, err = env.Devices.VirtioBlkPCI(ctx, s.Source)
		}
	case DriverBlkCCW:
		dev, err = env.Devices.VirtioBlkCCW(ctx, s.Source)
	case DriverSCSI:
		dev, err = env.Devices.SCSI(ctx, s.Source)
	default: // mmioblk, nvdimm, pmem name the node
		dev, err = env.Devices.ByName(ctx, s.Source)
	}
	if err != nil {
		return err
	}
	if err := mkdirMountPoint(mp); err != nil {
		return err
	}
	return doMount(dev, mp, s.Fstype, s.Options)
}

// mountShared mounts a 9p or virtio-fs share by its tag.
func mountShared(_ context.Context, _ *Env, s *Storage, mp string) error {
	fstype := s.Fstype
	if fstype == "" {
		fstype = map[string]string{Driver9P: "9p", DriverVirtioFS: "virtiofs"}[s.Driver]
	}
	if s.Source == "" {
		return fmt.Errorf("%w: %s storage has no source tag", ErrInvalid, s.Driver)
	}
	if err := mkdirMountPoint(mp); err != nil {
		return err
	}
	return doMount(s.Source, mp, fstype, s.Options)
}

// mountEphemeral mounts a tmpfs (or hugetlbfs) the containers share.
func mountEphemeral(_ context.Context, _ *Env, s *Storage, mp string) error {
	fstype := s.Fstype
	if fstype == "" {
		fstype = "tmpfs"
	}
	if fstype != "tmpfs" && fstype != "hugetlbfs" {
		return fmt.Errorf("%w: ephemeral storage of type %q", ErrInvalid, fstype)
	}
	src := s.Source
	if src == "" {
		src = fstype
	}
	if err := mkdirMountPoint(mp); err != nil {
		return err
	}
	return doMount(src, mp, fstype, s.Options)
}

// localHandler creates a plain directory the containers share, with the
// mode given as "mode=0777" in the options.
type localHandler struct{}

func (localHandler) Mount(_ context.Context, _ *Env, s *Storage, mp string) error {
	if err := mkdirMountPoint(mp); err != nil {
		return err
	}
	for _, o := range s.Options {
		v, ok := strings.CutPrefix(o, "mode=")
		if !ok {
			continue
		}
		mode, err := strconv.ParseUint(v, 8, 32)
		if err != nil || mode > 0o7777 {
			return fmt.Errorf("%w: local storage mode %q", ErrInvalid, v)
		}
		if err := os.Chmod(mp, os.FileMode(mode&0o777)|modeBits(mode)); err != nil {
			return fmt.Errorf("chmod %s: %w", mp, err)
		}
	}
	if s.FSGroup != nil {
		if err := os.Chown(mp, -1, int(s.FSGroup.GroupID)); err != nil {
			return fmt.Errorf("chown %s: %w", mp, err)
		}
	}
	return nil
}

func modeBits(m uint64) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// Cleanup removes the directory the local storage created.
func (localHandler) Cleanup(mp string) error { return os.RemoveAll(mp) }

// mountBind bind-mounts a confined source directory or file.
func mountBind(_ context.Context, env *Env, s *Storage, mp string) error {
	src, err := env.Confine(s.Source)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind source: %w", err)
	}
	if err := makeMountPoint(mp, st.IsDir()); err != nil {
		return err
	}
	return doMount(src, mp, "", append([]string{"rbind"}, s.Options...))
}

// makeMountPoint makes a directory, or a file for a file to be bound on.
func makeMountPoint(mp string, dir bool) error {
	if dir {
		return mkdirMountPoint(mp)
	}
	if err := mkdirMountPoint(parentDir(mp)); err != nil {
		return err
	}
	f, err := os.OpenFile(mp, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	return f.Close()
}

func parentDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// mountOverlay mounts an overlay whose layers (lowerdir, upperdir, workdir
// in the options) are all confined; upper and work dirs are created.
func mountOverlay(_ context.Context, env *Env, s *Storage, mp string) error {
	var opts []string
	hasLower := false
	for _, o := range s.Options {
		for _, w := range strings.Split(o, ",") {
			k, v, ok := strings.Cut(w, "=")
			if !ok || (k != "lowerdir" && k != "upperdir" && k != "workdir") {
				opts = append(opts, w)
				continue
			}
			var paths []string
			for _, p := range strings.Split(v, ":") {
				c, err := env.Confine(p)
				if err != nil {
					return fmt.Errorf("overlay %s: %w", k, err)
				}
				if k != "lowerdir" {
					if err := os.MkdirAll(c, 0o755); err != nil {
						return fmt.Errorf("overlay %s: %w", k, err)
					}
				}
				paths = append(paths, c)
			}
			if k == "lowerdir" {
				hasLower = true
			}
			opts = append(opts, k+"="+strings.Join(paths, ":"))
		}
	}
	if !hasLower {
		return fmt.Errorf("%w: overlayfs storage without lowerdir", ErrInvalid)
	}
	if err := mkdirMountPoint(mp); err != nil {
		return err
	}
	src := s.Source
	if src == "" || strings.HasPrefix(src, "/") {
		src = "overlay"
	}
	return doMount(src, mp, "overlay", opts)
}
