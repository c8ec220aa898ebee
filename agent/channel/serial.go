package channel

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
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
	port io.Closer
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
		l.mu.Lock()
		if l.ctx.Err() != nil {
			l.mu.Unlock()
			port.Close()
			return
		}
		l.port = port
		l.mu.Unlock()
		err = l.servePort(port)
		port.Close()
		if l.ctx.Err() != nil {
			return
		}
		l.log.Info("channel: host side went away, reopening", "addr", l.addr.String(), "port_open", gen, "reason", err)
	}
}

// servePort runs yamux sessions over one opened port until reading it
// fails. Frames are read here and routed to the current session, because a
// host that hangs up and reconnects quickly is invisible to the guest (the
// port's close and open notices are handled together, no EOF is read): the
// only sign is a new client numbering its streams from the start again. Such
// a SYN ends the old session and starts a new one, whose first frame it is.
func (l *yamuxListener) servePort(port io.ReadWriteCloser) error {
	w := &portWriter{w: port}
	var cur *frameConn
	var syns synTracker
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	r := bufio.NewReaderSize(port, 64<<10)
	for {
		frame, err := readFrame(r)
		if err != nil {
			return err
		}
		flags := binary.BigEndian.Uint16(frame[2:4])
		id := binary.BigEndian.Uint32(frame[4:8])
		restart := false
		if flags&flagSYN != 0 && id%2 == 1 { // odd ids: client-opened streams
			restart = !syns.add(id)
		}
		if cur != nil && (restart || cur.isClosed()) {
			l.log.Info("channel: new host session on the same port", "addr", l.addr.String(), "first_stream", id)
			cur.Close()
			cur = nil
		}
		if cur == nil {
			if cur, err = l.startSession(w); err != nil {
				return err
			}
			syns = synTracker{}
			if flags&flagSYN != 0 {
				syns.add(id)
			}
		}
		select {
		case cur.in <- frame:
		case <-cur.closed:
		case <-l.ctx.Done():
			return net.ErrClosed
		}
	}
}

func (l *yamuxListener) startSession(w *portWriter) (*frameConn, error) {
	c := &frameConn{w: w, gen: w.next(), in: make(chan []byte), closed: make(chan struct{})}
	sess, err := yamux.Server(c, yamuxConfig(l.log))
	if err != nil { // only a bad config can fail here
		return nil, err
	}
	l.mu.Lock()
	if l.ctx.Err() != nil {
		l.mu.Unlock()
		sess.Close()
		return nil, net.ErrClosed
	}
	l.sess = sess
	l.mu.Unlock()
	l.log.Debug("channel: session up", "addr", l.addr.String(), "session", c.gen)
	go func() {
		err := l.serve(sess)
		sess.Close()
		l.log.Debug("channel: session ended", "addr", l.addr.String(), "session", c.gen, "reason", err)
	}()
	return c, nil
}

// synWindow is how far behind the newest stream id a SYN may arrive: a
// client's concurrent Opens can send their SYNs out of order, but not by
// this much.
const synWindow = 1024

// synTracker tells a new client from an old one by the stream ids it opens:
// a client never opens the same id twice, so a repeated id (or one far below
// the newest) means the stream numbering started again.
type synTracker struct {
	max  uint32
	seen map[uint32]struct{}
}

// add records id and reports whether it can belong to the same client.
func (s *synTracker) add(id uint32) bool {
	if s.seen == nil {
		s.seen = map[uint32]struct{}{}
	}
	if id+synWindow < s.max {
		return false
	}
	if _, dup := s.seen[id]; dup {
		return false
	}
	s.seen[id] = struct{}{}
	if id > s.max {
		s.max = id
	}
	if len(s.seen) > 2*synWindow {
		for k := range s.seen {
			if k+synWindow < s.max {
				delete(s.seen, k)
			}
		}
	}
	return true
}

// yamux framing (github.com/hashicorp/yamux spec.md): a 12-byte header
// (version, type, flags, stream id, length); only data frames carry a
// payload of length bytes.
const (
	frameHeaderSize        = 12
	frameTypeData   uint8  = 0
	flagSYN         uint16 = 1
	// maxFramePayload bounds a data frame: yamux never sends more than a
	// stream's window, and windows do not grow past this here.
	maxFramePayload = 16 << 20
)

func readFrame(r *bufio.Reader) ([]byte, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := 0
	if hdr[1] == frameTypeData {
		n = int(binary.BigEndian.Uint32(hdr[8:12]))
		if n > maxFramePayload {
			return nil, fmt.Errorf("yamux data frame of %d bytes", n)
		}
	}
	frame := make([]byte, frameHeaderSize+n)
	copy(frame, hdr[:])
	if _, err := io.ReadFull(r, frame[frameHeaderSize:]); err != nil {
		return nil, err
	}
	return frame, nil
}

// portWriter serialises the sessions' writes to the port and drops those of
// sessions that have been replaced, so that a new host does not get the
// old session's frames.
type portWriter struct {
	mu  sync.Mutex
	w   io.Writer
	gen uint64
}

func (p *portWriter) next() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	return p.gen
}

var errStaleSession = errors.New("yamux session replaced by a new host session")

func (p *portWriter) write(gen uint64, b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.gen {
		return 0, errStaleSession
	}
	return p.w.Write(b)
}

// frameConn is one session's view of the port: frames in, writes out.
type frameConn struct {
	w      *portWriter
	gen    uint64
	in     chan []byte
	buf    []byte
	closed chan struct{}
	once   sync.Once
}

func (c *frameConn) Read(p []byte) (int, error) {
	if len(c.buf) == 0 {
		select {
		case f := <-c.in:
			c.buf = f
		case <-c.closed:
			return 0, io.EOF
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *frameConn) Write(p []byte) (int, error) {
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	return c.w.write(c.gen, p)
}

func (c *frameConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *frameConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
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
	sess, port := l.sess, l.port
	l.mu.Unlock()
	if sess != nil {
		sess.Close()
	}
	if port != nil {
		port.Close() // unblocks the frame reader
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
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &devicePort{File: f, rc: rc}, nil
}

// devicePort drops what is written while the host side is disconnected
// instead of letting the kernel hold it for the next host: it belongs to a
// session that is gone, and a new host would read it as garbage.
type devicePort struct {
	*os.File
	rc syscall.RawConn
}

func (p *devicePort) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		var n int
		var werr error
		err := p.rc.Write(func(fd uintptr) bool {
			for {
				n, werr = unix.Write(int(fd), b[done:])
				if werr != unix.EINTR {
					break
				}
			}
			switch {
			case werr == unix.EAGAIN:
				n, werr = 0, nil
				if done == 0 && hostDisconnected(fd) {
					n = len(b) // dropped whole, never half a frame
					return true
				}
				return false
			}
			return true
		})
		if err != nil {
			return done, err
		}
		if werr != nil {
			return done, werr
		}
		done += n
	}
	return done, nil
}

func hostDisconnected(fd uintptr) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if _, err := unix.Poll(fds, 0); err != nil {
		return false
	}
	return fds[0].Revents&unix.POLLHUP != 0
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
