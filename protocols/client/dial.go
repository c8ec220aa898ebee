// Package client is the host side of the agent API: it dials the agent over
// vsock, hybrid vsock, unix sockets or a virtio-serial chardev multiplexed
// with yamux, and speaks to it over gRPC or ttrpc.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"
)

// Address schemes understood by Dial.
const (
	SchemeVsock  = "vsock"  // vsock://CID:PORT
	SchemeHvsock = "hvsock" // hvsock:///path/to/uds:PORT (Firecracker, Cloud Hypervisor)
	SchemeUnix   = "unix"   // unix:///path or unix://@abstract
	SchemeSerial = "serial" // serial:///path/to/chardev.sock
)

// DefaultHandshakeTimeout bounds the hybrid vsock CONNECT/OK exchange when
// the context has no earlier deadline.
const DefaultHandshakeTimeout = 5 * time.Second

// Serial chardev sockets may hold stale frames: the guest delivers what its
// previous yamux session wrote after the last host hung up (typically the FIN
// of its last stream) to the next host connection. The guest never speaks
// first, so whatever arrives before the first quiet SerialDrainQuiet is
// discarded, for at most SerialDrainMax, before the yamux client starts.
const (
	SerialDrainQuiet = 50 * time.Millisecond
	SerialDrainMax   = 500 * time.Millisecond
)

// maxHandshakeLine caps the VMM reply ("OK <port>\n") we are willing to read.
const maxHandshakeLine = 64

// Addr is a parsed agent address.
type Addr struct {
	Scheme string
	// Path is the socket path for hvsock, unix and serial ("@name" for abstract).
	Path string
	// CID is the vsock context id.
	CID uint32
	// Port is the vsock port (vsock, hvsock).
	Port uint32
}

func (a Addr) String() string {
	switch a.Scheme {
	case SchemeVsock:
		return fmt.Sprintf("vsock://%d:%d", a.CID, a.Port)
	case SchemeHvsock:
		return fmt.Sprintf("hvsock://%s:%d", a.Path, a.Port)
	default:
		return a.Scheme + "://" + a.Path
	}
}

// ParseAddr parses an agent address of one of the supported schemes.
func ParseAddr(addr string) (Addr, error) {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		return Addr{}, fmt.Errorf("agent address %q: missing scheme (vsock://, hvsock://, unix://, serial://)", addr)
	}
	a := Addr{Scheme: scheme}
	switch scheme {
	case SchemeVsock:
		cid, port, ok := strings.Cut(rest, ":")
		if !ok {
			return Addr{}, fmt.Errorf("agent address %q: want vsock://CID:PORT", addr)
		}
		c, err := strconv.ParseUint(cid, 10, 32)
		if err != nil {
			return Addr{}, fmt.Errorf("agent address %q: bad CID: %w", addr, err)
		}
		p, err := strconv.ParseUint(port, 10, 32)
		if err != nil {
			return Addr{}, fmt.Errorf("agent address %q: bad port: %w", addr, err)
		}
		a.CID, a.Port = uint32(c), uint32(p)
	case SchemeHvsock:
		i := strings.LastIndexByte(rest, ':')
		if i <= 0 {
			return Addr{}, fmt.Errorf("agent address %q: want hvsock:///path/to/socket:PORT", addr)
		}
		p, err := strconv.ParseUint(rest[i+1:], 10, 32)
		if err != nil {
			return Addr{}, fmt.Errorf("agent address %q: bad port: %w", addr, err)
		}
		a.Path, a.Port = rest[:i], uint32(p)
	case SchemeUnix, SchemeSerial:
		if rest == "" || rest == "@" {
			return Addr{}, fmt.Errorf("agent address %q: empty path", addr)
		}
		if scheme == SchemeSerial && strings.HasPrefix(rest, "@") {
			return Addr{}, fmt.Errorf("agent address %q: serial needs a path", addr)
		}
		a.Path = rest
	default:
		return Addr{}, fmt.Errorf("agent address %q: unknown scheme %q", addr, scheme)
	}
	return a, nil
}

// Dialer connects to agents. It keeps one yamux session per serial socket,
// opening a stream per Dial and re-dialling the socket once the session dies.
// The zero value is ready to use.
type Dialer struct {
	// HandshakeTimeout bounds the hybrid vsock handshake; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// SerialDrainQuiet and SerialDrainMax tune the discarding of stale
	// bytes on a new serial connection; 0 means the package defaults, a
	// negative SerialDrainQuiet turns it off.
	SerialDrainQuiet time.Duration
	SerialDrainMax   time.Duration

	mu       sync.Mutex
	sessions map[string]*yamux.Session
}

// DefaultDialer is used by Dial.
var DefaultDialer = &Dialer{}

// Dial connects to the agent at addr with DefaultDialer.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	return DefaultDialer.Dial(ctx, addr)
}

// Dial connects to the agent at addr.
func (d *Dialer) Dial(ctx context.Context, addr string) (net.Conn, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	switch a.Scheme {
	case SchemeVsock:
		conn, err = vsock.DialContext(ctx, a.CID, a.Port, nil)
	case SchemeUnix:
		var nd net.Dialer
		conn, err = nd.DialContext(ctx, "unix", a.Path)
	case SchemeHvsock:
		conn, err = d.dialHybrid(ctx, a)
	case SchemeSerial:
		conn, err = d.dialSerial(ctx, a)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// dialHybrid connects to a Firecracker/Cloud Hypervisor hybrid vsock: a unix
// socket on which the VMM forwards to a guest port after "CONNECT <port>\n"
// is answered with "OK <host port>\n".
func (d *Dialer) dialHybrid(ctx context.Context, a Addr) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", a.Path)
	if err != nil {
		return nil, err
	}
	timeout := d.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, err
	}
	// Close the socket if the context ends mid-handshake.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", a.Port); err != nil {
		conn.Close()
		return nil, fmt.Errorf("hybrid vsock handshake: %w", err)
	}
	line, err := readLine(conn, maxHandshakeLine)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("hybrid vsock handshake: %w", err)
	}
	if !strings.HasPrefix(line, "OK ") {
		conn.Close()
		return nil, fmt.Errorf("hybrid vsock handshake: VMM refused port %d: %q", a.Port, line)
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// readLine reads up to and excluding '\n' one byte at a time, so that bytes
// the guest sends right after the reply stay in the socket for the caller.
func readLine(r io.Reader, max int) (string, error) {
	var b [1]byte
	var line []byte
	for len(line) < max {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return "", fmt.Errorf("connection closed after %q", line)
			}
			return "", err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
	return "", fmt.Errorf("reply longer than %d bytes: %q", max, line)
}

// yamuxConfig matches what Kata hosts use on the serial channel: no keepalive,
// since a paused VM must not lose its session.
func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.LogOutput = io.Discard
	return c
}

// dialSerial opens a new yamux stream on the session over the QEMU chardev
// socket at a.Path, (re)creating the session when there is none or it died.
func (d *Dialer) dialSerial(ctx context.Context, a Addr) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		sess, err := d.session(ctx, a.Path)
		if err != nil {
			return nil, err
		}
		stream, err := sess.Open()
		if err == nil {
			return stream, nil
		}
		d.dropSession(a.Path, sess)
		if attempt > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("open yamux stream: %w", err)
		}
	}
}

func (d *Dialer) session(ctx context.Context, path string) (*yamux.Session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.sessions[path]; s != nil && !s.IsClosed() {
		return s, nil
	}
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	if err := d.drainStale(ctx, conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("discard stale serial data: %w", err)
	}
	s, err := yamux.Client(conn, yamuxConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("yamux client: %w", err)
	}
	if d.sessions == nil {
		d.sessions = make(map[string]*yamux.Session)
	}
	d.sessions[path] = s
	return s, nil
}

// drainStale reads and discards until the connection has been quiet for
// d.SerialDrainQuiet, or d.SerialDrainMax has passed, whichever is first.
func (d *Dialer) drainStale(ctx context.Context, conn net.Conn) error {
	quiet, max := d.SerialDrainQuiet, d.SerialDrainMax
	if quiet < 0 {
		return nil
	}
	if quiet == 0 {
		quiet = SerialDrainQuiet
	}
	if max <= 0 {
		max = SerialDrainMax
	}
	end := time.Now().Add(max)
	if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
		end = dl
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		dl := time.Now().Add(quiet)
		if dl.After(end) {
			dl = end
		}
		if err := conn.SetReadDeadline(dl); err != nil {
			return err
		}
		n, err := conn.Read(buf)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			break
		}
		if n > 0 && !time.Now().Before(end) {
			break
		}
	}
	if !stop() {
		return ctx.Err()
	}
	return conn.SetReadDeadline(time.Time{})
}

func (d *Dialer) dropSession(path string, s *yamux.Session) {
	d.mu.Lock()
	if d.sessions[path] == s {
		delete(d.sessions, path)
	}
	d.mu.Unlock()
	s.Close()
}

// Close closes every serial session the dialer holds.
func (d *Dialer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for p, s := range d.sessions {
		s.Close()
		delete(d.sessions, p)
	}
	return nil
}
