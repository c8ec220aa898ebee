package console

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

func needShell(t *testing.T) {
	t.Helper()
	if _, err := findShell(nil); err != nil {
		t.Skip("no shell on this host")
	}
}

// readUntil reads r until want shows up or the deadline passes.
func readUntil(t *testing.T, r io.Reader, want string) {
	t.Helper()
	found := make(chan struct{})
	var seen strings.Builder
	go func() {
		br := bufio.NewReader(r)
		buf := make([]byte, 256)
		for {
			n, err := br.Read(buf)
			seen.Write(buf[:n])
			if strings.Contains(seen.String(), want) {
				close(found)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-found:
	case <-time.After(10 * time.Second):
		t.Fatalf("did not see %q", want)
	}
}

func TestVportShell(t *testing.T) {
	needShell(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = Start(ctx, Options{Vport: 1026, Listen: func(uint32) (net.Listener, error) { return l, nil }})
	if err != nil {
		t.Fatal(err)
	}
	// Two sessions in a row: each gets its own shell with a terminal.
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("test -t 0 && echo tty-$((40+2)); exit\n"))
		readUntil(t, c, "tty-42")
		c.Close()
	}
}

func TestConsoleRestarts(t *testing.T) {
	needShell(t)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptmx.Close()
	name := tty.Name()
	defer tty.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Start(ctx, Options{Console: true, ConsolePath: name}); err != nil {
		t.Fatal(err)
	}
	ptmx.Write([]byte("echo first-$((1+1)); exit\n"))
	readUntil(t, ptmx, "first-2")
	// The shell exited; a new one is started on the same console.
	time.Sleep(1500 * time.Millisecond)
	ptmx.Write([]byte("echo second-$((1+2))\n"))
	readUntil(t, ptmx, "second-3")
	ptmx.Write([]byte("exit\n"))
}

func TestNothingToServe(t *testing.T) {
	if err := Start(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := findShell([][]string{{"/nonexistent/sh"}}); err == nil {
		t.Fatal("missing shell found")
	}
}
