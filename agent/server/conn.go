package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
)

// protocol is what a connection speaks, decided from its first bytes.
type protocol int

const (
	protoUnknown protocol = iota
	protoGRPC
	protoTTRPC
)

func (p protocol) String() string {
	switch p {
	case protoGRPC:
		return "grpc"
	case protoTTRPC:
		return "ttrpc"
	}
	return "unknown"
}

// http2Preface is what every HTTP/2 (and so gRPC) client sends before anything else.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

const (
	// ttrpcHeaderLen is the size of a ttrpc frame header:
	// uint32 length, uint32 stream id, uint8 type, uint8 flags (big endian).
	ttrpcHeaderLen = 10
	// ttrpcTypeRequest is the frame type a client opens a ttrpc stream with.
	ttrpcTypeRequest = 1
	// ttrpcKnownFlags are the flag bits ttrpc defines (remote closed, remote open, no data).
	ttrpcKnownFlags = 0x1 | 0x2 | 0x4
)

// classify reads just enough of r to tell the protocol apart and returns the
// bytes it consumed so they can be replayed to the chosen server.
func classify(r io.Reader) (protocol, []byte, error) {
	buf := make([]byte, len(http2Preface))
	if _, err := io.ReadFull(r, buf[:ttrpcHeaderLen]); err != nil {
		return protoUnknown, buf[:0], err
	}
	if bytes.Equal(buf[:ttrpcHeaderLen], []byte(http2Preface[:ttrpcHeaderLen])) {
		if _, err := io.ReadFull(r, buf[ttrpcHeaderLen:]); err != nil {
			return protoUnknown, buf[:ttrpcHeaderLen], err
		}
		if string(buf) == http2Preface {
			return protoGRPC, buf, nil
		}
		return protoUnknown, buf, nil
	}
	hdr := buf[:ttrpcHeaderLen]
	streamID := binary.BigEndian.Uint32(hdr[4:8])
	if streamID != 0 && hdr[8] == ttrpcTypeRequest && hdr[9]&^ttrpcKnownFlags == 0 {
		return protoTTRPC, hdr, nil
	}
	return protoUnknown, hdr, nil
}

// replayConn is a net.Conn whose first reads return the bytes consumed while
// classifying it, then continue from the connection.
type replayConn struct {
	net.Conn
	mu     sync.Mutex
	prefix []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil
		}
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// errListenerClosed is returned by Accept once a chanListener is closed.
var errListenerClosed = errors.New("listener closed")

// chanListener is an in-memory net.Listener fed with already classified
// connections; grpc.Server and ttrpc.Server each consume one.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errListenerClosed
	}
}

// deliver hands c to the consumer of l; it reports false when l is closed.
func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// memAddr names the in-memory listeners.
type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }
