package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kguest/kguest/init/reaper"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Process is one process of a container: its init or an exec.
type Process struct {
	ID   string // exec id; "" for the init process
	Init bool
	TTY  bool

	exit *reaper.Exit

	mu      sync.Mutex
	stdin   *os.File // pipe write end, or the pty master
	console *os.File // pty master (tty only)
	stdout  *stream
	stderr  *stream
}

// stdio is the child side of a process's stdio during its start.
type stdio struct {
	proc *Process
	// child ends, closed after start
	child []*os.File
	// console socket, parent end
	consoleParent *os.File
}

func (s *stdio) closeChild() {
	for _, f := range s.child {
		f.Close()
	}
	s.child = nil
}

func (s *stdio) closeAll() {
	s.closeChild()
	if s.consoleParent != nil {
		s.consoleParent.Close()
	}
	if s.proc.stdin != nil {
		s.proc.stdin.Close()
	}
	for _, st := range []*stream{s.proc.stdout, s.proc.stderr} {
		if st != nil {
			st.f.Close()
		}
	}
}

// setupStdio prepares pipes, or a console socket for a tty, on lp.
func setupStdio(p *Process, sp *specs.Process, lp *libcontainer.Process, pipeSize int) (*stdio, error) {
	s := &stdio{proc: p}
	if p.TTY {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("console socket: %w", err)
		}
		s.consoleParent = os.NewFile(uintptr(fds[0]), "console-parent")
		child := os.NewFile(uintptr(fds[1]), "console-child")
		s.child = append(s.child, child)
		lp.ConsoleSocket = child
		if sp.ConsoleSize != nil {
			lp.ConsoleWidth = uint16(sp.ConsoleSize.Width)
			lp.ConsoleHeight = uint16(sp.ConsoleSize.Height)
		}
		return s, nil
	}
	var pipes [3][2]*os.File
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("stdio pipe: %w", err)
		}
		pipes[i] = [2]*os.File{r, w}
		if pipeSize > 0 {
			// Best effort: the limit for unprivileged pipes may be lower.
			if conn, err := w.SyscallConn(); err == nil {
				_ = conn.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
			}
		}
		if i == 0 {
			s.child = append(s.child, r)
			p.stdin = w
		} else {
			s.child = append(s.child, w)
			if i == 1 {
				p.stdout = newStream(r, drainIdle)
			} else {
				p.stderr = newStream(r, drainIdle)
			}
		}
	}
	lp.Stdin, lp.Stdout, lp.Stderr = pipes[0][0], pipes[1][1], pipes[2][1]
	return s, nil
}

// finish is called once the process has started: it drops the child ends,
// receives the pty master for a tty and starts the output pumps.
func (s *stdio) finish() error {
	s.closeChild()
	p := s.proc
	if p.TTY {
		master, err := recvFd(s.consoleParent)
		s.consoleParent.Close()
		s.consoleParent = nil
		if err != nil {
			return fmt.Errorf("receive pty master: %w", err)
		}
		p.console = master
		p.stdin = master
		// The pump owns the master's read side and closes it; stdin writes
		// share it until then.
		p.stdout = newStream(master, ttyDrainIdle)
	}
	for _, st := range []*stream{p.stdout, p.stderr} {
		if st != nil {
			go st.pump(p.exit.Done())
		}
	}
	return nil
}

// recvFd receives one file descriptor sent with SCM_RIGHTS and returns it
// as a non-blocking (pollable) file.
func recvFd(sock *os.File) (*os.File, error) {
	conn, err := sock.SyscallConn()
	if err != nil {
		return nil, err
	}
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	var (
		n, oobn int
		rerr    error
	)
	if err := conn.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), name, oob, unix.MSG_CMSG_CLOEXEC)
		return rerr != unix.EAGAIN
	}); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("expected one control message, got %d", len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return nil, err
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("expected one fd, got %d", len(fds))
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

// Pid is the process id in the agent's pid namespace.
func (p *Process) Pid() int { return p.exit.Pid() }

// Exit gives the process's exit, from the reaper.
func (p *Process) Exit() *reaper.Exit { return p.exit }

// Wait waits for the process to exit and returns its exit code (128+N when
// killed by signal N). It can be called any number of times.
func (p *Process) Wait(ctx context.Context) (int, error) {
	return p.exit.Wait(ctx)
}

// WriteStdin writes to the process's stdin; it gives up when ctx ends.
func (p *Process) WriteStdin(ctx context.Context, b []byte) (int, error) {
	p.mu.Lock()
	f := p.stdin
	p.mu.Unlock()
	if f == nil {
		return 0, fmt.Errorf("stdin is closed: %w", os.ErrClosed)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Now()) })
	defer stop()
	n, err := f.Write(b)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return n, err
}

// CloseStdin closes stdin: the pipe for a plain process; for a tty it sends
// the end-of-file character, as the master must stay open for the output.
func (p *Process) CloseStdin() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin == nil {
		return nil
	}
	if p.TTY {
		_, err := p.stdin.Write([]byte{4}) // VEOF (^D)
		if errors.Is(err, os.ErrClosed) {
			err = nil
		}
		return err
	}
	err := p.stdin.Close()
	p.stdin = nil
	return err
}

// ReadStdout returns up to n bytes of output, blocking until some is there;
// io.EOF once the process has exited and its output is drained.
func (p *Process) ReadStdout(ctx context.Context, n int) ([]byte, error) {
	if p.stdout == nil {
		return nil, io.EOF
	}
	return p.stdout.Read(ctx, n)
}

// ReadStderr is ReadStdout for stderr; a tty process has none (io.EOF).
func (p *Process) ReadStderr(ctx context.Context, n int) ([]byte, error) {
	if p.stderr == nil {
		return nil, io.EOF
	}
	return p.stderr.Read(ctx, n)
}

// Unread puts back output that could not be delivered.
func (p *Process) Unread(stderr bool, b []byte) {
	if st := p.stdout; !stderr && st != nil {
		st.unread(b)
	} else if st := p.stderr; stderr && st != nil {
		st.unread(b)
	}
}

// Resize sets the window size of a tty process.
func (p *Process) Resize(width, height uint16) error {
	if !p.TTY || p.console == nil {
		return fmt.Errorf("%w: process has no terminal", ErrInvalid)
	}
	conn, err := p.console.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := conn.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: height, Col: width})
	}); err != nil {
		return err
	}
	return ierr
}

// afterExit releases stdin once the process is gone; the output pumps
// release their own ends once drained.
func (p *Process) afterExit() {
	<-p.exit.Done()
	p.mu.Lock()
	if p.stdin != nil && !p.TTY {
		p.stdin.Close()
	}
	p.stdin = nil
	p.mu.Unlock()
}

// release drops everything the process holds, read or not.
func (p *Process) release() {
	p.mu.Lock()
	if p.stdin != nil && !p.TTY {
		p.stdin.Close()
	}
	p.stdin = nil
	p.mu.Unlock()
	for _, st := range []*stream{p.stdout, p.stderr} {
		if st != nil {
			st.Close()
		}
	}
}

// catchesSignal tells whether pid has a handler installed for sig
// (SigCgt in /proc/PID/status).
func catchesSignal(pid int, sig unix.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "SigCgt:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return false
		}
		return mask&(1<<(uint(sig)-1)) != 0
	}
	return false
}

// initLogLevel is the log level for libcontainer's init re-exec: what the
// agent's logrus keeps, but never below fatal, as fatal messages from the
// init are how its failures reach the error Start returns. Without it the
// init's C part (nsexec) logs at debug level, formatting and sending a dozen
// JSON lines per process that the agent then parses only to drop them.
func initLogLevel() string {
	return strconv.Itoa(int(max(logrus.GetLevel(), logrus.FatalLevel)))
}

// libcontainerProcess builds the libcontainer process for a spec process.
func libcontainerProcess(sp *specs.Process, init bool) *libcontainer.Process {
	lp := &libcontainer.Process{
		Args:            sp.Args,
		Env:             sp.Env,
		Cwd:             sp.Cwd,
		UID:             int(sp.User.UID),
		GID:             int(sp.User.GID),
		Init:            init,
		Label:           sp.SelinuxLabel,
		AppArmorProfile: sp.ApparmorProfile,
		LogLevel:        initLogLevel(),
	}
	for _, g := range sp.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	if !init {
		nnp := sp.NoNewPrivileges
		lp.NoNewPrivileges = &nnp
		if c := sp.Capabilities; c != nil {
			lp.Capabilities = &configs.Capabilities{
				Bounding:    c.Bounding,
				Effective:   c.Effective,
				Inheritable: c.Inheritable,
				Permitted:   c.Permitted,
				Ambient:     c.Ambient,
			}
		}
	}
	return lp
}
