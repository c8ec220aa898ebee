package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/kguest/kguest/protocols/agentpb"
)

// Protocol is the RPC framing spoken on the agent connection.
type Protocol string

const (
	// GRPC is gRPC over HTTP/2, as Kata 1.x hosts speak.
	GRPC Protocol = "grpc"
	// TTRPC is containerd's ttrpc, as Kata 2.x and 3.x hosts speak.
	TTRPC Protocol = "ttrpc"
)

// ParseProtocol accepts "grpc" or "ttrpc".
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case GRPC, TTRPC:
		return p, nil
	}
	return "", fmt.Errorf("unknown protocol %q (want grpc or ttrpc)", s)
}

// Service names on the wire.
const (
	AgentServiceName  = "grpc.AgentService"
	HealthServiceName = "grpc.Health"
)

// Client calls the agent API over one protocol. Errors are gRPC status
// errors on both protocols (status.Code works on them).
type Client interface {
	agentpb.TTRPCAgentServiceService
	agentpb.TTRPCHealthService
	// Invoke calls service/method (e.g. "grpc.AgentService", "CreateContainer")
	// with any request and response message.
	Invoke(ctx context.Context, service, method string, req, resp proto.Message) error
	Protocol() Protocol
	Close() error
}

// New returns a client for the agent at addr. With TTRPC it dials at once;
// with GRPC the connection is made (and re-made) on demand by gRPC.
func New(ctx context.Context, addr string, p Protocol) (Client, error) {
	return DefaultDialer.New(ctx, addr, p)
}

// New returns a client for the agent at addr that dials with d.
func (d *Dialer) New(ctx context.Context, addr string, p Protocol) (Client, error) {
	if _, err := ParseAddr(addr); err != nil {
		return nil, err
	}
	switch p {
	case TTRPC:
		conn, err := d.Dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		return NewTTRPC(conn), nil
	case GRPC:
		return d.newGRPC(addr)
	}
	return nil, fmt.Errorf("unknown protocol %q", p)
}

type ttrpcClient struct {
	agentpb.TTRPCAgentServiceService
	agentpb.TTRPCHealthService
	c *ttrpc.Client
}

// NewTTRPC speaks ttrpc on an established connection; Close closes conn.
func NewTTRPC(conn net.Conn) Client {
	c := ttrpc.NewClient(conn)
	return &ttrpcClient{
		TTRPCAgentServiceService: agentpb.NewTTRPCAgentServiceClient(c),
		TTRPCHealthService:       agentpb.NewTTRPCHealthClient(c),
		c:                        c,
	}
}

func (t *ttrpcClient) Invoke(ctx context.Context, service, method string, req, resp proto.Message) error {
	return t.c.Call(ctx, service, method, req, resp)
}

func (t *ttrpcClient) Protocol() Protocol { return TTRPC }

func (t *ttrpcClient) Close() error {
	err := t.c.Close()
	if errors.Is(err, ttrpc.ErrClosed) {
		return nil
	}
	return err
}

type grpcClient struct {
	grpcAgent
	grpcHealth
	cc *grpc.ClientConn
}

func (d *Dialer) newGRPC(addr string) (Client, error) {
	cc, err := grpc.NewClient("passthrough:///kata-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return d.Dial(ctx, addr)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", addr, err)
	}
	return &grpcClient{
		grpcAgent:  grpcAgent{agentpb.NewAgentServiceClient(cc)},
		grpcHealth: grpcHealth{agentpb.NewHealthClient(cc)},
		cc:         cc,
	}, nil
}

func (g *grpcClient) Invoke(ctx context.Context, service, method string, req, resp proto.Message) error {
	return g.cc.Invoke(ctx, "/"+service+"/"+method, req, resp)
}

func (g *grpcClient) Protocol() Protocol { return GRPC }

func (g *grpcClient) Close() error { return g.cc.Close() }

// Backoff bounds for WaitReady.
const (
	readyBackoffMin = 10 * time.Millisecond
	readyBackoffMax = 50 * time.Millisecond
	// readyAttemptMax bounds one Health.Check so that a connection that
	// accepted but never answers is retried.
	readyAttemptMax = 2 * time.Second
)

// WaitReady polls Health.Check on a fresh connection, backing off from 10 ms
// doubling to 50 ms, until the agent answers SERVING or ctx ends.
func WaitReady(ctx context.Context, addr string, p Protocol) error {
	return DefaultDialer.WaitReady(ctx, addr, p)
}

// WaitReady is WaitReady dialling with d.
func (d *Dialer) WaitReady(ctx context.Context, addr string, p Protocol) error {
	if _, err := ParseAddr(addr); err != nil {
		return err
	}
	backoff := readyBackoffMin
	var last error
	for {
		last = d.checkOnce(ctx, addr, p)
		if last == nil {
			return nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("agent at %s not ready: %w (last error: %v)", addr, ctx.Err(), last)
		case <-t.C:
		}
		backoff = min(2*backoff, readyBackoffMax)
	}
}

func (d *Dialer) checkOnce(ctx context.Context, addr string, p Protocol) error {
	ctx, cancel := context.WithTimeout(ctx, readyAttemptMax)
	defer cancel()
	c, err := d.New(ctx, addr, p)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.Check(ctx, &agentpb.CheckRequest{})
	if err != nil {
		return err
	}
	if resp.Status != agentpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health status %s", resp.Status)
	}
	return nil
}
