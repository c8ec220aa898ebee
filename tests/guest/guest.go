package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"github.com/kguest/kguest/tests/qemu"
)

// Guest is a connection to the agent in a VM.
type Guest struct {
	client.Client
	VM     *qemu.VM
	Addr   string
	Dialer *client.Dialer
	// Ready is the host wall time from QEMU's start to the first answered
	// Health.Check.
	Ready time.Duration
}

// Addr is the serial:// address of vm's agent channel.
func Addr(vm *qemu.VM) string { return "serial://" + vm.AgentSock }

// Connect waits until the agent in vm answers Health.Check (ctx bounds the
// wait) and returns a client speaking p.
func Connect(ctx context.Context, vm *qemu.VM, p client.Protocol) (*Guest, error) {
	g := &Guest{VM: vm, Addr: Addr(vm), Dialer: &client.Dialer{}}
	// Stop waiting as soon as QEMU exits: the console tells why.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-vm.Done():
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := vm.WaitAgentPort(wctx, 0); err != nil {
		return nil, err
	}
	if err := g.Dialer.WaitReady(wctx, g.Addr, p); err != nil {
		if exited, werr := vm.Exited(); exited {
			return nil, fmt.Errorf("qemu exited before the agent was ready (%v): %w", werr, err)
		}
		return nil, err
	}
	g.Ready = time.Since(vm.Started)
	c, err := g.Dialer.New(ctx, g.Addr, p)
	if err != nil {
		return nil, err
	}
	g.Client = c
	return g, nil
}

// Reconnect drops the yamux session over the serial socket and makes a new
// client, as a host runtime does after it restarts.
func (g *Guest) Reconnect(ctx context.Context) error {
	p := g.Client.Protocol()
	_, before := g.VM.AgentPortOpen()
	g.Client.Close()
	g.Dialer.Close()
	// The agent closes the port when the host hangs up and opens it again
	// for a new session; connect once it has (or after a while, if the
	// agent keeps the port open).
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := g.VM.WaitAgentPort(wctx, before+1)
	cancel()
	if err != nil && ctx.Err() != nil {
		return err
	}
	c, err := g.Dialer.New(ctx, g.Addr, p)
	if err != nil {
		return err
	}
	g.Client = c
	return nil
}

// Close closes the client and the serial session.
func (g *Guest) Close() {
	if g.Client != nil {
		g.Client.Close()
	}
	g.Dialer.Close()
}

// Result is the outcome of a process.
type Result struct {
	Stdout, Stderr string
	Status         int32
}

// isEOF tells the end of a stream from a failure: the agent answers a read
// past the end with an error that says EOF.
func isEOF(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	s, ok := status.FromError(err)
	return ok && strings.Contains(strings.ToLower(s.Message()), "eof")
}

// ReadAll reads a process's stdout (or stderr) until EOF.
func (g *Guest) ReadAll(ctx context.Context, cid, execID string, stderr bool) ([]byte, error) {
	var buf bytes.Buffer
	for {
		req := &agentpb.ReadStreamRequest{ContainerId: cid, ExecId: execID, Len: 32 << 10}
		var resp *agentpb.ReadStreamResponse
		var err error
		if stderr {
			resp, err = g.ReadStderr(ctx, req)
		} else {
			resp, err = g.ReadStdout(ctx, req)
		}
		if err != nil {
			if isEOF(err) {
				return buf.Bytes(), nil
			}
			return buf.Bytes(), err
		}
		if len(resp.Data) == 0 {
			return buf.Bytes(), nil
		}
		buf.Write(resp.Data)
	}
}

// Collect reads stdout and stderr of a process until both end, then waits
// for it.
func (g *Guest) Collect(ctx context.Context, cid, execID string, tty bool) (Result, error) {
	var (
		wg         sync.WaitGroup
		out, errb  []byte
		oerr, eerr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, oerr = g.ReadAll(ctx, cid, execID, false)
	}()
	if !tty {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errb, eerr = g.ReadAll(ctx, cid, execID, true)
		}()
	}
	wg.Wait()
	r := Result{Stdout: string(out), Stderr: string(errb)}
	if oerr != nil {
		return r, fmt.Errorf("read stdout: %w", oerr)
	}
	if eerr != nil {
		return r, fmt.Errorf("read stderr: %w", eerr)
	}
	w, err := g.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: cid, ExecId: execID})
	if err != nil {
		return r, fmt.Errorf("wait: %w", err)
	}
	r.Status = w.Status
	return r, nil
}

// Create creates a container (not started).
func (g *Guest) Create(ctx context.Context, id string, spec *agentpb.Spec, storages ...*agentpb.Storage) error {
	_, err := g.CreateContainer(ctx, &agentpb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: spec, Storages: storages})
	if err != nil {
		return fmt.Errorf("create container %s: %w", id, err)
	}
	return nil
}

// Start starts a created container.
func (g *Guest) Start(ctx context.Context, id string) error {
	if _, err := g.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// Remove removes a container.
func (g *Guest) Remove(ctx context.Context, id string) error {
	if _, err := g.RemoveContainer(ctx, &agentpb.RemoveContainerRequest{ContainerId: id, Timeout: 10}); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// Run creates, starts and waits for a container, collects its output and
// removes it (like `ctr run --rm`).
func (g *Guest) Run(ctx context.Context, id string, spec *agentpb.Spec, storages ...*agentpb.Storage) (Result, error) {
	if err := g.Create(ctx, id, spec, storages...); err != nil {
		return Result{}, err
	}
	if err := g.Start(ctx, id); err != nil {
		g.Remove(ctx, id)
		return Result{}, err
	}
	r, err := g.Collect(ctx, id, id, spec.Process.Terminal)
	if rerr := g.Remove(ctx, id); err == nil {
		err = rerr
	}
	return r, err
}

// Exec runs a process in a running container to completion.
func (g *Guest) Exec(ctx context.Context, cid, execID string, tty bool, args ...string) (Result, error) {
	_, err := g.ExecProcess(ctx, &agentpb.ExecProcessRequest{ContainerId: cid, ExecId: execID, Process: ProcessSpec(tty, args...)})
	if err != nil {
		return Result{}, fmt.Errorf("exec %s in %s: %w", execID, cid, err)
	}
	return g.Collect(ctx, cid, execID, tty)
}

// Code is the gRPC code of err (OK for nil).
func Code(err error) codes.Code { return status.Code(err) }
