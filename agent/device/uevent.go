// Package device finds hot-plugged guest devices (block, SCSI, pmem) through
// kernel uevents and sysfs, and maps container spec devices to the guest's
// real device numbers.
package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Uevent is one kernel kobject uevent.
type Uevent struct {
	Action    string
	DevPath   string // sysfs path without the /sys prefix
	Subsystem string
	DevName   string // node name below /dev, if any
	SeqNum    string
	Env       map[string]string
}

// ParseUevent decodes a kernel uevent datagram ("action@devpath\0KEY=VALUE\0...").
// Messages from udev (prefixed "libudev") are rejected.
func ParseUevent(b []byte) (*Uevent, error) {
	if bytes.HasPrefix(b, []byte("libudev")) {
		return nil, errors.New("udev message, not a kernel uevent")
	}
	fields := bytes.Split(b, []byte{0})
	if len(fields) == 0 || !bytes.Contains(fields[0], []byte("@")) {
		return nil, fmt.Errorf("malformed uevent header %q", firstLine(b))
	}
	u := &Uevent{Env: make(map[string]string)}
	for _, f := range fields[1:] {
		if len(f) == 0 {
			continue
		}
		k, v, ok := strings.Cut(string(f), "=")
		if !ok {
			continue
		}
		u.Env[k] = v
		switch k {
		case "ACTION":
			u.Action = v
		case "DEVPATH":
			u.DevPath = v
		case "SUBSYSTEM":
			u.Subsystem = v
		case "DEVNAME":
			u.DevName = v
		case "SEQNUM":
			u.SeqNum = v
		}
	}
	if u.Action == "" || u.DevPath == "" {
		hdr := string(fields[0])
		act, path, _ := strings.Cut(hdr, "@")
		if u.Action == "" {
			u.Action = act
		}
		if u.DevPath == "" {
			u.DevPath = path
		}
	}
	return u, nil
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// Matcher selects the uevent a caller waits for.
type Matcher func(*Uevent) bool

// Watcher reads kernel uevents from a NETLINK_KOBJECT_UEVENT socket and hands
// them to registered waits. A wait is registered before the caller looks for
// the device in sysfs, so an event that races with the lookup is not lost.
type Watcher struct {
	f *os.File

	mu      sync.Mutex
	waits   map[*Wait]struct{}
	closed  bool
	readErr error
	done    chan struct{}
}

// NewWatcher opens the uevent socket in the caller's network namespace and
// starts reading from it.
func NewWatcher() (*Watcher, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// Group 1 carries the kernel's own events (group 2 is udev's re-broadcast).
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind uevent socket: %w", err)
	}
	// A bigger buffer rides out bursts such as a PCI rescan; failure is harmless.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	w := &Watcher{
		f:     os.NewFile(uintptr(fd), "uevent"),
		waits: make(map[*Wait]struct{}),
		done:  make(chan struct{}),
	}
	go w.loop()
	return w, nil
}

func (w *Watcher) loop() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				// The kernel dropped events; waiters re-check sysfs on timeout.
				continue
			}
			w.mu.Lock()
			w.readErr = err
			for wt := range w.waits {
				wt.fail(fmt.Errorf("uevent watcher stopped: %w", err))
			}
			w.waits = map[*Wait]struct{}{}
			w.mu.Unlock()
			return
		}
		u, err := ParseUevent(buf[:n])
		if err != nil {
			continue
		}
		w.dispatch(u)
	}
}

func (w *Watcher) dispatch(u *Uevent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for wt := range w.waits {
		if wt.match(u) {
			wt.deliver(u)
			delete(w.waits, wt)
		}
	}
}

// Close stops the watcher; pending waits fail.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	err := w.f.Close()
	<-w.done
	return err
}

// Watch registers a wait for the first uevent that m accepts.
func (w *Watcher) Watch(m Matcher) (*Wait, error) {
	wt := &Wait{match: m, ch: make(chan result, 1), w: w}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.readErr != nil {
		return nil, errors.New("uevent watcher is closed")
	}
	w.waits[wt] = struct{}{}
	return wt, nil
}

type result struct {
	u   *Uevent
	err error
}

// Wait is one pending registration on a Watcher.
type Wait struct {
	match Matcher
	ch    chan result
	w     *Watcher
}

func (wt *Wait) deliver(u *Uevent) { wt.ch <- result{u: u} }
func (wt *Wait) fail(err error)    { wt.ch <- result{err: err} }

// Wait blocks until a matching uevent arrives or ctx ends.
func (wt *Wait) Wait(ctx context.Context) (*Uevent, error) {
	select {
	case r := <-wt.ch:
		return r.u, r.err
	case <-ctx.Done():
		wt.Cancel()
		return nil, ctx.Err()
	}
}

// Cancel drops the registration; it is safe to call more than once.
func (wt *Wait) Cancel() {
	wt.w.mu.Lock()
	delete(wt.w.waits, wt)
	wt.w.mu.Unlock()
}
