package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits of a watchable-bind storage, as in Kata's agent: a bigger source is
// bind-mounted instead of mirrored.
const (
	WatchMaxEntries = 16      // files, symlinks and directories below the source
	WatchMaxBytes   = 1 << 20 // file contents and link targets
	WatchInterval   = 2 * time.Second
)

// Watcher serves watchable-bind storages. Kubernetes config maps, secrets
// and projected volumes reach the guest on a shared file system that gives
// the container no inotify events, so the watcher mirrors each such source
// into a tmpfs and polls it, replacing changed files and symlinks by rename:
// an application watching its configuration sees the update as it would on
// a node. Sources over the limits are bind-mounted (current content, no
// events).
type Watcher struct {
	// Root is the tmpfs for mirrors below it, mounted on first use
	// (<storage root>/shared/containers/watchable, where Kata's runtime
	// puts these mount points inside the read-only share). Mount points
	// elsewhere are mirrored in place.
	Root     string
	Interval time.Duration
	Log      *slog.Logger

	mu       sync.Mutex
	mirrors  map[string]*mirror // by mount point
	rootUp   bool               // the tmpfs at Root is mounted
	stopLoop chan struct{}      // closes to end the polling goroutine
}

// mirror is one watched source.
type mirror struct {
	src, dst string
	srcDir   bool
	bound    bool             // fell back to a bind mount
	seen     map[string]stamp // by path relative to src
}

// stamp is what tells a changed entry.
type stamp struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	link  string
	uid   uint32
	gid   uint32
}

// errTooBig says a source is over the watch limits.
var errTooBig = errors.New("over the watch limits")

// NewWatcher returns a watcher whose tmpfs is root.
func NewWatcher(root string) *Watcher {
	return &Watcher{Root: root, Interval: WatchInterval, mirrors: map[string]*mirror{}}
}

func (w *Watcher) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}

// Mount implements Handler: it mirrors the source at mp (or bind-mounts a
// source over the limits) and starts watching it.
func (w *Watcher) Mount(_ context.Context, env *Env, s *Storage, mp string) error {
	src, err := env.Confine(s.Source)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("watchable source: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.mirrors == nil {
		w.mirrors = map[string]*mirror{}
	}
	if w.Root != "" && within(w.Root, mp) {
		if err := w.mountRoot(); err != nil {
			return err
		}
	}
	m := &mirror{src: src, dst: mp, srcDir: st.IsDir(), seen: map[string]stamp{}}
	if m.srcDir {
		err = mkdirMountPoint(mp)
	} else {
		err = mkdirMountPoint(filepath.Dir(mp))
	}
	if err == nil {
		err = w.sync(m)
	}
	if err != nil {
		if !m.bound || unmount(mp) == nil {
			_ = os.RemoveAll(mp)
		}
		w.unmountRootIfIdle()
		return err
	}
	w.mirrors[mp] = m
	if w.stopLoop == nil {
		w.stopLoop = make(chan struct{})
		go w.loop(w.stopLoop)
	}
	return nil
}

// Cleanup implements Cleaner: the manager has unmounted a bind fallback;
// the mirror goes, and the polling stops with the last one.
func (w *Watcher) Cleanup(mp string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	m, ok := w.mirrors[mp]
	delete(w.mirrors, mp)
	var err error
	switch {
	case ok && m.bound:
		// Only the mount point is left; never recurse where the source was.
		err = os.Remove(mp)
	default:
		err = os.RemoveAll(mp)
	}
	w.unmountRootIfIdle()
	return err
}

// mountRoot mounts the tmpfs for mirrors once.
func (w *Watcher) mountRoot() error {
	if w.rootUp {
		return nil
	}
	if err := os.MkdirAll(w.Root, 0o755); err != nil {
		return fmt.Errorf("watchable root: %w", err)
	}
	if err := unix.Mount("tmpfs", w.Root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", w.Root, err)
	}
	w.rootUp = true
	return nil
}

func (w *Watcher) unmountRootIfIdle() {
	if len(w.mirrors) > 0 {
		return
	}
	if w.stopLoop != nil {
		close(w.stopLoop)
		w.stopLoop = nil
	}
	if w.rootUp {
		if err := unmount(w.Root); err != nil {
			w.log().Warn("watchable storages: unmount tmpfs", "path", w.Root, "err", err)
			return
		}
		w.rootUp = false
	}
}

func (w *Watcher) loop(stop <-chan struct{}) {
	interval := w.Interval
	if interval <= 0 {
		interval = WatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			w.SyncAll()
		}
	}
}

// SyncAll brings every mirror up to date with its source now.
func (w *Watcher) SyncAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.mirrors {
		if err := w.sync(m); err != nil {
			w.log().Warn("watchable storage: sync failed", "source", m.src, "mount_point", m.dst, "err", err)
		}
	}
}

// sync copies what changed in m's source since the last call, or turns m
// into a bind mount when the source has grown over the limits.
func (w *Watcher) sync(m *mirror) error {
	if m.bound {
		return nil
	}
	cur, order, err := scanSource(m.src)
	if errors.Is(err, errTooBig) {
		w.log().Info("watchable storage over the limits: bind-mounted instead", "source", m.src,
			"max_entries", WatchMaxEntries, "max_bytes", WatchMaxBytes)
		return m.bind()
	}
	if err != nil {
		return err
	}
	// New and changed entries, parents first; then what went, children first.
	for _, rel := range order {
		s := cur[rel]
		if old, ok := m.seen[rel]; ok && old == s {
			continue
		}
		if err := m.copyEntry(rel, s); err != nil {
			return err
		}
		m.seen[rel] = s
	}
	var gone []string
	for rel := range m.seen {
		if _, ok := cur[rel]; !ok {
			gone = append(gone, rel)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(gone)))
	for _, rel := range gone {
		if err := os.RemoveAll(m.target(rel)); err != nil {
			return err
		}
		delete(m.seen, rel)
	}
	return nil
}

// scanSource stamps every entry below src ("." for src itself), in walk
// order, and fails with errTooBig past the limits.
func scanSource(src string) (map[string]stamp, []string, error) {
	cur := map[string]stamp{}
	var order []string
	var bytes int64
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		s := stamp{mode: fi.Mode(), mtime: fi.ModTime()}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			s.uid, s.gid = sys.Uid, sys.Gid
		}
		switch {
		case fi.Mode().IsRegular():
			s.size = fi.Size()
			bytes += s.size
		case fi.Mode()&fs.ModeSymlink != 0:
			if s.link, err = os.Readlink(p); err != nil {
				return err
			}
			bytes += int64(len(s.link))
		case fi.IsDir():
			s.mtime = time.Time{} // a directory's own changes show in its entries
		default:
			return nil // devices, fifos and sockets are not mirrored
		}
		// Counted with the source itself, as Kata's agent counts.
		if len(cur)+1 > WatchMaxEntries {
			return errTooBig
		}
		if bytes > WatchMaxBytes {
			return errTooBig
		}
		cur[rel] = s
		order = append(order, rel)
		return nil
	})
	return cur, order, err
}

func (m *mirror) target(rel string) string {
	if rel == "." {
		return m.dst
	}
	return filepath.Join(m.dst, rel)
}

// copyEntry makes the mirror of one source entry; files and symlinks are
// replaced by rename, so a reader never sees them half written.
func (m *mirror) copyEntry(rel string, s stamp) error {
	src, dst := filepath.Join(m.src, rel), m.target(rel)
	switch {
	case s.mode.IsDir():
		if fi, err := os.Lstat(dst); err == nil && !fi.IsDir() {
			if err := os.Remove(dst); err != nil { // was a file or symlink
				return err
			}
		}
		if err := os.Mkdir(dst, s.mode.Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Chmod(dst, s.mode.Perm()); err != nil {
			return err
		}
		return os.Lchown(dst, int(s.uid), int(s.gid))
	case s.mode&fs.ModeSymlink != 0:
		tmp := tempName(dst)
		if err := os.Symlink(s.link, tmp); err != nil {
			return err
		}
		if err := os.Lchown(tmp, int(s.uid), int(s.gid)); err != nil {
			os.Remove(tmp)
			return err
		}
		return renameOver(tmp, dst)
	default:
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		tmp := tempName(dst)
		out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, io.LimitReader(in, WatchMaxBytes))
		if err == nil {
			err = out.Chmod(s.mode.Perm())
		}
		if err == nil {
			err = out.Chown(int(s.uid), int(s.gid))
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			return err
		}
		return renameOver(tmp, dst)
	}
}

// renameOver renames tmp to dst, first removing a directory at dst (an
// entry that changed kind).
func renameOver(tmp, dst string) error {
	if fi, err := os.Lstat(dst); err == nil && fi.IsDir() {
		if err := os.RemoveAll(dst); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func tempName(dst string) string {
	return filepath.Join(filepath.Dir(dst), ".kguest-watch-"+filepath.Base(dst))
}

// bind replaces the mirror with a bind mount of the source.
func (m *mirror) bind() error {
	if m.srcDir {
		entries, err := os.ReadDir(m.dst)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(m.dst, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := makeMountPoint(m.dst, m.srcDir); err != nil {
		return err
	}
	if err := doMount(m.src, m.dst, "", []string{"rbind"}); err != nil {
		return err
	}
	m.bound = true
	m.seen = nil
	return nil
}

// within reports whether p is root or below it.
func within(root, p string) bool {
	root = filepath.Clean(root)
	p = filepath.Clean(p)
	return p == root || strings.HasPrefix(p, root+string(filepath.Separator))
}
