// Package pid1 does the duties of a guest's init: the early mounts, cgroups,
// console and session, loopback, signals and power-off. Everything it sets up
// is skipped when already present, so the same agent also runs under another
// init (systemd).
package pid1

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kguest/kguest/init/cmdline"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultPath is the PATH the init gives itself and its children.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// IsPID1 reports whether this process is the system's (or its pid
// namespace's) init.
func IsPID1() bool { return os.Getpid() == 1 }

// Init describes where and how to set the system up.
type Init struct {
	// Root is the directory the file systems are mounted under: "/" in
	// production, a scratch directory in tests.
	Root string
	// Console makes this process a session leader with the console as its
	// controlling terminal and its stdin, stdout and stderr.
	Console bool
	// Loopback brings the lo interface up.
	Loopback bool
	// Log receives what was done and skipped; nil discards.
	Log *slog.Logger
}

// Setup prepares the running system as its init: see Init.Setup. The console
// is taken over only when this process is PID 1.
func Setup(cfg cmdline.Config) error {
	i := &Init{Root: "/", Console: IsPID1(), Loopback: true, Log: slog.Default()}
	return i.Setup(cfg)
}

// Setup mounts proc, sysfs, devtmpfs, devpts, /dev/shm, /run and the cgroup
// hierarchies (v2 when cfg.UnifiedCgroupHierarchy), creates the /dev links,
// sets PATH, takes the console if asked and brings lo up. A step that
// fails does not stop the others; all failures are returned together.
func (i *Init) Setup(cfg cmdline.Config) error {
	log := i.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root := i.Root
	if root == "" {
		root = "/"
	}
	var errs []error

	table, err := ReadMountTable()
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	mounted := map[string]bool{}
	for _, m := range BaseMounts() {
		if m.Target == "/proc" || m.Target == "/sys" {
			// Mounting proc makes the table readable (it was empty before).
			if table, err = ReadMountTable(); err != nil {
				return fmt.Errorf("read mount table: %w", err)
			}
		}
		todo, _ := Plan(root, []Mount{m}, table)
		if len(todo) == 0 {
			log.Debug("pid1: already mounted, skipped", "target", m.Target)
			continue
		}
		if err := doMount(root, m); err != nil {
			errs = append(errs, err)
			continue
		}
		mounted[m.Target] = true
	}
	log.Debug("pid1: mounted", "targets", keys(mounted))

	if mounted["/dev"] || mounted["/dev/pts"] {
		for _, s := range DevSymlinks() {
			if s.Path == "/dev/ptmx" && !mounted["/dev/pts"] {
				continue
			}
			if err := makeSymlink(root, s); err != nil {
				errs = append(errs, err)
			}
		}
	}

	if table, err = ReadMountTable(); err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	if err := i.setupCgroups(root, cfg, table, log); err != nil {
		errs = append(errs, err)
	}

	if os.Getenv("PATH") == "" || IsPID1() {
		os.Setenv("PATH", DefaultPath)
	}
	if i.Console {
		if err := TakeConsole(filepath.Join(root, "dev/console")); err != nil {
			errs = append(errs, err)
		}
	}
	if i.Loopback {
		if err := LoopbackUp(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (i *Init) setupCgroups(root string, cfg cmdline.Config, table MountTable, log *slog.Logger) error {
	cgroot := filepath.Join(root, CgroupRoot)
	if table.Mounted(cgroot) {
		log.Debug("pid1: cgroups already mounted, skipped", "target", CgroupRoot, "fstype", table[cgroot].FSType)
		return nil
	}
	if cfg.UnifiedCgroupHierarchy {
		if err := doMount(root, CgroupV2Mount()); err != nil {
			return err
		}
		if err := enableControllers(cgroot); err != nil {
			log.Warn("pid1: some cgroup v2 controllers could not be enabled", "error", err)
		}
		log.Debug("pid1: mounted cgroup v2", "target", CgroupRoot)
		return nil
	}
	f, err := os.Open(filepath.Join(root, "proc/cgroups"))
	if err != nil {
		return fmt.Errorf("cgroup v1: %w", err)
	}
	ctrls, err := ParseProcCgroups(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("cgroup v1: %w", err)
	}
	mounts, links := CgroupV1Mounts(ctrls)
	todo, _ := Plan(root, mounts, table)
	var errs []error
	for _, m := range todo {
		if err := doMount(root, m); err != nil {
			if m.FSType == "tmpfs" {
				return err
			}
			// One controller that cannot be mounted should not cost the
			// others.
			errs = append(errs, err)
		}
	}
	for _, l := range links {
		if err := makeSymlink(root, l); err != nil {
			errs = append(errs, err)
		}
	}
	// As Kata does: account memory hierarchically (always on in recent
	// kernels, where the file may refuse writes).
	_ = os.WriteFile(filepath.Join(cgroot, "memory", "memory.use_hierarchy"), []byte("1"), 0)
	log.Debug("pid1: mounted cgroup v1", "hierarchies", mountSummary(todo))
	return errors.Join(errs...)
}

// TakeConsole starts a new session, makes the console its controlling
// terminal and points stdin, stdout and stderr at it.
func TakeConsole(path string) error {
	if _, err := unix.Setsid(); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("setsid: %w", err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open console %s: %w", path, err)
	}
	defer func() {
		if fd > 2 {
			unix.Close(fd)
		}
	}()
	if err := unix.IoctlSetInt(fd, unix.TIOCSCTTY, 1); err != nil {
		// Not every console is a tty that can control a session; the
		// standard streams are still worth having.
		slog.Default().Debug("pid1: console is not a controlling tty", "path", path, "error", err)
	}
	for std := 0; std <= 2; std++ {
		if fd == std {
			continue
		}
		if err := unix.Dup3(fd, std, 0); err != nil {
			return fmt.Errorf("console as fd %d: %w", std, err)
		}
	}
	return nil
}

// LoopbackUp brings the lo interface up (the kernel gives it 127.0.0.1 and
// ::1 when it comes up).
func LoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

func keys(m map[string]bool) []string {
	var out []string
	for _, t := range BaseMounts() {
		if m[t.Target] {
			out = append(out, t.Target)
		}
	}
	return out
}
