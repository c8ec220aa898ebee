// Package reaper reaps the children of the agent without ever losing an
// exit status.
//
// The agent is a child subreaper (or PID 1), so orphans of containers are
// re-parented to it and must be waited for. A single loop reaps every exited
// child with wait4(-1, WNOHANG). A process is registered while the reaper
// lock is held across its creation, so its exit can never be consumed before
// its status has somewhere to go; statuses for unknown PIDs are dropped so no
// zombie remains.
//
// Consequently nothing else in the process may wait for children on its own:
// start them through Spawn (or Start/Run for an exec.Cmd), and hold the lock
// (Hold) across library calls that fork and wait internally, such as
// libcontainer's Start, Run and Destroy.
package reaper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reaper owns the children of this process.
type Reaper struct {
	mu    sync.Mutex // held while reaping and while children are created
	exits map[int]*Exit
	kick  chan struct{}
	log   *slog.Logger
}

var (
	startOnce sync.Once
	std       *Reaper
	startErr  error
	running   atomic.Pointer[Reaper]
)

// Start makes this process a child subreaper and starts the SIGCHLD loop.
// There is one reaper per process: later calls return the same one.
func Start(log *slog.Logger) (*Reaper, error) {
	startOnce.Do(func() {
		if log == nil {
			log = slog.Default()
		}
		if os.Getpid() != 1 {
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
				startErr = fmt.Errorf("set child subreaper: %w", err)
				return
			}
		}
		r := &Reaper{
			exits: make(map[int]*Exit),
			kick:  make(chan struct{}, 1),
			log:   log,
		}
		sig := make(chan os.Signal, 32)
		signal.Notify(sig, unix.SIGCHLD)
		go r.loop(sig)
		std = r
		running.Store(r)
	})
	return std, startErr
}

func (r *Reaper) loop(sig <-chan os.Signal) {
	for {
		select {
		case <-sig:
		case <-r.kick:
		}
		r.reap()
	}
}

// reap collects every child that has exited.
func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if !ws.Exited() && !ws.Signaled() {
			continue // stopped or continued: not an exit
		}
		e, ok := r.exits[pid]
		if !ok {
			r.log.Debug("reaped unregistered child", "pid", pid, "status", ExitCode(ws))
			continue
		}
		delete(r.exits, pid)
		e.finish(ws)
	}
}

func (r *Reaper) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Spawn calls fn with the reaper lock held and registers the PID it returns,
// so the exit of that process is kept for the returned Exit. fn may start and
// wait for intermediate processes itself: the reaper does not reap while fn
// runs.
func (r *Reaper) Spawn(fn func() (int, error)) (*Exit, error) {
	r.mu.Lock()
	pid, err := fn()
	if err != nil {
		r.mu.Unlock()
		r.poke()
		return nil, err
	}
	if pid <= 0 {
		r.mu.Unlock()
		r.poke()
		return nil, fmt.Errorf("spawn: invalid pid %d", pid)
	}
	e := &Exit{pid: pid, done: make(chan struct{})}
	r.exits[pid] = e
	r.mu.Unlock()
	// A SIGCHLD that came while the lock was held may have found nothing yet.
	r.poke()
	return e, nil
}

// Hold runs fn with the reaper lock held, for calls that create and wait for
// short-lived children internally.
func (r *Reaper) Hold(fn func() error) error {
	r.mu.Lock()
	err := fn()
	r.mu.Unlock()
	r.poke()
	return err
}

// Start starts cmd as a registered child. The caller must call cmd.Wait after
// the returned Exit is done to release cmd's pipes; its process error is then
// meaningless (the status belongs to the Exit).
func (r *Reaper) Start(cmd *exec.Cmd) (*Exit, error) {
	return r.Spawn(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
}

// Run runs cmd to completion and returns its exit code (128+signal when
// killed). Output captured by cmd's writers is complete when Run returns.
func (r *Reaper) Run(ctx context.Context, cmd *exec.Cmd) (int, error) {
	e, err := r.Start(cmd)
	if err != nil {
		return -1, err
	}
	code, werr := e.Wait(ctx)
	if werr != nil {
		_ = cmd.Process.Kill()
		code, _ = e.Wait(context.Background())
	}
	// The process is already reaped: Wait only finishes the I/O copying.
	if err := cmd.Wait(); err != nil && !isChildGone(err) {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return code, err
		}
	}
	return code, werr
}

// Output runs cmd like exec.Cmd.Output, through this process's reaper once
// one is running: a tool run by the agent must not be waited for on its own,
// or the reaper may take its exit status first. A non-zero exit is an
// *ExitError.
func Output(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	if cmd.Stdout != nil {
		return nil, errors.New("reaper: Stdout already set")
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	err := runCmd(ctx, cmd)
	return out.Bytes(), err
}

// CombinedOutput is Output with stderr and stdout in one buffer.
func CombinedOutput(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	if cmd.Stdout != nil || cmd.Stderr != nil {
		return nil, errors.New("reaper: Stdout or Stderr already set")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runCmd(ctx, cmd)
	return out.Bytes(), err
}

func runCmd(ctx context.Context, cmd *exec.Cmd) error {
	r := running.Load()
	if r == nil {
		if err := cmd.Start(); err != nil {
			return err
		}
		stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
		defer stop()
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
				return &ExitError{Code: ExitCode(unix.WaitStatus(ws))}
			}
			return &ExitError{Code: ee.ExitCode()}
		}
		return err
	}
	code, err := r.Run(ctx, cmd)
	if err != nil {
		return err
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

// ExitError reports a command that ran and failed.
type ExitError struct {
	Code int // exit status, or 128+signal
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

func isChildGone(err error) bool {
	return errors.Is(err, unix.ECHILD)
}

// Exit is the exit status of one registered process.
type Exit struct {
	pid    int
	done   chan struct{}
	status unix.WaitStatus
}

func (e *Exit) finish(ws unix.WaitStatus) {
	e.status = ws
	close(e.done)
}

// Pid is the process id.
func (e *Exit) Pid() int { return e.pid }

// Done is closed once the process has exited and been reaped.
func (e *Exit) Done() <-chan struct{} { return e.done }

// Exited reports whether the process has exited.
func (e *Exit) Exited() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// Wait waits for the exit and returns the exit code, 128+N when killed by
// signal N. It can be called any number of times.
func (e *Exit) Wait(ctx context.Context) (int, error) {
	select {
	case <-e.done:
		return ExitCode(e.status), nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Status is the raw wait status; valid once Done is closed.
func (e *Exit) Status() unix.WaitStatus {
	<-e.done
	return e.status
}

// ExitCode maps a wait status to a shell-style exit code.
func ExitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return -1
	}
}
