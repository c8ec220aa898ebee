// Package server serves the agent API over gRPC and ttrpc on one listener.
//
// Each accepted connection is classified by its first bytes: the HTTP/2
// client preface means gRPC (Kata 1.x hosts), a ttrpc request frame header
// means ttrpc (Kata 2.x/3.x hosts). The bytes read to decide are replayed to
// the chosen server, which consumes its connections from an in-memory
// listener.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
)

const (
	// DefaultMaxRequestSize is the largest request accepted by default; it
	// is also the largest frame ttrpc itself accepts.
	DefaultMaxRequestSize = 4 << 20
	// DefaultClassifyTimeout bounds how long a new connection may take to
	// send its first bytes.
	DefaultClassifyTimeout = 10 * time.Second

	// connBufferSize is the gRPC per-connection read and write buffer
	// size (32 KiB by default).
	connBufferSize = 8 << 10
)

// Authorizer decides whether a call may proceed. fullMethod is
// "/grpc.AgentService/CreateContainer" style on both protocols and req is
// the decoded request message. A non-nil error refuses the call: a status
// error is returned as is, any other error as PermissionDenied.
type Authorizer func(ctx context.Context, fullMethod string, req any) error

// Options configure a Server.
type Options struct {
	// Logger receives connection and call logs; slog.Default() if nil.
	Logger *slog.Logger
	// MaxRequestSize is the largest request message in bytes;
	// DefaultMaxRequestSize if zero.
	MaxRequestSize int
	// ClassifyTimeout bounds the wait for a connection's first bytes;
	// DefaultClassifyTimeout if zero.
	ClassifyTimeout time.Duration
	// Authorizer, if set, is consulted before every call.
	Authorizer Authorizer
}

// Server is one gRPC server and one ttrpc server behind a protocol sniffer.
type Server struct {
	log             *slog.Logger
	maxRequestSize  int
	classifyTimeout time.Duration
	authorizer      atomic.Pointer[Authorizer]

	grpc  *grpc.Server
	ttrpc *ttrpc.Server

	grpcL  *chanListener
	ttrpcL *chanListener

	ctx    context.Context
	cancel context.CancelFunc

	startOnce sync.Once
	backends  sync.WaitGroup

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	closed    bool
}

// New returns a Server with no services registered.
func New(opts Options) *Server {
	s := &Server{
		log:             opts.Logger,
		maxRequestSize:  opts.MaxRequestSize,
		classifyTimeout: opts.ClassifyTimeout,
		grpcL:           newChanListener(memAddr("grpc")),
		ttrpcL:          newChanListener(memAddr("ttrpc")),
		listeners:       make(map[net.Listener]struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.maxRequestSize <= 0 {
		s.maxRequestSize = DefaultMaxRequestSize
	}
	if s.classifyTimeout <= 0 {
		s.classifyTimeout = DefaultClassifyTimeout
	}
	s.SetAuthorizer(opts.Authorizer)

	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(s.maxRequestSize),
		grpc.ForceServerCodecV2(newGRPCCodec()),
		// The host keeps one or two connections open for the sandbox's
		// life: small, released buffers keep an idle agent small.
		grpc.ReadBufferSize(connBufferSize),
		grpc.WriteBufferSize(connBufferSize),
		grpc.SharedWriteBuffer(true),
		grpc.ChainUnaryInterceptor(s.grpcUnary),
		grpc.ChainStreamInterceptor(s.grpcStream),
	)
	t, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(s.ttrpcUnary))
	if err != nil {
		// Only conflicting options make NewServer fail; these are fixed.
		panic(fmt.Sprintf("ttrpc server: %v", err))
	}
	s.ttrpc = t
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// SetAuthorizer replaces the authorizer; nil allows every call.
func (s *Server) SetAuthorizer(a Authorizer) {
	s.authorizer.Store(&a)
}

// GRPC is the gRPC server services are registered on.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// TTRPC is the ttrpc server services are registered on.
func (s *Server) TTRPC() *ttrpc.Server { return s.ttrpc }

// startBackends starts the gRPC and ttrpc servers on their in-memory
// listeners, once, so that services can be registered until then.
func (s *Server) startBackends() {
	s.startOnce.Do(func() {
		s.backends.Add(2)
		go func() {
			defer s.backends.Done()
			if err := s.grpc.Serve(s.grpcL); err != nil && !errors.Is(err, errListenerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
				s.log.Error("grpc server stopped", "error", err)
			}
		}()
		go func() {
			defer s.backends.Done()
			if err := s.ttrpc.Serve(s.ctx, s.ttrpcL); err != nil && !errors.Is(err, errListenerClosed) && !errors.Is(err, ttrpc.ErrServerClosed) {
				s.log.Error("ttrpc server stopped", "error", err)
			}
		}()
	})
}

// ErrServerClosed is returned by Serve after Shutdown or Stop.
var ErrServerClosed = errors.New("agent server closed")

// Serve accepts connections on l until l fails or the server is shut down,
// in which case it returns ErrServerClosed. It may be called for several
// listeners. Classification runs per connection, so a slow or silent client
// never holds up the accept loop.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	s.startBackends()
	var backoff time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "error", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		go s.dispatch(conn)
	}
}

// dispatch classifies conn and hands it to the server of its protocol.
func (s *Server) dispatch(conn net.Conn) {
	// A timer closing the connection works for every net.Conn, including
	// those whose SetReadDeadline is a no-op.
	timer := time.AfterFunc(s.classifyTimeout, func() { conn.Close() })
	p, prefix, err := classify(conn)
	if !timer.Stop() {
		err = fmt.Errorf("no protocol preface within %v", s.classifyTimeout)
	}
	remote := addrString(conn.RemoteAddr())
	if err != nil || p == protoUnknown {
		conn.Close()
		if errors.Is(err, io.EOF) {
			// Connected and hung up without a byte: hosts probe the
			// channel like this.
			s.log.Debug("connection closed before any request", "remote", remote)
			return
		}
		if err == nil {
			err = fmt.Errorf("unrecognised protocol preface %q", prefix)
		}
		s.log.Warn("dropping connection", "remote", remote, "error", err)
		return
	}
	s.log.Debug("connection", "remote", remote, "proto", p.String())
	rc := &replayConn{Conn: conn, prefix: prefix}
	target := s.grpcL
	if p == protoTTRPC {
		target = s.ttrpcL
	}
	if !target.deliver(rc) {
		conn.Close()
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// closeListeners stops every accept loop; it reports whether it was the
// first call.
func (s *Server) closeListeners() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	s.grpcL.Close()
	s.ttrpcL.Close()
	return true
}

// Shutdown stops accepting connections and waits for calls in flight to
// finish, or for ctx to end, after which it closes what remains.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	terr := s.ttrpc.Shutdown(ctx)
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	if terr != nil {
		s.ttrpc.Close()
	}
	s.cancel()
	s.backends.Wait()
	if terr != nil {
		return terr
	}
	return ctx.Err()
}

// Stop closes every listener and connection at once.
func (s *Server) Stop() {
	s.closeListeners()
	s.grpc.Stop()
	s.ttrpc.Close()
	s.cancel()
	s.backends.Wait()
}
