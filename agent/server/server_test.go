package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The test service "test.Echo" has three methods, registered by hand on both
// protocols: Echo returns its argument, Panic panics, Fail returns a plain error.
const testService = "test.Echo"

type echoImpl struct{}

func (echoImpl) call(ctx context.Context, method string, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	switch method {
	case "Panic":
		var m map[string]int
		m["boom"]++ // nil map write: a genuine runtime panic
	case "Fail":
		return nil, errors.New("plain failure")
	}
	return wrapperspb.String("echo:" + req.GetValue()), nil
}

var testMethods = []string{"Echo", "Panic", "Fail"}

func registerEcho(s *Server) {
	impl := echoImpl{}
	gdesc := grpc.ServiceDesc{ServiceName: testService, HandlerType: (*any)(nil)}
	tdesc := &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{}}
	for _, m := range testMethods {
		gdesc.Methods = append(gdesc.Methods, grpc.MethodDesc{
			MethodName: m,
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				req := new(wrapperspb.StringValue)
				if err := dec(req); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, req any) (any, error) {
					return impl.call(ctx, m, req.(*wrapperspb.StringValue))
				}
				if icpt == nil {
					return h(ctx, req)
				}
				return icpt(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + testService + "/" + m}, h)
			},
		})
		tdesc.Methods[m] = func(ctx context.Context, unmarshal func(any) error) (any, error) {
			req := new(wrapperspb.StringValue)
			if err := unmarshal(req); err != nil {
				return nil, err
			}
			return impl.call(ctx, m, req)
		}
	}
	s.GRPC().RegisterService(&gdesc, impl)
	s.TTRPC().RegisterService(testService, tdesc)
	healthpb.RegisterHealthServer(s.GRPC(), health.NewServer())
}

// caller calls a method of the test service over one protocol.
type caller struct {
	name string
	call func(ctx context.Context, method string, req, resp *wrapperspb.StringValue) error
}

type fixture struct {
	srv     *Server
	addr    string
	served  chan error
	callers []caller
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := New(opts)
	registerEcho(srv)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, addr: sock, served: make(chan error, 1)}
	go func() { f.served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-f.served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})

	gc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gc.Close() })
	tconn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tc := ttrpc.NewClient(tconn)
	t.Cleanup(func() { tc.Close() })

	f.callers = []caller{
		{"grpc", func(ctx context.Context, method string, req, resp *wrapperspb.StringValue) error {
			return gc.Invoke(ctx, "/"+testService+"/"+method, req, resp)
		}},
		{"ttrpc", func(ctx context.Context, method string, req, resp *wrapperspb.StringValue) error {
			return tc.Call(ctx, testService, method, req, resp)
		}},
	}
	return f
}

// testWriter sends server logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestBothProtocolsOnOneListener(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := ctxTimeout(t)
	for _, c := range f.callers {
		resp := new(wrapperspb.StringValue)
		if err := c.call(ctx, "Echo", wrapperspb.String(c.name), resp); err != nil {
			t.Fatalf("%s: Echo: %v", c.name, err)
		}
		if want := "echo:" + c.name; resp.GetValue() != want {
			t.Errorf("%s: Echo = %q, want %q", c.name, resp.GetValue(), want)
		}
	}
	// A stock gRPC client of another service works too.
	gc, err := grpc.NewClient("unix://"+f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	hr, err := healthpb.NewHealthClient(gc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("grpc health: %v", err)
	}
	if hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc health = %v", hr.GetStatus())
	}
}

func TestBadConnectionsAreDropped(t *testing.T) {
	f := newFixture(t, Options{ClassifyTimeout: 300 * time.Millisecond})
	ctx := ctxTimeout(t)

	// A silent client is pending classification while others are served:
	// the accept loop is not held up by it.
	silent, err := net.Dial("unix", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	tests := []struct {
		name    string
		payload []byte
	}{
		{"http1", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"bad preface", []byte("PRI * HTTP/1.1\r\n\r\nXX\r\n\r\n")},
		{"ttrpc response frame", ttrpcHeader(5, 1, 2, 0)},
		{"ttrpc stream zero", ttrpcHeader(5, 0, 1, 0)},
		{"ttrpc unknown flags", ttrpcHeader(5, 1, 1, 0x80)},
		{"short", []byte("abc")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("unix", f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tt.payload); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			// The server closes it without answering (a reset when it
			// closes with unread bytes pending).
			n, err := io.Copy(io.Discard, c)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read: %v (want the server to close)", err)
			}
			if n != 0 {
				t.Errorf("server answered %d bytes", n)
			}
			for _, cl := range f.callers {
				resp := new(wrapperspb.StringValue)
				if err := cl.call(ctx, "Echo", wrapperspb.String("x"), resp); err != nil {
					t.Errorf("%s after garbage: %v", cl.name, err)
				}
			}
		})
	}

	// The silent client is dropped once the timeout passes.
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, silent); err != nil {
		t.Fatalf("silent client: %v (want EOF from the server closing)", err)
	}
}

func ttrpcHeader(length, stream uint32, typ, flags byte) []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint32(b[0:], length)
	binary.BigEndian.PutUint32(b[4:], stream)
	b[8], b[9] = typ, flags
	return b
}

func TestPanicRecovery(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := ctxTimeout(t)
	for _, c := range f.callers {
		for i := 0; i < 2; i++ {
			err := c.call(ctx, "Panic", wrapperspb.String("x"), new(wrapperspb.StringValue))
			st := status.Convert(err)
			if st.Code() != codes.Internal || !strings.Contains(st.Message(), "/test.Echo/Panic") || !strings.Contains(st.Message(), "nil map") {
				t.Errorf("%s: Panic = %v, want Internal naming the method and the panic", c.name, err)
			}
		}
		resp := new(wrapperspb.StringValue)
		if err := c.call(ctx, "Echo", wrapperspb.String("after"), resp); err != nil || resp.GetValue() != "echo:after" {
			t.Errorf("%s: Echo after panic = %q, %v", c.name, resp.GetValue(), err)
		}
	}
}

func TestMaxRequestSize(t *testing.T) {
	const max = 1024
	f := newFixture(t, Options{MaxRequestSize: max})
	ctx := ctxTimeout(t)
	for _, c := range f.callers {
		small := wrapperspb.String(strings.Repeat("a", max-10))
		if err := c.call(ctx, "Echo", small, new(wrapperspb.StringValue)); err != nil {
			t.Errorf("%s: request under the limit: %v", c.name, err)
		}
		big := wrapperspb.String(strings.Repeat("a", 2*max))
		err := c.call(ctx, "Echo", big, new(wrapperspb.StringValue))
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s: oversize request = %v, want ResourceExhausted", c.name, err)
		}
		// The connection stays usable.
		if err := c.call(ctx, "Echo", small, new(wrapperspb.StringValue)); err != nil {
			t.Errorf("%s: request after an oversize one: %v", c.name, err)
		}
	}
}

func TestAuthorizer(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	az := func(ctx context.Context, method string, req any) error {
		v := req.(*wrapperspb.StringValue).GetValue()
		mu.Lock()
		seen = append(seen, method+":"+v)
		mu.Unlock()
		switch v {
		case "deny":
			return errors.New("policy says no")
		case "deny-status":
			return status.Error(codes.FailedPrecondition, "no policy")
		}
		return nil
	}
	f := newFixture(t, Options{Authorizer: az})
	ctx := ctxTimeout(t)
	for _, c := range f.callers {
		mu.Lock()
		seen = nil
		mu.Unlock()
		if err := c.call(ctx, "Echo", wrapperspb.String("ok"), new(wrapperspb.StringValue)); err != nil {
			t.Errorf("%s: allowed call: %v", c.name, err)
		}
		err := c.call(ctx, "Echo", wrapperspb.String("deny"), new(wrapperspb.StringValue))
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "policy says no") {
			t.Errorf("%s: denied call = %v, want PermissionDenied with the reason", c.name, err)
		}
		err = c.call(ctx, "Echo", wrapperspb.String("deny-status"), new(wrapperspb.StringValue))
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("%s: denied call = %v, want the authorizer's code", c.name, err)
		}
		want := []string{"/test.Echo/Echo:ok", "/test.Echo/Echo:deny", "/test.Echo/Echo:deny-status"}
		mu.Lock()
		got := strings.Join(seen, ",")
		mu.Unlock()
		if got != strings.Join(want, ",") {
			t.Errorf("%s: authorizer saw %v, want %v", c.name, got, want)
		}
	}
	// Removing the authorizer allows everything again.
	f.srv.SetAuthorizer(nil)
	for _, c := range f.callers {
		if err := c.call(ctx, "Echo", wrapperspb.String("deny"), new(wrapperspb.StringValue)); err != nil {
			t.Errorf("%s: without authorizer: %v", c.name, err)
		}
	}
}

func TestPlainErrorsKeepTheirMessage(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := ctxTimeout(t)
	for _, c := range f.callers {
		err := c.call(ctx, "Fail", wrapperspb.String("x"), new(wrapperspb.StringValue))
		if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "plain failure" {
			t.Errorf("%s: Fail = %v", c.name, err)
		}
	}
}

func TestShutdown(t *testing.T) {
	srv := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	registerEcho(srv)
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := ttrpc.NewClient(c)
	defer tc.Close()
	ctx := ctxTimeout(t)
	if err := tc.Call(ctx, testService, "Echo", wrapperspb.String("x"), new(wrapperspb.StringValue)); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
	if err := srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}
	if _, err := net.Dial("unix", l.Addr().String()); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		want  protocol
		n     int // bytes consumed
	}{
		{"http2 preface", []byte(http2Preface + "\x00\x00\x00\x04"), protoGRPC, 24},
		{"ttrpc request", append(ttrpcHeader(12, 1, 1, 0), "payload....."...), protoTTRPC, 10},
		{"ttrpc request with flags", ttrpcHeader(0, 3, 1, 0x2), protoTTRPC, 10},
		{"ttrpc big length", ttrpcHeader(1<<30, 1, 1, 0), protoTTRPC, 10},
		{"ttrpc data frame", ttrpcHeader(4, 1, 3, 0), protoUnknown, 10},
		{"preface prefix then junk", []byte("PRI * HTTPxxxxxxxxxxxxxxxxxxxx"), protoUnknown, 24},
		{"tls hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03}, protoUnknown, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.input)
			got, prefix, err := classify(r)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("classify = %v, want %v", got, tt.want)
			}
			if len(prefix) != tt.n || !bytes.Equal(prefix, tt.input[:tt.n]) {
				t.Errorf("consumed %q, want %q", prefix, tt.input[:tt.n])
			}
			if rest := len(tt.input) - r.Len(); rest != tt.n {
				t.Errorf("read %d bytes from the connection, want %d", rest, tt.n)
			}
		})
	}
	if _, _, err := classify(bytes.NewReader([]byte("PRI"))); err == nil {
		t.Error("short input classified without error")
	}
}

func TestReplayConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { b.Write([]byte("world")); b.Close() }()
	rc := &replayConn{Conn: a, prefix: []byte("hello ")}
	buf := make([]byte, 4)
	var out []byte
	for {
		n, err := rc.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(out) != "hello world" {
		t.Errorf("read %q", out)
	}
}

func TestManyConcurrentClients(t *testing.T) {
	f := newFixture(t, Options{Logger: slog.New(slog.DiscardHandler)})
	ctx := ctxTimeout(t)
	const n = 16
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		for _, proto := range []string{"grpc", "ttrpc"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var call func(req, resp *wrapperspb.StringValue) error
				if proto == "grpc" {
					gc, err := grpc.NewClient("unix://"+f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
					if err != nil {
						errs <- err
						return
					}
					defer gc.Close()
					call = func(req, resp *wrapperspb.StringValue) error {
						return gc.Invoke(ctx, "/"+testService+"/Echo", req, resp)
					}
				} else {
					c, err := net.Dial("unix", f.addr)
					if err != nil {
						errs <- err
						return
					}
					tc := ttrpc.NewClient(c)
					defer tc.Close()
					call = func(req, resp *wrapperspb.StringValue) error {
						return tc.Call(ctx, testService, "Echo", req, resp)
					}
				}
				for j := 0; j < 10; j++ {
					want := fmt.Sprintf("%s-%d-%d", proto, i, j)
					resp := new(wrapperspb.StringValue)
					if err := call(wrapperspb.String(want), resp); err != nil {
						errs <- fmt.Errorf("%s: %w", want, err)
						return
					}
					if resp.GetValue() != "echo:"+want {
						errs <- fmt.Errorf("%s: got %q", want, resp.GetValue())
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
