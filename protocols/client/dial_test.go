package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in      string
		want    Addr
		wantErr string
	}{
		{in: "vsock://3:1024", want: Addr{Scheme: "vsock", CID: 3, Port: 1024}},
		{in: "vsock://4294967295:1024", want: Addr{Scheme: "vsock", CID: 4294967295, Port: 1024}},
		{in: "hvsock:///run/vc/fc.sock:1024", want: Addr{Scheme: "hvsock", Path: "/run/vc/fc.sock", Port: 1024}},
		{in: "unix:///tmp/a.sock", want: Addr{Scheme: "unix", Path: "/tmp/a.sock"}},
		{in: "unix://@kata", want: Addr{Scheme: "unix", Path: "@kata"}},
		{in: "serial:///run/vc/console.sock", want: Addr{Scheme: "serial", Path: "/run/vc/console.sock"}},
		{in: "/tmp/a.sock", wantErr: "missing scheme"},
		{in: "tcp://1.2.3.4:5", wantErr: "unknown scheme"},
		{in: "vsock://3", wantErr: "want vsock://CID:PORT"},
		{in: "vsock://x:1", wantErr: "bad CID"},
		{in: "vsock://3:99999999999", wantErr: "bad port"},
		{in: "hvsock:///run/fc.sock", wantErr: "want hvsock"},
		{in: "hvsock:///run/fc.sock:x", wantErr: "bad port"},
		{in: "hvsock://:1024", wantErr: "want hvsock"},
		{in: "unix://", wantErr: "empty path"},
		{in: "serial://@x", wantErr: "serial needs a path"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAddr(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if again, err := ParseAddr(got.String()); err != nil || again != got {
				t.Fatalf("String() %q does not round-trip: %+v, %v", got.String(), again, err)
			}
		})
	}
}

// fakeVMM serves the hybrid vsock handshake on a unix socket. reply is what
// it answers to CONNECT; guest is written in the same write, as a guest
// that talks first would have its bytes queued right behind the OK line.
type fakeVMM struct {
	path   string
	port   string // the port it accepts
	reply  string // "" means: answer "OK 1073741824\n"
	silent bool   // never answer
	guest  string
}

func (v *fakeVMM) serve(t *testing.T) {
	t.Helper()
	l, err := net.Listen("unix", v.path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go v.handle(c)
		}
	}()
}

func (v *fakeVMM) handle(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	if v.silent {
		io.Copy(io.Discard, c)
		return
	}
	if line != "CONNECT "+v.port+"\n" {
		return // a VMM closes the connection on a bad request
	}
	reply := v.reply
	if reply == "" {
		reply = "OK 1073741824\n"
	}
	c.Write([]byte(reply + v.guest))
	// Echo whatever the host sends next, as the guest end.
	io.Copy(c, c)
}

func TestDialHybridVsock(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		vmm     fakeVMM
		port    uint32
		wantErr string
	}{
		{name: "guest writes first", vmm: fakeVMM{port: "1024", guest: "hello from the guest\x00\x01\n"}, port: 1024},
		{name: "guest silent", vmm: fakeVMM{port: "1024"}, port: 1024},
		{name: "refused port", vmm: fakeVMM{port: "1024"}, port: 2048, wantErr: "connection closed"},
		{name: "error reply", vmm: fakeVMM{port: "1024", reply: "ERR no listener\n"}, port: 1024, wantErr: "VMM refused"},
		{name: "no reply", vmm: fakeVMM{port: "1024", silent: true}, port: 1024, wantErr: "i/o timeout"},
		{name: "endless reply", vmm: fakeVMM{port: "1024", reply: strings.Repeat("O", 200)}, port: 1024, wantErr: "reply longer"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.vmm.path = filepath.Join(dir, fmt.Sprintf("vmm%d.sock", i))
			tc.vmm.serve(t)
			d := &Dialer{HandshakeTimeout: 300 * time.Millisecond}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := d.Dial(ctx, fmt.Sprintf("hvsock://%s:%d", tc.vmm.path, tc.port))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.vmm.guest != "" {
				got := make([]byte, len(tc.vmm.guest))
				if _, err := io.ReadFull(conn, got); err != nil {
					t.Fatalf("read guest bytes: %v", err)
				}
				if string(got) != tc.vmm.guest {
					t.Fatalf("guest bytes = %q, want %q", got, tc.vmm.guest)
				}
			}
			// The connection is a plain byte stream after the handshake.
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4)
			if _, err := io.ReadFull(conn, got); err != nil || string(got) != "ping" {
				t.Fatalf("echo = %q, %v", got, err)
			}
		})
	}
}

func TestDialHybridVsockContextCancel(t *testing.T) {
	v := fakeVMM{path: filepath.Join(t.TempDir(), "vmm.sock"), port: "1024", silent: true}
	v.serve(t)
	d := &Dialer{HandshakeTimeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := d.Dial(ctx, "hvsock://"+v.path+":1024")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// yamuxServer accepts connections on a unix socket, runs a yamux server
// session on each and echoes every stream. hangup closes the live sessions.
type yamuxServer struct {
	l        net.Listener
	sessions chan *yamux.Session
}

func newYamuxServer(t *testing.T, path string) *yamuxServer {
	t.Helper()
	return newStaleYamuxServer(t, path, nil, 0)
}

// newStaleYamuxServer is newYamuxServer, but writes stale to every new
// connection after delay, before its yamux session starts, as a guest does
// with what its previous session sent after the last host hung up.
func newStaleYamuxServer(t *testing.T, path string, stale []byte, delay time.Duration) *yamuxServer {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &yamuxServer{l: l, sessions: make(chan *yamux.Session, 16)}
	done := make(chan struct{})
	t.Cleanup(func() {
		l.Close()
		<-done
		close(s.sessions)
		for sess := range s.sessions {
			sess.Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if stale != nil {
				time.Sleep(delay)
				if _, err := c.Write(stale); err != nil {
					c.Close()
					continue
				}
			}
			sess, err := yamux.Server(c, yamuxConfig())
			if err != nil {
				c.Close()
				continue
			}
			s.sessions <- sess
			go func() {
				for {
					st, err := sess.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(st, st); st.Close() }()
				}
			}()
		}
	}()
	return s
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo = %q, %v", got, err)
	}
}

func TestDialSerial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.sock")
	srv := newYamuxServer(t, path)
	d := &Dialer{}
	defer d.Close()
	ctx := context.Background()
	addr := "serial://" + path

	// Two dials share one session, each on its own stream.
	a, err := d.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, a, "first stream")
	echo(t, b, "second stream")
	first := <-srv.sessions
	select {
	case extra := <-srv.sessions:
		t.Fatalf("second Dial made a new session %v", extra)
	default:
	}

	// The guest end hangs up: the streams end, and the next Dial re-dials the socket.
	first.Close()
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Fatal("read on a stream of a dead session succeeded")
	}
	c, err := d.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("re-dial after hang-up: %v", err)
	}
	echo(t, c, "after reconnect")
	select {
	case <-srv.sessions:
	case <-time.After(5 * time.Second):
		t.Fatal("no new session after hang-up")
	}
	a.Close()
	b.Close()
	c.Close()
}

// staleFIN is a yamux window update with FIN for stream 1: the last frame a
// guest session sends when the host's stream 1 ends.
func staleFIN() []byte {
	h := make([]byte, 12)
	h[0] = 0                               // version
	h[1] = 1                               // typeWindowUpdate
	binary.BigEndian.PutUint16(h[2:], 0x4) // flagFIN
	binary.BigEndian.PutUint32(h[4:], 1)   // stream id
	return h
}

func TestDialSerialStaleFrames(t *testing.T) {
	tests := []struct {
		name  string
		stale []byte
		delay time.Duration
	}{
		{"fin at once", staleFIN(), 0},
		// Late enough that an undrained client has already opened stream 1.
		{"fin after open", staleFIN(), 10 * time.Millisecond},
		{"several frames", bytes.Repeat(staleFIN(), 3), 5 * time.Millisecond},
		{"garbage", []byte("not yamux at all"), 5 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "console.sock")
			newStaleYamuxServer(t, path, tc.stale, tc.delay)
			d := &Dialer{}
			defer d.Close()
			c, err := d.Dial(context.Background(), "serial://"+path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Let a stale FIN reach the stream before using it.
			time.Sleep(30 * time.Millisecond)
			echo(t, c, "first stream")
		})
	}
}

func TestDialSerialDrainBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	stopChatter := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for {
			select {
			case <-stopChatter:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	defer func() { close(stopChatter); <-done }()

	// A peer that never goes quiet holds the dial up for SerialDrainMax only.
	d := &Dialer{SerialDrainMax: 100 * time.Millisecond}
	defer d.Close()
	start := time.Now()
	c, err := d.Dial(context.Background(), "serial://"+path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("dial took %v with SerialDrainMax 100ms", el)
	}

	// A cancelled context ends the drain.
	d2 := &Dialer{SerialDrainQuiet: time.Minute, SerialDrainMax: time.Minute}
	defer d2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := d2.Dial(ctx, "serial://"+path); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestDialSerialNoSocket(t *testing.T) {
	d := &Dialer{}
	_, err := d.Dial(context.Background(), "serial://"+filepath.Join(t.TempDir(), "missing.sock"))
	if !errors.Is(err, os.ErrNotExist) && (err == nil || !strings.Contains(err.Error(), "no such file")) {
		t.Fatalf("err = %v, want no such file", err)
	}
}

func TestDialUnix(t *testing.T) {
	abstract := fmt.Sprintf("@kguest-client-test-%d", os.Getpid())
	tests := []struct {
		name string
		path string
	}{
		{"path", filepath.Join(t.TempDir(), "agent.sock")},
		{"abstract", abstract},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("unix", tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				io.Copy(c, c)
				c.Close()
			}()
			c, err := Dial(context.Background(), "unix://"+tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			echo(t, c, "over "+tc.name)
		})
	}
	// A missing abstract name is refused, not silently created.
	if _, err := Dial(context.Background(), "unix://"+abstract+"-missing"); err == nil {
		t.Fatal("dial of a missing abstract socket succeeded")
	}
}

func TestDialVsockWithoutTransport(t *testing.T) {
	if _, err := os.Stat("/dev/vsock"); err == nil {
		t.Skip("host has /dev/vsock; this test covers the error path only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Dial(ctx, "vsock://3:1024")
	if err == nil || !strings.Contains(err.Error(), "vsock://3:1024") {
		t.Fatalf("err = %v, want an error naming the address", err)
	}
}
