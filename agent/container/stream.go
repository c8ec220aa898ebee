package container

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxBuffered bounds what the agent holds for a reader that is not
	// reading; beyond it the process blocks on its own output.
	maxBuffered = 1 << 20
	// drainIdle is how long output keeps being collected after the process
	// has exited, once the stream is idle: a child that inherited the stream
	// must not keep it open forever.
	drainIdle = 50 * time.Millisecond
	// ttyDrainIdle is drainIdle for a pty, which hands the last bytes over
	// asynchronously (through a kernel work queue).
	ttyDrainIdle = 250 * time.Millisecond
	// readChunk is the pump's largest read size; firstChunk its first.
	readChunk  = 128 << 10
	firstChunk = 8 << 10
)

// stream buffers one output of a process in the agent, so that a reader that
// goes away (a host client reconnecting) loses nothing.
type stream struct {
	f    *os.File
	idle time.Duration // drain idle time after exit

	mu      sync.Mutex
	chunks  [][]byte // buffered output, oldest first
	size    int      // bytes in chunks
	eof     bool
	eofRead bool // a reader was told io.EOF
	closed  bool
	changed chan struct{} // closed and replaced on every change

	draining atomic.Bool
	done     chan struct{} // closed when the pump returns
}

func newStream(f *os.File, idle time.Duration) *stream {
	return &stream{f: f, idle: idle, changed: make(chan struct{}), done: make(chan struct{})}
}

func (s *stream) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// pump copies the file into the buffer until EOF, or until the process has
// exited (exited is closed) and no output came for drainIdle. It closes the
// file when done.
func (s *stream) pump(exited <-chan struct{}) {
	defer close(s.done)
	defer s.f.Close()
	go func() {
		select {
		case <-exited:
			s.draining.Store(true)
			_ = s.f.SetReadDeadline(time.Now().Add(s.idle))
		case <-s.done:
		}
	}()
	var buf []byte
	size := firstChunk // most processes print little: grow on demand
	for {
		if !s.waitSpace() {
			break
		}
		if len(buf) < size/4 {
			buf = make([]byte, size)
		}
		if s.draining.Load() {
			// The idle time counts from now: a pump that waited for
			// buffer space must still drain what the pipe holds.
			_ = s.f.SetReadDeadline(time.Now().Add(s.idle))
		}
		n, err := s.f.Read(buf)
		if n > 0 {
			s.mu.Lock()
			// Chunks share buf's backing array; the rest of buf is
			// used by the next read.
			s.chunks = append(s.chunks, buf[:n:n])
			s.size += n
			s.broadcast()
			s.mu.Unlock()
			if n == len(buf) && size < readChunk {
				size *= 4
			}
			buf = buf[n:]
		}
		if err != nil {
			// EOF, EIO from a pty whose slaves are all closed, the drain
			// deadline or a close: nothing more can be read either way.
			break
		}
	}
	s.mu.Lock()
	s.eof = true
	s.broadcast()
	s.mu.Unlock()
}

// waitSpace blocks while the buffer is full; false when the stream is closed.
func (s *stream) waitSpace() bool {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false
		}
		if s.size < maxBuffered {
			s.mu.Unlock()
			return true
		}
		ch := s.changed
		s.mu.Unlock()
		<-ch
	}
}

// Read returns up to n buffered bytes, blocking until there are some. It
// returns io.EOF once the stream has ended and everything was read.
func (s *stream) Read(ctx context.Context, n int) ([]byte, error) {
	if n <= 0 {
		n = readChunk
	}
	for {
		s.mu.Lock()
		if s.size > 0 {
			if ctx.Err() != nil {
				s.mu.Unlock()
				return nil, ctx.Err()
			}
			out := s.take(n)
			s.broadcast()
			s.mu.Unlock()
			return out, nil
		}
		if s.eof || s.closed {
			if !s.eofRead {
				s.eofRead = true
				s.broadcast()
			}
			s.mu.Unlock()
			return nil, io.EOF
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// take removes up to n bytes from the front of the buffer.
func (s *stream) take(n int) []byte {
	if len(s.chunks[0]) >= n || len(s.chunks) == 1 {
		c := s.chunks[0]
		if len(c) > n {
			s.chunks[0] = c[n:]
			c = c[:n:n]
		} else {
			s.chunks[0] = nil
			s.chunks = s.chunks[1:]
		}
		s.size -= len(c)
		return c
	}
	if n > s.size {
		n = s.size
	}
	out := make([]byte, 0, n)
	for len(out) < n {
		c := s.chunks[0]
		k := min(len(c), n-len(out))
		out = append(out, c[:k]...)
		if k == len(c) {
			s.chunks[0] = nil
			s.chunks = s.chunks[1:]
		} else {
			s.chunks[0] = c[k:]
		}
	}
	s.size -= n
	return out
}

// unread puts back data a reader could not deliver.
func (s *stream) unread(b []byte) {
	if len(b) == 0 {
		return
	}
	s.mu.Lock()
	s.chunks = append([][]byte{b}, s.chunks...)
	s.size += len(b)
	s.broadcast()
	s.mu.Unlock()
}

// Close stops the pump and drops buffered data.
func (s *stream) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.chunks, s.size = nil, 0
		s.broadcast()
	}
	s.mu.Unlock()
	_ = s.f.SetReadDeadline(time.Now())
	<-s.done
}
