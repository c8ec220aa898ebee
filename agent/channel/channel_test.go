package channel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in      string
		want    Addr
		wantErr string
	}{
		{in: "vsock://-1:1024", want: Addr{Kind: KindVsock, CID: CIDAny, Port: 1024}},
		{in: "vsock://any:1024", want: Addr{Kind: KindVsock, CID: CIDAny, Port: 1024}},
		{in: "vsock://3:2048", want: Addr{Kind: KindVsock, CID: 3, Port: 2048}},
		{in: "unix:///run/kata/agent.sock", want: Addr{Kind: KindUnix, Path: "/run/kata/agent.sock"}},
		{in: "unix://@kata-agent", want: Addr{Kind: KindUnix, Path: "@kata-agent"}},
		{in: "serial:///dev/vport0p1", want: Addr{Kind: KindSerial, Path: "/dev/vport0p1"}},
		{in: "/tmp/a.sock", wantErr: "missing scheme"},
		{in: "tcp://1.2.3.4:80", wantErr: "unknown scheme"},
		{in: "vsock://-1", wantErr: "want vsock://CID:PORT"},
		{in: "vsock://:1024", wantErr: "want vsock://CID:PORT"},
		{in: "vsock://x:1024", wantErr: "bad CID"},
		{in: "vsock://-2:1024", wantErr: "bad CID"},
		{in: "vsock://3:0", wantErr: "bad port"},
		{in: "vsock://3:4294967295", wantErr: "bad port"},
		{in: "vsock://3:99999999999", wantErr: "bad port"},
		{in: "unix://relative.sock", wantErr: "want unix:///absolute/path"},
		{in: "unix://", wantErr: "want unix:///absolute/path"},
		{in: "unix://@", wantErr: "want unix:///absolute/path"},
		{in: "serial://agent.channel.0", wantErr: "want serial:///dev/vportNpM"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAddr(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseAddr(%q) = %+v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseAddr(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if s := got.String(); s != strings.Replace(tt.in, "any", "-1", 1) {
				t.Errorf("String() = %q, want %q", s, tt.in)
			}
		})
	}
}

// pairOpener hands out one end of a fresh socket pair per Open; the test
// drives the other end as the host.
type pairOpener struct {
	ends chan io.ReadWriteCloser
}

func (p *pairOpener) Open(ctx context.Context) (io.ReadWriteCloser, error) {
	select {
	case e := <-p.ends:
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func socketPair(t *testing.T) (guest, host *os.File) {
	t.Helper()
	// Non-blocking, so that os.File uses the poller and Close interrupts a
	// pending Read, as it does for a virtio-serial port.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
}

// echoServe answers each accepted stream by echoing one line with a prefix.
func echoServe(l net.Listener, prefix string) chan error {
	errc := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				errc <- err
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s%s", prefix, line)
			}()
		}
	}()
	return errc
}

func roundTrip(t *testing.T, dial func() (net.Conn, error), msg string) string {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

func TestYamuxListenerReconnect(t *testing.T) {
	op := &pairOpener{ends: make(chan io.ReadWriteCloser)}
	l := NewYamuxListener(op, SerialAddr{Path: "test"}, nil)
	errc := echoServe(l, "echo:")

	for round := 0; round < 3; round++ {
		guest, host := socketPair(t)
		op.ends <- guest
		sess, err := yamux.Client(host, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Several streams per session, concurrently.
		done := make(chan string, 4)
		for i := 0; i < 4; i++ {
			go func() {
				c, err := sess.Open()
				if err != nil {
					done <- err.Error()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "r%d-%d\n", round, i)
				line, _ := bufio.NewReader(c).ReadString('\n')
				done <- strings.TrimSpace(line)
			}()
		}
		seen := map[string]bool{}
		for i := 0; i < 4; i++ {
			seen[<-done] = true
		}
		for i := 0; i < 4; i++ {
			if want := fmt.Sprintf("echo:r%d-%d", round, i); !seen[want] {
				t.Errorf("round %d: missing %q in %v", round, want, seen)
			}
		}
		// The host hangs up: closing the client session closes its end.
		sess.Close()
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

// A host end that is closed abruptly (no yamux GoAway) must also lead to a
// new session.
func TestYamuxListenerAbruptHangup(t *testing.T) {
	op := &pairOpener{ends: make(chan io.ReadWriteCloser)}
	l := NewYamuxListener(op, SerialAddr{Path: "test"}, nil)
	defer l.Close()
	echoServe(l, "")

	guest, host := socketPair(t)
	op.ends <- guest
	sess, _ := yamux.Client(host, nil)
	if got := roundTrip(t, func() (net.Conn, error) { return sess.Open() }, "one"); got != "one" {
		t.Fatalf("got %q", got)
	}
	host.Close() // under the session's feet

	guest2, host2 := socketPair(t)
	select {
	case op.ends <- guest2:
	case <-time.After(5 * time.Second):
		t.Fatal("listener did not reopen the port after the host hung up")
	}
	sess2, _ := yamux.Client(host2, nil)
	defer sess2.Close()
	if got := roundTrip(t, func() (net.Conn, error) { return sess2.Open() }, "two"); got != "two" {
		t.Fatalf("got %q", got)
	}
	sess.Close()
}

// keepOpen hides Close from a yamux client, so the next client can use the
// same host end, as when a host reconnects before the guest notices.
type keepOpen struct{ io.ReadWriter }

func (keepOpen) Close() error { return nil }

// A host that reconnects faster than the guest can see (no EOF on the port)
// starts its stream ids afresh; the guest must start a new session for it.
func TestYamuxListenerQuickReconnect(t *testing.T) {
	op := &pairOpener{ends: make(chan io.ReadWriteCloser, 1)}
	l := NewYamuxListener(op, SerialAddr{Path: "test"}, nil)
	defer l.Close()
	echoServe(l, "q:")
	guest, host := socketPair(t)
	defer host.Close()
	op.ends <- guest
	for round := 0; round < 4; round++ {
		sess, err := yamux.Client(keepOpen{host}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ { // stream ids 1, 3, 5 again in every round
			msg := fmt.Sprintf("r%d-%d", round, i)
			if got := roundTrip(t, func() (net.Conn, error) { return sess.Open() }, msg); got != "q:"+msg {
				t.Fatalf("round %d: got %q", round, got)
			}
		}
		// Unblock the client's reader (its Close cannot close the end).
		host.SetReadDeadline(time.Now())
		sess.Close()
		// What the old session still sends (stream FINs) is lost with the
		// old host connection; drain it here.
		host.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		io.Copy(io.Discard, host)
		host.SetReadDeadline(time.Time{})
	}
	select {
	case <-op.ends:
	default:
	}
}

func TestYamuxListenerCloseWhileOpening(t *testing.T) {
	op := &pairOpener{ends: make(chan io.ReadWriteCloser)}
	l := NewYamuxListener(op, SerialAddr{Path: "test"}, nil)
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked while the port was being opened")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "agent.sock")
	// A stale socket from an earlier run must not stop the listener.
	stale, err := net.Listen("unix", filepath.Join(dir, "stale.sock"))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	for _, addr := range []string{"unix://" + path, "unix://" + filepath.Join(dir, "stale.sock"), fmt.Sprintf("unix://@kguest-test-%d", os.Getpid())} {
		t.Run(addr, func(t *testing.T) {
			l, err := Listen(context.Background(), Config{Addr: addr}, nil)
			if err != nil {
				t.Fatal(err)
			}
			echoServe(l, "u:")
			a, _ := ParseAddr(addr)
			got := roundTrip(t, func() (net.Conn, error) { return net.Dial("unix", a.Path) }, "hi")
			if got != "u:hi" {
				t.Errorf("got %q", got)
			}
			l.Close()
			if a.Path[0] == '/' {
				if _, err := os.Stat(a.Path); !os.IsNotExist(err) {
					t.Errorf("socket file left after Close: %v", err)
				}
			}
		})
	}
}

func TestListenBadAddr(t *testing.T) {
	if _, err := Listen(context.Background(), Config{Addr: "tcp://0:1"}, nil); err == nil {
		t.Fatal("Listen accepted a tcp address")
	}
}

func writePort(t *testing.T, sysfs, port, name string) {
	t.Helper()
	d := filepath.Join(sysfs, "class", "virtio-ports", port)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "name"), []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindSerialPort(t *testing.T) {
	sysfs, dev := t.TempDir(), t.TempDir()
	if _, err := FindSerialPort(sysfs, dev, DefaultSerialName); err == nil {
		t.Fatal("found a port in an empty sysfs")
	}
	writePort(t, sysfs, "vport0p0", "")
	writePort(t, sysfs, "vport0p1", "org.qemu.guest_agent.0")
	writePort(t, sysfs, "vport1p1", DefaultSerialName)
	got, err := FindSerialPort(sysfs, dev, DefaultSerialName)
	if err != nil || got != filepath.Join(dev, "vport1p1") {
		t.Fatalf("FindSerialPort = %q, %v", got, err)
	}
	if _, err := FindSerialPort(sysfs, dev, "agent.channel.1"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing name: %v", err)
	}
}

func TestWaitSerialPortTimeout(t *testing.T) {
	sysfs, dev := t.TempDir(), t.TempDir()
	_, err := WaitSerialPort(context.Background(), sysfs, dev, DefaultSerialName, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not found after") {
		t.Fatalf("err = %v", err)
	}
}

// makeRaw turns off the line discipline's processing so a pty carries bytes
// unchanged, like a virtio-serial port.
func makeRaw(t *testing.T, f *os.File) {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
}

// TestListenSerialDevice runs the whole serial path (auto selection with
// vsock off, sysfs lookup of a port that appears late, device open, wait for
// the host, yamux) over a pty standing in for the port device.
func TestListenSerialDevice(t *testing.T) {
	master, pts, err := pty.Open()
	if err != nil {
		t.Skipf("needs a pty: %v", err)
	}
	makeRaw(t, pts)
	makeRaw(t, master)
	// pty.Open left the master in blocking mode; use a non-blocking
	// duplicate so that closing the host session interrupts its reads.
	nfd, err := unix.Dup(int(master.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	master.Close()
	if err := unix.SetNonblock(nfd, true); err != nil {
		t.Fatal(err)
	}
	ptm := os.NewFile(uintptr(nfd), "ptmx")
	defer ptm.Close()
	sysfs, dev := t.TempDir(), t.TempDir()
	if err := os.Symlink(pts.Name(), filepath.Join(dev, "vport2p1")); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		writePort(t, sysfs, "vport2p1", DefaultSerialName)
	}()
	off := false
	l, err := Listen(context.Background(), Config{UseVsock: &off, SysfsRoot: sysfs, DevRoot: dev, PollTimeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Keep this slave descriptor until the end: the listener opens its own
	// in the background, and a master with no slave open reads EIO.
	defer pts.Close()
	defer l.Close()
	if l.Addr().Network() != "serial" || l.Addr().String() != filepath.Join(dev, "vport2p1") {
		t.Errorf("Addr = %s %s", l.Addr().Network(), l.Addr())
	}
	echoServe(l, "s:")
	sess, err := yamux.Client(ptm, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, m := range []string{"a", "b", strings.Repeat("x", 100000)} {
		if got := roundTrip(t, func() (net.Conn, error) { return sess.Open() }, m); got != "s:"+m {
			t.Fatalf("got %d bytes, want %d", len(got), len(m)+2)
		}
	}
}

func TestListenSerialMissing(t *testing.T) {
	off := false
	start := time.Now()
	_, err := Listen(context.Background(), Config{UseVsock: &off, SysfsRoot: t.TempDir(), DevRoot: t.TempDir(), PollTimeout: 100 * time.Millisecond}, nil)
	if err == nil {
		t.Fatal("Listen succeeded without a port")
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Errorf("Listen gave up before PollTimeout: %v", err)
	}
}

func TestListenVsockLoopback(t *testing.T) {
	if _, err := os.Stat("/dev/vsock"); err != nil {
		t.Skip("needs /dev/vsock")
	}
	const port = 52011
	l, err := ListenAddr(context.Background(), Addr{Kind: KindVsock, CID: CIDAny, Port: port}, nil)
	if err != nil {
		t.Skipf("vsock listen not available here: %v", err)
	}
	defer l.Close()
	echoServe(l, "v:")
	c, err := vsock.Dial(unix.VMADDR_CID_LOCAL, port, nil)
	if err != nil {
		t.Skipf("vsock loopback transport not available: %v", err)
	}
	c.Close()
	got := roundTrip(t, func() (net.Conn, error) { return vsock.Dial(unix.VMADDR_CID_LOCAL, port, nil) }, "hi")
	if got != "v:hi" {
		t.Fatalf("got %q", got)
	}
}

func TestGuestCID(t *testing.T) {
	dev := t.TempDir()
	if _, err := GuestCID(dev); err == nil {
		t.Fatal("GuestCID succeeded without a vsock device node")
	}
	cid, err := GuestCID("/dev")
	if err != nil {
		t.Logf("no guest vsock transport here: %v", err)
		return
	}
	if cid <= unix.VMADDR_CID_HOST || cid == unix.VMADDR_CID_ANY {
		t.Fatalf("GuestCID returned a non-guest CID %d without error", cid)
	}
}

// BenchmarkYamuxListenerThroughput measures guest-to-host bytes through the
// listener's framing over a socket pair (the stand-in for the port).
func BenchmarkYamuxListenerThroughput(b *testing.B) {
	op := &pairOpener{ends: make(chan io.ReadWriteCloser, 1)}
	l := NewYamuxListener(op, SerialAddr{Path: "bench"}, nil)
	defer l.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		b.Fatal(err)
	}
	guest, host := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
	op.ends <- guest
	sess, err := yamux.Client(host, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	chunk := make([]byte, 32<<10)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	st, err := sess.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	st.Write([]byte{0}) // make the stream known to the guest
	buf := make([]byte, len(chunk))
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := io.ReadFull(st, buf); err != nil {
			b.Fatal(err)
		}
	}
}
