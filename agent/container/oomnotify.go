package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/opencontainers/cgroups/fscommon"
	"golang.org/x/sys/unix"
)

// notifyOOM does what libcontainer's Container.NotifyOOM does, without its
// cost: libcontainer reads a blocking eventfd (cgroup v1) or inotify fd (v2),
// which holds an OS thread for each container's whole life, and the Go
// runtime never lets a thread go once it is idle. Here the fd is
// non-blocking and read through the runtime's poller. The channel gets a
// value on each memory event and is closed once the cgroup is gone (v1) or
// empty (v2).
func notifyOOM(dir string, v2 bool) (<-chan struct{}, error) {
	if dir == "" {
		return nil, errors.New("no memory cgroup")
	}
	if v2 {
		return notifyOOMv2(dir)
	}
	return notifyOOMv1(dir)
}

func notifyOOMv1(dir string) (<-chan struct{}, error) {
	ctl, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return nil, err
	}
	defer ctl.Close() // the registration holds its own reference
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := os.NewFile(uintptr(fd), "oom-eventfd")
	eventControl := filepath.Join(dir, "cgroup.event_control")
	if err := os.WriteFile(eventControl, fmt.Appendf(nil, "%d %d", fd, ctl.Fd()), 0); err != nil {
		ev.Close()
		return nil, fmt.Errorf("register OOM event: %w", err)
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer ev.Close()
		buf := make([]byte, 8)
		for {
			if _, err := ev.Read(buf); err != nil {
				return
			}
			// Removing the cgroup signals the eventfd too.
			if _, err := os.Lstat(eventControl); errors.Is(err, os.ErrNotExist) {
				return
			}
			ch <- struct{}{}
		}
	}()
	return ch, nil
}

func notifyOOMv2(dir string) (<-chan struct{}, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	in := os.NewFile(uintptr(fd), "oom-inotify")
	// cgroupfs sends no delete events: cgroup.events (populated 0) tells
	// when the watch can end.
	evWd, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "memory.events"), unix.IN_MODIFY)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("watch memory.events: %w", err)
	}
	cgWd, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "cgroup.events"), unix.IN_MODIFY)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("watch cgroup.events: %w", err)
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer in.Close()
		var buf [unix.SizeofInotifyEvent + unix.PathMax + 1]byte
		for {
			n, err := in.Read(buf[:])
			if err != nil {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				e := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				off += unix.SizeofInotifyEvent + int(e.Len)
				if e.Mask&unix.IN_MODIFY == 0 {
					continue
				}
				switch int(e.Wd) {
				case evWd:
					if n, err := fscommon.GetValueByKey(dir, "memory.events", "oom_kill"); err != nil || n > 0 {
						ch <- struct{}{}
					}
				case cgWd:
					if n, err := fscommon.GetValueByKey(dir, "cgroup.events", "populated"); err != nil || n == 0 {
						return
					}
				}
			}
		}
	}()
	return ch, nil
}
