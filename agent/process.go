package agent

import (
	"context"
	"time"

	"github.com/kguest/kguest/agent/container"
	"github.com/kguest/kguest/protocols/agentpb"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// process finds a process: an empty exec id is the container's init.
func (a *Agent) process(containerID, execID string) (*container.Container, *container.Process, error) {
	c, err := a.container(containerID)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Process(execID)
	if err != nil {
		return nil, nil, containerStatus(err)
	}
	return c, p, nil
}

// ExecProcess starts a new process in a running container.
func (a *Agent) ExecProcess(ctx context.Context, req *agentpb.ExecProcessRequest) (*emptypb.Empty, error) {
	c, err := a.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if req.ExecId == "" {
		return nil, status.Error(codes.InvalidArgument, "empty exec id")
	}
	if req.StdinPort != 0 || req.StdoutPort != 0 || req.StderrPort != 0 {
		return nil, status.Error(codes.Unimplemented, "stdio over pre-opened vsock ports is not supported")
	}
	if req.Process == nil {
		return nil, status.Error(codes.InvalidArgument, "missing process")
	}
	if _, err := c.Exec(req.ExecId, container.ToProcess(req.Process)); err != nil {
		return nil, containerStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// SignalProcess signals a process; an empty exec id is the init, and with
// SIGKILL every other process of the container too. As in Kata's agent and
// runc, other signals go to the init alone: Kata hosts send an empty exec id
// with SIGTERM to stop a container gracefully, which is the init's to handle.
func (a *Agent) SignalProcess(ctx context.Context, req *agentpb.SignalProcessRequest) (*emptypb.Empty, error) {
	c, err := a.container(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if req.Signal > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid signal %d", req.Signal)
	}
	sig := unix.Signal(req.Signal)
	if err := c.Signal(req.ExecId, sig, req.ExecId == "" && sig == unix.SIGKILL); err != nil {
		return nil, containerStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// execGrace bounds how long a waited-for exec process stays readable when
// nobody reads its output to the end.
const execGrace = 30 * time.Second

// WaitProcess waits for a process to exit and returns its status (128+N
// when killed by signal N). Waiting again on the init process returns the
// same status; an exec process is forgotten once waited for, as in Kata
// (after its output has been read to the end, or execGrace).
func (a *Agent) WaitProcess(ctx context.Context, req *agentpb.WaitProcessRequest) (*agentpb.WaitProcessResponse, error) {
	c, p, err := a.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	code, err := p.Wait(ctx)
	if err != nil {
		return nil, containerStatus(err)
	}
	if !p.Init {
		c.Forget(req.ExecId, execGrace)
	}
	return &agentpb.WaitProcessResponse{Status: int32(code)}, nil
}
