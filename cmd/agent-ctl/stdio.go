package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
)

// readChunk is how much one ReadStdout/ReadStderr asks for.
const readChunk = 32 << 10

// drainGrace bounds how long output may still flow after the process was
// reaped; the agent ends the streams once the output is drained.
const drainGrace = 10 * time.Second

// session streams one process's stdio over the agent API.
type session struct {
	c      client.Client
	cid    string
	execID string
	tty    bool
	e      *env

	cancel  context.CancelFunc
	ctx     context.Context
	readers sync.WaitGroup
	term    console.Console // local terminal in raw mode, if any
}

func newSession(e *env, c client.Client, cid, execID string, tty bool) *session {
	ctx, cancel := context.WithCancel(context.Background())
	return &session{c: c, cid: cid, execID: execID, tty: tty, e: e, ctx: ctx, cancel: cancel}
}

// isEOF tells whether a read error just means the stream has ended.
func isEOF(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	s, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch s.Code() {
	case codes.OutOfRange, codes.NotFound:
		return true
	}
	return strings.Contains(strings.ToLower(s.Message()), "eof")
}

type readFunc func(context.Context, *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error)

func (s *session) pump(name string, read readFunc, w io.Writer) {
	defer s.readers.Done()
	for {
		resp, err := read(s.ctx, &agentpb.ReadStreamRequest{ContainerId: s.cid, ExecId: s.execID, Len: readChunk})
		if err != nil {
			if !isEOF(err) && s.ctx.Err() == nil {
				fmt.Fprintf(s.e.stderr, "agent-ctl: read %s: %s\n", name, describe(err))
			}
			return
		}
		if len(resp.Data) == 0 {
			return
		}
		if _, err := w.Write(resp.Data); err != nil {
			return
		}
	}
}

// startOutput copies the process's stdout (and stderr, without a tty) to ours.
func (s *session) startOutput() {
	s.readers.Add(1)
	go s.pump("stdout", s.c.ReadStdout, s.e.stdout)
	if !s.tty {
		s.readers.Add(1)
		go s.pump("stderr", s.c.ReadStderr, s.e.stderr)
	}
}

// startInput forwards our stdin and closes the process's stdin at its end.
// The reading goroutine may outlive the process if stdin never ends; the
// command exits without waiting for it.
func (s *session) startInput() {
	if s.e.stdin == nil {
		return
	}
	go func() {
		buf := make([]byte, readChunk)
		for {
			n, rerr := s.e.stdin.Read(buf)
			for data := buf[:n]; len(data) > 0; {
				resp, err := s.c.WriteStdin(s.ctx, &agentpb.WriteStreamRequest{ContainerId: s.cid, ExecId: s.execID, Data: data})
				if err != nil {
					return // the process is gone or its stdin closed
				}
				if resp.Len == 0 || int(resp.Len) > len(data) {
					return
				}
				data = data[resp.Len:]
			}
			if rerr != nil {
				ctx, cancel := context.WithTimeout(s.ctx, s.e.timeout)
				s.c.CloseStdin(ctx, &agentpb.CloseStdinRequest{ContainerId: s.cid, ExecId: s.execID})
				cancel()
				return
			}
		}
	}()
}

// consoleSize is the size of our terminal, for a tty process's spec: the
// process starts with it, instead of racing the first TtyWinResize. nil
// without a local terminal.
func (e *env) consoleSize() *agentpb.Box {
	f, ok := e.stdin.(*os.File)
	if !ok {
		return nil
	}
	con, err := console.ConsoleFromFile(f)
	if err != nil {
		return nil
	}
	size, err := con.Size()
	if err != nil || size.Height == 0 || size.Width == 0 {
		return nil
	}
	return &agentpb.Box{Height: uint32(size.Height), Width: uint32(size.Width)}
}

// setupTerminal puts our terminal in raw mode and keeps the process's window
// size in step with it. Without a local terminal it does nothing.
func (s *session) setupTerminal() error {
	f, ok := s.e.stdin.(*os.File)
	if !s.tty || !ok {
		return nil
	}
	con, err := console.ConsoleFromFile(f)
	if err != nil {
		return nil // not a terminal: stream as plain bytes
	}
	if err := con.SetRaw(); err != nil {
		return fmt.Errorf("terminal raw mode: %w", err)
	}
	s.term = con
	s.resize()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		defer signal.Stop(winch)
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-winch:
				s.resize()
			}
		}
	}()
	return nil
}

func (s *session) resize() {
	size, err := s.term.Size()
	if err != nil || size.Height == 0 || size.Width == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.e.timeout)
	defer cancel()
	s.c.TtyWinResize(ctx, &agentpb.TtyWinResizeRequest{
		ContainerId: s.cid, ExecId: s.execID, Row: uint32(size.Height), Column: uint32(size.Width),
	})
}

// forwardSignals relays the signals a user sends agent-ctl to the process.
// With a raw terminal ^C and friends arrive as input bytes instead.
func (s *session) forwardSignals() {
	sigs := []os.Signal{syscall.SIGTERM, syscall.SIGHUP}
	if s.term == nil {
		sigs = append(sigs, syscall.SIGINT, syscall.SIGQUIT)
	}
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-s.ctx.Done():
				return
			case sig := <-ch:
				ctx, cancel := context.WithTimeout(s.ctx, s.e.timeout)
				s.c.SignalProcess(ctx, &agentpb.SignalProcessRequest{
					ContainerId: s.cid, ExecId: s.execID, Signal: uint32(sig.(syscall.Signal)),
				})
				cancel()
			}
		}
	}()
}

// attach starts streaming once the process exists.
func (s *session) attach() error {
	if err := s.setupTerminal(); err != nil {
		return err
	}
	s.startOutput()
	s.startInput()
	s.forwardSignals()
	return nil
}

// wait waits for the process, then for its output to drain, and returns
// its exit status.
func (s *session) wait() (int32, error) {
	resp, err := s.c.WaitProcess(s.ctx, &agentpb.WaitProcessRequest{ContainerId: s.cid, ExecId: s.execID})
	drained := make(chan struct{})
	go func() { s.readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainGrace):
		fmt.Fprintf(s.e.stderr, "agent-ctl: output of %s did not end %s after exit; giving up\n", s.cid, drainGrace)
	}
	if err != nil {
		return 0, fmt.Errorf("wait: %w", err)
	}
	return resp.Status, nil
}

// close restores the terminal and stops the helpers.
func (s *session) close() {
	s.cancel()
	if s.term != nil {
		s.term.Reset()
	}
}
