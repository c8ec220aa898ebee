package channel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"
)

// DefaultSerialName is the name the host gives the agent's virtio-serial port.
const DefaultSerialName = "agent.channel.0"

// PortOpener opens the byte stream a yamux session runs over. Open blocks
// until the peer is there (for a virtio-serial port: until the host side is
// connected) or ctx is done. Tests supply pipes or socket pairs.
type PortOpener interface {
	Open(ctx context.Context) (io.ReadWriteCloser, error)
}

// yamuxConfig is tuned for a VM: the guest may be paused for a long time, so
// no keep-alive pings that would tear the session down.
func yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamCloseTimeout = time.Minute
	c.StreamOpenTimeout = 0
	c.LogOutput = nil
	c.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	return c
}

// SerialAddr is the net.Addr of a virtio-serial listener.
type SerialAddr struct{ Path string }

func (SerialAddr) Network() string  { return string(KindSerial) }
func (a SerialAddr) String() string { return a.Path }

// yamuxListener serves yamux streams from sessions over a port. When the
// session ends (the host side hung up) it reopens the port and starts a new
// session, so Accept keeps working across host reconnects.
type yamuxListener struct {
	opener PortOpener
	addr   net.Addr
	log    *slog.Logger
	conns  chan net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu   sync.Mutex
	sess *yamux.Session
}

// NewYamuxListener returns a net.Listener that accepts yamux streams over the
// ports that opener gives, one session at a time, starting a new session
// each time the previous one ends.
func NewYamuxListener(opener PortOpener, addr net.Addr, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &yamuxListener{
		opener: opener,
		addr:   addr,
		log:    log,
		conns:  make(chan net.Conn),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go l.run()
	return l
}

func (l *yamuxListener) run() {
	defer close(l.done)
	backoff := 10 * time.Millisecond
	for gen := 1; ; gen++ {
		port, err := l.opener.Open(l.ctx)
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			l.log.Warn("channel: open port failed, retrying", "addr", l.addr.String(), "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
		sess, err := yamux.Server(port, yamuxConfig(l.log))
		if err != nil { // only a bad config can fail here
			port.Close()
			l.log.Error("channel: yamux session", "error", err)
			return
		}
		l.mu.Lock()
		if l.ctx.Err() != nil {
			l.mu.Unlock()
			sess.Close()
			return
		}
		l.sess = sess
		l.mu.Unlock()
		l.log.Debug("channel: session up", "addr", l.addr.String(), "session", gen)
		err = l.serve(sess)
		sess.Close() // also closes the port
		if l.ctx.Err() != nil {
			return
		}
		l.log.Info("channel: host side went away, reopening", "addr", l.addr.String(), "session", gen, "reason", err)
	}
}

// serve hands the session's streams to Accept until the session ends.
func (l *yamuxListener) serve(sess *yamux.Session) error {
	for {
		c, err := sess.Accept()
		if err != nil {
			return err
		}
		select {
		case l.conns <- c:
		case <-l.ctx.Done():
			c.Close()
			return net.ErrClosed
		}
	}
}

func (l *yamuxListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, &net.OpError{Op: "accept", Net: l.addr.Network(), Addr: l.addr, Err: net.ErrClosed}
	}
}

func (l *yamuxListener) Close() error {
	l.mu.Lock()
	if l.ctx.Err() != nil {
		l.mu.Unlock()
		return nil
	}
	l.cancel()
	sess := l.sess
	l.mu.Unlock()
	if sess != nil {
		sess.Close()
	}
	<-l.done
	return nil
}

func (l *yamuxListener) Addr() net.Addr { return l.addr }

// FindSerialPort returns the device node of the virtio-serial port called
// name, looking in sysfsRoot/class/virtio-ports/*/name.
func FindSerialPort(sysfsRoot, devRoot, name string) (string, error) {
	dir := filepath.Join(sysfsRoot, "class", "virtio-ports")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "name"))
		if err != nil {
			continue
		}
		if string(trimNL(b)) == name {
			return filepath.Join(devRoot, e.Name()), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q in %s: %w", name, dir, os.ErrNotExist)
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}

// WaitSerialPort polls for the port called name for up to timeout: the
// virtio-serial device may be probed after the agent starts.
func WaitSerialPort(ctx context.Context, sysfsRoot, devRoot, name string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	tick := 5 * time.Millisecond
	for {
		path, err := FindSerialPort(sysfsRoot, devRoot, name)
		if err == nil {
			if _, serr := os.Stat(path); serr == nil {
				return path, nil
			} else {
				err = serr
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("virtio-serial port %q not found after %v: %w", name, timeout, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(tick):
		}
		tick = min(tick*2, 100*time.Millisecond)
	}
}

// DevicePort opens a virtio-serial port device. Open waits, without
// spinning, until the host side is connected.
type DevicePort struct{ Path string }

// Open opens the port and waits for the host. The kernel's virtio console
// driver makes reads return 0 (EOF) and writes block while the host side is
// not connected, and poll reports POLLOUT only once it is (and wakes the
// waiters when the host connects), so wait for writability through the
// runtime poller before handing the port to yamux.
func (d DevicePort) Open(ctx context.Context) (io.ReadWriteCloser, error) {
	f, err := os.OpenFile(d.Path, os.O_RDWR|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	err = waitHostConnected(f)
	if !stop() {
		return nil, ctx.Err()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("wait for host on %s: %w", d.Path, err)
	}
	return f, nil
}

func waitHostConnected(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	werr := rc.Write(func(fd uintptr) bool {
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			_, perr = unix.Poll(fds, 0)
			if errors.Is(perr, unix.EINTR) {
				continue
			}
			if perr != nil {
				return true
			}
			if fds[0].Revents&unix.POLLNVAL != 0 {
				perr = unix.EBADF
				return true
			}
			// POLLOUT without POLLHUP: the host side is open.
			return fds[0].Revents&unix.POLLOUT != 0 && fds[0].Revents&unix.POLLHUP == 0
		}
	})
	if werr != nil {
		return werr
	}
	return perr
}
