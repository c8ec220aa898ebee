// Package storage mounts the storages a Kata runtime hands the agent
// (Storage messages of CreateSandbox and CreateContainer), keeps them
// reference-counted across containers, and unmounts them when the last user
// goes.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/kguest/kguest/agent/device"
	"golang.org/x/sys/unix"
)

// FSGroup mirrors Kata's FSGroup: the group that should own a volume.
type FSGroup struct {
	GroupID uint32
}

// Storage mirrors Kata's Storage message.
type Storage struct {
	Driver        string
	DriverOptions []string
	Source        string
	Fstype        string
	Options       []string
	MountPoint    string
	FSGroup       *FSGroup
}

type entry struct {
	storage Storage
	refs    int
}

// Manager mounts storages below Root and tracks who uses them.
type Manager struct {
	// Root confines mount points and path sources
	// (/run/kata-containers in the guest).
	Root     string
	Devices  *device.Manager
	Handlers Registry

	mu      sync.Mutex
	entries map[string]*entry   // by resolved mount point
	owners  map[string][]string // owner ("" = sandbox) -> mount points, in mount order
}

// NewManager returns a manager with the default handlers.
func NewManager(root string, devices *device.Manager) *Manager {
	h := DefaultRegistry()
	h[DriverWatchable] = NewWatcher(filepath.Join(root, "shared", "containers", "watchable"))
	return &Manager{
		Root:     root,
		Devices:  devices,
		Handlers: h,
		entries:  map[string]*entry{},
		owners:   map[string][]string{},
	}
}

func (m *Manager) env() *Env {
	return &Env{Devices: m.Devices, Confine: func(p string) (string, error) { return Confine(m.Root, p) }}
}

// Add mounts the storages for owner (a container id, "" for the sandbox).
// A mount point already in use only gains a reference. On error, whatever
// this call mounted is undone. The returned rollback undoes the whole call
// later (for a CreateContainer that fails after its storages were set up).
func (m *Manager) Add(ctx context.Context, owner string, storages []Storage) (rollback func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := os.MkdirAll(m.Root, 0o755); err != nil {
		return nil, fmt.Errorf("storage root: %w", err)
	}
	var added []string
	undo := func() {
		for i := len(added) - 1; i >= 0; i-- {
			_ = m.dropLocked(owner, added[i])
		}
	}
	for i := range storages {
		mp, err := m.addLocked(ctx, &storages[i])
		if err != nil {
			undo()
			return nil, err
		}
		added = append(added, mp)
		m.owners[owner] = append(m.owners[owner], mp)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			undo()
		})
	}, nil
}

func (m *Manager) addLocked(ctx context.Context, s *Storage) (string, error) {
	if s.MountPoint == "" {
		return "", fmt.Errorf("%w: %s storage %q has no mount point", ErrInvalid, s.Driver, s.Source)
	}
	h, ok := m.Handlers[s.Driver]
	if !ok {
		return "", fmt.Errorf("%w: unknown storage driver %q", ErrInvalid, s.Driver)
	}
	mp, err := Confine(m.Root, s.MountPoint)
	if err != nil {
		return "", fmt.Errorf("mount point: %w", err)
	}
	if e, ok := m.entries[mp]; ok {
		e.refs++
		return mp, nil
	}
	if err := h.Mount(ctx, m.env(), s, mp); err != nil {
		return "", fmt.Errorf("%s storage at %s: %w", s.Driver, s.MountPoint, err)
	}
	m.entries[mp] = &entry{storage: *s, refs: 1}
	return mp, nil
}

// dropLocked removes one reference of owner to mp, unmounting on the last.
func (m *Manager) dropLocked(owner, mp string) error {
	list := m.owners[owner]
	found := false
	for i := len(list) - 1; i >= 0; i-- {
		if list[i] == mp {
			list = append(list[:i:i], list[i+1:]...)
			found = true
			break
		}
	}
	if !found {
		// Already released (a rollback after Release, say).
		return nil
	}
	if len(list) == 0 {
		delete(m.owners, owner)
	} else {
		m.owners[owner] = list
	}
	e, ok := m.entries[mp]
	if !ok {
		return nil
	}
	if e.refs--; e.refs > 0 {
		return nil
	}
	delete(m.entries, mp)
	if err := unmount(mp); err != nil {
		return err
	}
	if c, ok := m.Handlers[e.storage.Driver].(Cleaner); ok {
		return c.Cleanup(mp)
	}
	// The mount point was made for the storage; an error here means
	// something else lives there now, which is left alone.
	_ = os.Remove(mp)
	return nil
}

// Release drops every reference owner holds, unmounting storages nobody
// else uses.
func (m *Manager) Release(owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := append([]string(nil), m.owners[owner]...)
	var errs []error
	for i := len(list) - 1; i >= 0; i-- {
		errs = append(errs, m.dropLocked(owner, list[i]))
	}
	return errors.Join(errs...)
}

// Refs reports how many references the storage at mountPoint has (0 when
// it is not mounted by the manager).
func (m *Manager) Refs(mountPoint string) int {
	mp, err := Confine(m.Root, mountPoint)
	if err != nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[mp]; ok {
		return e.refs
	}
	return 0
}

// UpdateEphemeral remounts existing ephemeral storages with new options
// (a new tmpfs size, say), as UpdateEphemeralMounts asks.
func (m *Manager) UpdateEphemeral(storages []Storage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range storages {
		if s.Driver != DriverEphemeral {
			continue
		}
		mp, err := Confine(m.Root, s.MountPoint)
		if err != nil {
			return err
		}
		if _, ok := m.entries[mp]; !ok {
			return fmt.Errorf("%w: no ephemeral storage at %s", ErrNotFound, s.MountPoint)
		}
		flags, _, data := ParseMountOptions(s.Options)
		if err := unix.Mount("", mp, "", flags|unix.MS_REMOUNT, data); err != nil {
			return fmt.Errorf("remount %s: %w", mp, err)
		}
		m.entries[mp].storage.Options = s.Options
	}
	return nil
}

// ErrNotFound marks a storage that is not mounted.
var ErrNotFound = errors.New("storage not found")

func unmount(mp string) error {
	err := unix.Unmount(mp, 0)
	switch {
	case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		// EINVAL: not a mount point (local storages).
		return nil
	case errors.Is(err, unix.EBUSY):
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
		return nil
	default:
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
}
