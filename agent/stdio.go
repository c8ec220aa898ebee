package agent

import (
	"context"
	"errors"
	"io"

	"github.com/kguest/kguest/protocols/agentpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// maxReadLen caps one ReadStdout/ReadStderr answer.
const maxReadLen = 1 << 20

// errStreamEOF ends a stream: like Kata's agents, the end of output is an
// error (the host's copy loop stops on any error), named "EOF".
var errStreamEOF = status.Error(codes.OutOfRange, "EOF")

// WriteStdin writes to a process's stdin. No data is the end of stdin, as
// for Kata's agent: Kata 3.x's runtime-rs ends stdin that way and never
// calls CloseStdin.
func (a *Agent) WriteStdin(ctx context.Context, req *agentpb.WriteStreamRequest) (*agentpb.WriteStreamResponse, error) {
	_, p, err := a.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if len(req.Data) == 0 {
		if err := p.CloseStdin(); err != nil {
			return nil, containerStatus(err)
		}
		return &agentpb.WriteStreamResponse{}, nil
	}
	n, err := p.WriteStdin(ctx, req.Data)
	if err != nil {
		return nil, containerStatus(err)
	}
	return &agentpb.WriteStreamResponse{Len: uint32(n)}, nil
}

// ReadStdout blocks until the process has output, and returns up to Len
// bytes of it; the error "EOF" once the process has exited and all output
// was read.
func (a *Agent) ReadStdout(ctx context.Context, req *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	return a.readStream(ctx, req, false)
}

// ReadStderr is ReadStdout for stderr.
func (a *Agent) ReadStderr(ctx context.Context, req *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	return a.readStream(ctx, req, true)
}

func (a *Agent) readStream(ctx context.Context, req *agentpb.ReadStreamRequest, stderr bool) (*agentpb.ReadStreamResponse, error) {
	_, p, err := a.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	n := int(req.Len)
	if n <= 0 || n > maxReadLen {
		n = maxReadLen
	}
	read := p.ReadStdout
	if stderr {
		read = p.ReadStderr
	}
	data, err := read(ctx, n)
	if errors.Is(err, io.EOF) {
		return nil, errStreamEOF
	}
	if err != nil {
		return nil, containerStatus(err)
	}
	if ctx.Err() != nil {
		// The caller is gone: keep the data for the next reader.
		p.Unread(stderr, data)
		return nil, containerStatus(ctx.Err())
	}
	return &agentpb.ReadStreamResponse{Data: data}, nil
}

// CloseStdin closes a process's stdin.
func (a *Agent) CloseStdin(ctx context.Context, req *agentpb.CloseStdinRequest) (*emptypb.Empty, error) {
	_, p, err := a.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if err := p.CloseStdin(); err != nil {
		return nil, containerStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// TtyWinResize sets the terminal size of a tty process.
func (a *Agent) TtyWinResize(ctx context.Context, req *agentpb.TtyWinResizeRequest) (*emptypb.Empty, error) {
	_, p, err := a.process(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if req.Row > 0xffff || req.Column > 0xffff {
		return nil, status.Errorf(codes.InvalidArgument, "window size %dx%d out of range", req.Column, req.Row)
	}
	if err := p.Resize(uint16(req.Column), uint16(req.Row)); err != nil {
		return nil, containerStatus(err)
	}
	return &emptypb.Empty{}, nil
}
