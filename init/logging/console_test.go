package logging

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/kguest/kguest/init/cmdline"
)

// gateWriter blocks every Write until open is closed, like a tty that
// cannot drain.
type gateWriter struct {
	open chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (g *gateWriter) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func (g *gateWriter) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.String()
}

func TestConsoleWriterInOrder(t *testing.T) {
	g := &gateWriter{open: make(chan struct{})}
	close(g.open)
	c := NewConsoleWriter(g, 0)
	var want strings.Builder
	for i := 0; i < 1000; i++ {
		line := fmt.Sprintf("record %d\n", i)
		want.WriteString(line)
		if n, err := c.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if !c.Flush(10 * time.Second) {
		t.Fatal("Flush: records not written")
	}
	if got := g.String(); got != want.String() {
		t.Fatalf("console got %d bytes, want %d in order:\n%.300s", len(got), want.Len(), got)
	}
}

// A stuck console bounds what is kept, Flush gives up, and once the console
// drains the newest records come out after a note of how many were lost.
func TestConsoleWriterStuck(t *testing.T) {
	g := &gateWriter{open: make(chan struct{})}
	c := NewConsoleWriter(g, 4096)
	line := append(bytes.Repeat([]byte("x"), 99), '\n')
	c.Write([]byte("first\n"))
	// The drainer takes it and blocks writing it.
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.q.recs) == 0
	})
	done := make(chan struct{})
	go func() {
		for i := 0; i < 10000; i++ { // 1 MB
			c.Write(line)
		}
		c.Write([]byte("last\n"))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Write blocked on a stuck console")
	}
	c.mu.Lock()
	held := c.q.bytes
	c.mu.Unlock()
	if held > 4096 {
		t.Errorf("holds %d bytes, bound is 4096", held)
	}
	if c.Flush(10 * time.Millisecond) {
		t.Error("Flush reported success on a stuck console")
	}
	close(g.open)
	if !c.Flush(10 * time.Second) {
		t.Fatal("Flush: records not written once the console drains")
	}
	out := g.String()
	if !strings.HasPrefix(out, "first\nlogging: ") || !strings.Contains(out, " earlier log records dropped (buffer full)\n") {
		t.Errorf("no note of dropped records:\n%.300s", out)
	}
	if !strings.HasSuffix(out, string(line)+"last\n") {
		t.Errorf("newest records missing: ...%q", out[max(0, len(out)-300):])
	}
}

// The agent's logger on a real tty nobody reads: once the pty's buffer is
// full a plain write blocks, and so would every goroutine that logs.
func TestLoggerOnStuckTTY(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	log := slog.New(NewHandler(NewConsoleWriter(tty, 0), cmdline.Config{LogLevel: slog.LevelInfo}))
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 2000; i++ { // ~16k records, about 2 MB
					log.Info("a record for a console that nobody reads", "goroutine", g, "i", i)
				}
			}()
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("logging blocked on a tty that does not drain")
	}
	// The tty still gets what it can take once read.
	go io.Copy(io.Discard, ptmx)
}
