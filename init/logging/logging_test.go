package logging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kguest/kguest/init/cmdline"
)

func TestHandlerFormatsAndLevels(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		log     func(*slog.Logger)
		want    []string
		notWant []string
	}{
		{
			name:    "text info default",
			cmdline: "",
			log:     func(l *slog.Logger) { l.Debug("hidden"); l.Info("shown", "k", "v") },
			want:    []string{"level=INFO", "msg=shown", "k=v", "name=kata-agent"},
			notWant: []string{"hidden"},
		},
		{
			name:    "debug",
			cmdline: "agent.log=debug",
			log:     func(l *slog.Logger) { l.Debug("dbg") },
			want:    []string{"level=DEBUG", "msg=dbg"},
		},
		{
			name:    "error hides warn",
			cmdline: "agent.log=error",
			log:     func(l *slog.Logger) { l.Warn("w"); l.Error("e") },
			want:    []string{"msg=e"},
			notWant: []string{"msg=w"},
		},
		{
			name:    "trace and critical names",
			cmdline: "agent.log=trace",
			log: func(l *slog.Logger) {
				l.Log(nil, cmdline.LevelTrace, "t")
				l.Log(nil, cmdline.LevelCritical, "c")
			},
			want: []string{"level=TRACE msg=t", "level=CRITICAL msg=c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := cmdline.Parse(tt.cmdline)
			var buf bytes.Buffer
			tt.log(slog.New(NewHandler(&buf, cfg)))
			for _, w := range tt.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("output %q lacks %q", buf.String(), w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(buf.String(), w) {
					t.Errorf("output %q has %q", buf.String(), w)
				}
			}
		})
	}
}

func TestJSON(t *testing.T) {
	cfg, _ := cmdline.Parse("agent.log_format=json agent.log=debug")
	var buf bytes.Buffer
	log, err := SetupWith(cfg, Options{Console: &buf})
	if err != nil {
		t.Fatal(err)
	}
	defer slog.SetDefault(slog.New(slog.DiscardHandler))
	log.Debug("hello", "n", 3)
	slog.Info("via default") // Setup made it the default
	dec := json.NewDecoder(&buf)
	var recs []map[string]any
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("not JSON: %v (%q)", err, buf.String())
		}
		recs = append(recs, m)
	}
	if len(recs) != 2 || recs[0]["msg"] != "hello" || recs[0]["n"] != float64(3) || recs[0]["level"] != "DEBUG" || recs[1]["msg"] != "via default" {
		t.Fatalf("records = %v", recs)
	}
}

func unixListener(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return l, path
}

// readLines reads n lines from c, failing after a deadline.
func readLines(t *testing.T, r *bufio.Reader, c net.Conn, n int) []string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []string
	for i := 0; i < n; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d lines %q: %v", i, out, err)
		}
		out = append(out, strings.TrimSuffix(line, "\n"))
	}
	return out
}

func TestSetupServesOnPort(t *testing.T) {
	l, path := unixListener(t)
	var console bytes.Buffer
	cfg, _ := cmdline.Parse("agent.log_vport=1025")
	var gotPort uint32
	log, err := SetupWith(cfg, Options{
		Console:    &console,
		ListenPort: func(p uint32) (net.Listener, error) { gotPort = p; return l, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	defer slog.SetDefault(slog.New(slog.DiscardHandler))
	if gotPort != 1025 {
		t.Errorf("port = %d", gotPort)
	}
	log.Info("before any reader")
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	log.Info("after connect")
	lines := readLines(t, r, c, 2)
	if !strings.Contains(lines[0], "before any reader") || !strings.Contains(lines[1], "after connect") {
		t.Errorf("lines = %q", lines)
	}
	if console.Len() != 0 {
		t.Errorf("console got %q, want nothing while logs go to the port", console.String())
	}
}

func TestSetupPortFailureFallsBack(t *testing.T) {
	var console bytes.Buffer
	cfg, _ := cmdline.Parse("agent.log_vport=1025")
	log, err := SetupWith(cfg, Options{
		Console:    &console,
		ListenPort: func(uint32) (net.Listener, error) { return nil, errors.New("no vsock") },
	})
	defer slog.SetDefault(slog.New(slog.DiscardHandler))
	if err == nil || log == nil {
		t.Fatalf("log=%v err=%v, want a logger and an error", log, err)
	}
	log.Info("still logging")
	if !strings.Contains(console.String(), "no vsock") || !strings.Contains(console.String(), "still logging") {
		t.Errorf("console = %q", console.String())
	}
}

func TestBroadcasterFanOutAndBound(t *testing.T) {
	l, path := unixListener(t)
	b := NewBroadcaster(100)
	done := make(chan error, 1)
	go func() { done <- b.Serve(l) }()

	// Nothing connected: only the newest records within the bound stay.
	for i := 0; i < 20; i++ {
		fmt.Fprintf(b, "old %02d\n", i) // 7 bytes each
	}
	c1, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	r1 := bufio.NewReader(c1)
	lines := readLines(t, r1, c1, 1)
	if !strings.Contains(lines[0], "6 earlier log records dropped") {
		t.Errorf("first line = %q, want the drop note", lines[0])
	}
	lines = readLines(t, r1, c1, 14)
	if lines[0] != "old 06" || lines[13] != "old 19" {
		t.Errorf("backlog = %q", lines)
	}

	c2, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	r2 := bufio.NewReader(c2)
	waitFor(t, func() bool { return b.Readers() == 2 })
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2; i++ {
				fmt.Fprintf(b, "w%d-%d\n", w, i)
			}
		}()
	}
	wg.Wait()
	for _, rc := range []struct {
		r *bufio.Reader
		c net.Conn
	}{{r1, c1}, {r2, c2}} {
		got := readLines(t, rc.r, rc.c, 8)
		seen := map[string]bool{}
		for _, g := range got {
			seen[g] = true
		}
		if len(seen) != 8 {
			t.Errorf("reader got %q, want 8 distinct records", got)
		}
	}

	// A reader that goes away is dropped; writing never fails or blocks.
	c1.Close()
	for i := 0; i < 1000; i++ {
		if _, err := fmt.Fprintf(b, "after close %d\n", i); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return b.Readers() == 1 })

	l.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	b.Close()
	if _, err := b.Write([]byte("x\n")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, _ := r2.ReadString(0) // until EOF: Close hung up
	if !strings.Contains(rest, "after close 999") {
		t.Errorf("reader 2 did not get the last records before Close (%d bytes)", len(rest))
	}
}

// A reader that never reads must not block the writer.
func TestBroadcasterStalledReader(t *testing.T) {
	l, path := unixListener(t)
	b := NewBroadcaster(4096)
	go b.Serve(l)
	defer l.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, func() bool { return b.Readers() == 1 })
	line := bytes.Repeat([]byte("x"), 1023)
	line = append(line, '\n')
	done := make(chan struct{})
	go func() {
		for i := 0; i < 20000; i++ { // 20 MB, far beyond socket buffers
			b.Write(line)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("writer blocked by a stalled reader")
	}
	b.mu.Lock()
	for r := range b.readers {
		if r.q.bytes > 4096 {
			t.Errorf("queue holds %d bytes, bound is 4096", r.q.bytes)
		}
	}
	b.mu.Unlock()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
