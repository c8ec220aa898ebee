package logging

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// DefaultBufferBytes bounds what a Broadcaster keeps while no reader is
// connected, and what it queues for each slow reader.
const DefaultBufferBytes = 512 << 10

// writeTimeout is how long a reader may stall a single write before it is
// dropped.
const writeTimeout = 10 * time.Second

// queue is a FIFO of records bounded in bytes; when full the oldest records
// go, and their number is remembered.
type queue struct {
	recs    [][]byte
	bytes   int
	limit   int
	dropped int
}

func (q *queue) push(rec []byte) {
	q.recs = append(q.recs, rec)
	q.bytes += len(rec)
	for q.bytes > q.limit && len(q.recs) > 1 {
		q.bytes -= len(q.recs[0])
		q.recs[0] = nil
		q.recs = q.recs[1:]
		q.dropped++
	}
}

// take empties the queue, returning its records, with a note first if some
// were dropped.
func (q *queue) take() [][]byte {
	recs := q.recs
	if q.dropped > 0 {
		note := []byte(fmt.Sprintf("logging: %d earlier log records dropped (buffer full)\n", q.dropped))
		recs = append([][]byte{note}, recs...)
	}
	q.recs, q.bytes, q.dropped = nil, 0, 0
	return recs
}

// Broadcaster is an io.Writer that copies every record (one Write) to all
// connected readers, never blocking the writer: each reader has a bounded
// queue drained by its own goroutine. With no reader connected the records
// are kept, bounded, and handed to the next reader that connects.
type Broadcaster struct {
	mu      sync.Mutex
	limit   int
	backlog queue
	readers map[*reader]struct{}
	closed  bool
	wg      sync.WaitGroup
}

type reader struct {
	conn net.Conn
	q    queue // guarded by Broadcaster.mu
	wake chan struct{}
	gone chan struct{}
}

// NewBroadcaster returns a Broadcaster that buffers at most limit bytes per
// queue (DefaultBufferBytes when limit <= 0).
func NewBroadcaster(limit int) *Broadcaster {
	if limit <= 0 {
		limit = DefaultBufferBytes
	}
	return &Broadcaster{limit: limit, backlog: queue{limit: limit}, readers: map[*reader]struct{}{}}
}

// Write queues a copy of p for every reader, or keeps it for the next one.
func (b *Broadcaster) Write(p []byte) (int, error) {
	rec := append([]byte(nil), p...)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, net.ErrClosed
	}
	if len(b.readers) == 0 {
		b.backlog.push(rec)
		return len(p), nil
	}
	for r := range b.readers {
		r.q.push(rec)
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Add starts streaming to conn, beginning with the kept backlog.
func (b *Broadcaster) Add(conn net.Conn) {
	r := &reader{conn: conn, q: queue{limit: b.limit}, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		conn.Close()
		return
	}
	// The reader starts with the backlog (and its count of dropped records).
	r.q, b.backlog = b.backlog, queue{limit: b.limit}
	r.wake <- struct{}{}
	b.readers[r] = struct{}{}
	b.wg.Add(1)
	b.mu.Unlock()
	go b.drain(r)
}

func (b *Broadcaster) drain(r *reader) {
	defer b.wg.Done()
	defer r.conn.Close()
	for {
		last := false
		timeout := writeTimeout
		select {
		case <-r.wake:
		case <-r.gone:
			// Closing: flush what is queued, briefly.
			last, timeout = true, time.Second
		}
		b.mu.Lock()
		recs := r.q.take()
		b.mu.Unlock()
		for _, rec := range recs {
			r.conn.SetWriteDeadline(time.Now().Add(timeout))
			if _, err := r.conn.Write(rec); err != nil {
				b.remove(r)
				return
			}
		}
		if last {
			return
		}
	}
}

func (b *Broadcaster) remove(r *reader) {
	b.mu.Lock()
	if _, ok := b.readers[r]; ok {
		delete(b.readers, r)
		close(r.gone)
	}
	b.mu.Unlock()
}

// Readers returns the number of connected readers.
func (b *Broadcaster) Readers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.readers)
}

// Serve adds every connection l accepts as a reader, until l is closed.
func (b *Broadcaster) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		// Readers only read; whatever they send is discarded so that a
		// chatty one cannot fill its socket buffer and stall.
		go discardInput(c)
		b.Add(c)
	}
}

func discardInput(c net.Conn) {
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// Close disconnects every reader, after flushing what is queued for them.
func (b *Broadcaster) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	readers := b.readers
	b.readers = map[*reader]struct{}{}
	b.mu.Unlock()
	for r := range readers {
		close(r.gone)
	}
	b.wg.Wait()
	return nil
}
