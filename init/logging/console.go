package logging

import (
	"io"
	"sync"
	"time"
)

// ConsoleBufferBytes bounds the records a ConsoleWriter holds while the
// console does not drain.
const ConsoleBufferBytes = 128 << 10

// ConsoleWriter is an io.Writer for the console that never blocks its
// caller. A tty write blocks while the tty cannot drain (XOFF typed on the
// console, a host end that stopped reading, a UART whose interrupt never
// comes), and slog holds its handler's lock while writing: one stuck write
// would stall every goroutine that logs, RPC handlers included. So records
// are queued, bounded (the oldest go first and are counted), and written by
// one goroutine.
type ConsoleWriter struct {
	w    io.Writer
	wake chan struct{}

	mu sync.Mutex
	q  queue
	// idle is closed once everything written so far is out (or being
	// dropped); nil when there is nothing pending.
	idle chan struct{}
}

// NewConsoleWriter returns a ConsoleWriter writing to w, holding at most
// limit bytes (ConsoleBufferBytes when limit <= 0).
func NewConsoleWriter(w io.Writer, limit int) *ConsoleWriter {
	if limit <= 0 {
		limit = ConsoleBufferBytes
	}
	c := &ConsoleWriter{w: w, wake: make(chan struct{}, 1), q: queue{limit: limit}}
	go c.drain()
	return c
}

// Write queues a copy of p (one record) and returns at once.
func (c *ConsoleWriter) Write(p []byte) (int, error) {
	rec := append([]byte(nil), p...)
	c.mu.Lock()
	c.q.push(rec)
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *ConsoleWriter) drain() {
	for range c.wake {
		for {
			c.mu.Lock()
			recs := c.q.take()
			if len(recs) == 0 {
				if c.idle != nil {
					close(c.idle)
					c.idle = nil
				}
				c.mu.Unlock()
				break
			}
			c.mu.Unlock()
			for _, rec := range recs {
				// A console that fails (EIO from a tty whose port would
				// not start) has nowhere to report to.
				c.w.Write(rec)
			}
		}
	}
}

// Flush waits up to timeout for what was written so far to reach the
// console, and reports whether it did: for last words before power-off or
// exit.
func (c *ConsoleWriter) Flush(timeout time.Duration) bool {
	c.mu.Lock()
	idle := c.idle
	c.mu.Unlock()
	if idle == nil {
		return true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

var (
	consoleMu sync.Mutex
	console   *ConsoleWriter
)

// Flush waits up to timeout for the logs Setup sent to the console to be
// written; it returns at once if Setup did not set up a console writer.
func Flush(timeout time.Duration) bool {
	consoleMu.Lock()
	c := console
	consoleMu.Unlock()
	if c == nil {
		return true
	}
	return c.Flush(timeout)
}
