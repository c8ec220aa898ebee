package client

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kguest/kguest/protocols/agentpb"
)

// testAgent answers Health and a couple of AgentService calls.
type testAgent struct {
	agentpb.UnimplementedAgentServiceServer
	agentpb.UnimplementedHealthServer
}

func (testAgent) Check(context.Context, *agentpb.CheckRequest) (*agentpb.HealthCheckResponse, error) {
	return &agentpb.HealthCheckResponse{Status: agentpb.HealthCheckResponse_SERVING}, nil
}

func (testAgent) Version(context.Context, *agentpb.CheckRequest) (*agentpb.VersionCheckResponse, error) {
	return &agentpb.VersionCheckResponse{AgentVersion: "9.9.9", GrpcVersion: "1"}, nil
}

func (testAgent) StartContainer(_ context.Context, r *agentpb.StartContainerRequest) (*emptypb.Empty, error) {
	return nil, status.Errorf(codes.NotFound, "container %q not found", r.ContainerId)
}

func (testAgent) WaitProcess(_ context.Context, r *agentpb.WaitProcessRequest) (*agentpb.WaitProcessResponse, error) {
	return &agentpb.WaitProcessResponse{Status: int32(len(r.ContainerId))}, nil
}

func serveGRPC(t testing.TB, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	agentpb.RegisterAgentServiceServer(s, testAgent{})
	agentpb.RegisterHealthServer(s, testAgent{})
	go s.Serve(l)
	t.Cleanup(s.Stop)
}

func serveTTRPC(t testing.TB, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	// The gRPC server method set is the ttrpc service interface.
	agentpb.RegisterTTRPCAgentServiceService(s, testAgent{})
	agentpb.RegisterTTRPCHealthService(s, testAgent{})
	go s.Serve(context.Background(), l)
	t.Cleanup(func() { s.Close() })
}

func TestClientBothProtocols(t *testing.T) {
	dir := t.TempDir()
	servers := map[Protocol]func(testing.TB, string){GRPC: serveGRPC, TTRPC: serveTTRPC}
	for p, serve := range servers {
		t.Run(string(p), func(t *testing.T) {
			sock := filepath.Join(dir, string(p)+".sock")
			serve(t, sock)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := New(ctx, "unix://"+sock, p)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Protocol() != p {
				t.Errorf("Protocol() = %s", c.Protocol())
			}

			h, err := c.Check(ctx, &agentpb.CheckRequest{})
			if err != nil || h.Status != agentpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check = %v, %v", h, err)
			}
			v, err := c.Version(ctx, &agentpb.CheckRequest{})
			if err != nil || v.AgentVersion != "9.9.9" {
				t.Fatalf("Version = %v, %v", v, err)
			}

			// Status codes and messages survive both protocols.
			_, err = c.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: "x"})
			if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != `container "x" not found` {
				t.Fatalf("StartContainer err = %v", err)
			}
			_, err = c.PauseContainer(ctx, &agentpb.PauseContainerRequest{ContainerId: "x"})
			if status.Code(err) != codes.Unimplemented {
				t.Fatalf("PauseContainer err = %v, want Unimplemented", err)
			}

			var resp agentpb.WaitProcessResponse
			if err := c.Invoke(ctx, AgentServiceName, "WaitProcess", &agentpb.WaitProcessRequest{ContainerId: "abcd"}, &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Status != 4 {
				t.Fatalf("Invoke WaitProcess status = %d, want 4", resp.Status)
			}
			var hv agentpb.VersionCheckResponse
			if err := c.Invoke(ctx, HealthServiceName, "Version", &agentpb.CheckRequest{}, &hv); err != nil || hv.AgentVersion != "9.9.9" {
				t.Fatalf("Invoke Version = %v, %v", &hv, err)
			}
			if err := c.Invoke(ctx, AgentServiceName, "NoSuchRPC", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Unimplemented {
				t.Fatalf("Invoke of unknown method: %v", err)
			}
		})
	}
}

func TestWaitReady(t *testing.T) {
	for _, p := range []Protocol{GRPC, TTRPC} {
		t.Run(string(p), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "agent.sock")
			// Nothing listens: WaitReady gives up at the deadline with the last error.
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			err := WaitReady(ctx, "unix://"+sock, p)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want deadline exceeded", err)
			}

			// The agent comes up after a while: WaitReady returns once it answers.
			started := make(chan struct{})
			go func() {
				time.Sleep(100 * time.Millisecond)
				if p == GRPC {
					serveGRPC(t, sock)
				} else {
					serveTTRPC(t, sock)
				}
				close(started)
			}()
			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := WaitReady(ctx, "unix://"+sock, p); err != nil {
				t.Fatal(err)
			}
			<-started
		})
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, "tcp://x", GRPC); err == nil {
		t.Error("New accepted an unknown scheme")
	}
	if _, err := New(ctx, "unix:///x", "http"); err == nil {
		t.Error("New accepted an unknown protocol")
	}
	if _, err := ParseProtocol("http"); err == nil {
		t.Error("ParseProtocol accepted http")
	}
}

// BenchmarkCheck measures one Health.Check round trip over a unix socket.
func BenchmarkCheck(b *testing.B) {
	for _, p := range []Protocol{GRPC, TTRPC} {
		b.Run(string(p), func(b *testing.B) {
			sock := filepath.Join(b.TempDir(), "agent.sock")
			if p == GRPC {
				serveGRPC(b, sock)
			} else {
				serveTTRPC(b, sock)
			}
			ctx := context.Background()
			c, err := New(ctx, "unix://"+sock, p)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Check(ctx, &agentpb.CheckRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
