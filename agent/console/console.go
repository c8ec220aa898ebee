// Package console serves the agent's debug console: a shell on the VM's
// console (agent.debug_console) and/or a shell with a pty for each
// connection on a vsock port (agent.debug_console_vport). Either is
// restarted when it exits.
package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/kguest/kguest/init/reaper"
	"github.com/mdlayher/vsock"
)

// Options select the consoles to serve.
type Options struct {
	// Console runs a shell on ConsolePath (/dev/console).
	Console     bool
	ConsolePath string
	// Vport, when non-zero, serves a shell per connection on this vsock
	// port.
	Vport uint32
	// Shells are tried in order; the default is /bin/sh, /bin/bash,
	// /bin/busybox sh.
	Shells [][]string
	// Reaper, when the agent is PID 1, collects the shells' exit statuses.
	Reaper *reaper.Reaper
	// Listen opens the port's listener; vsock by default (tests use TCP).
	Listen func(port uint32) (net.Listener, error)
	Log    *slog.Logger
}

// restartDelay keeps a shell that dies at once from spinning.
const restartDelay = time.Second

// Start launches the consoles the options ask for and returns; they run
// until ctx ends.
func Start(ctx context.Context, o Options) error {
	if !o.Console && o.Vport == 0 {
		return nil
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.ConsolePath == "" {
		o.ConsolePath = "/dev/console"
	}
	if o.Listen == nil {
		o.Listen = func(port uint32) (net.Listener, error) { return vsock.Listen(port, nil) }
	}
	shell, err := findShell(o.Shells)
	if err != nil {
		return err
	}
	if o.Console {
		go o.serveConsole(ctx, shell)
	}
	if o.Vport != 0 {
		go o.serveVport(ctx, shell)
	}
	return nil
}

func findShell(cands [][]string) ([]string, error) {
	if len(cands) == 0 {
		cands = [][]string{{"/bin/sh"}, {"/bin/bash"}, {"/bin/busybox", "sh"}}
	}
	for _, c := range cands {
		if st, err := os.Stat(c[0]); err == nil && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return nil, errors.New("debug console: no shell found")
}

func (o *Options) shellCmd(shell []string) *exec.Cmd {
	cmd := exec.Command(shell[0], shell[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=vt100", "HOME=/"}
	cmd.Dir = "/"
	return cmd
}

// run starts cmd and waits for it, through the reaper when there is one.
func (o *Options) run(ctx context.Context, cmd *exec.Cmd, start func() error) error {
	if o.Reaper != nil {
		ex, err := o.Reaper.Spawn(func() (int, error) {
			if err := start(); err != nil {
				return 0, err
			}
			return cmd.Process.Pid, nil
		})
		if err != nil {
			return err
		}
		_, err = ex.Wait(context.WithoutCancel(ctx))
		return err
	}
	if err := start(); err != nil {
		return err
	}
	return cmd.Wait()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serveConsole runs the shell on the console with it as the controlling
// terminal, and starts a new one whenever it exits.
func (o *Options) serveConsole(ctx context.Context, shell []string) {
	for ctx.Err() == nil {
		began := time.Now()
		err := o.consoleOnce(ctx, shell)
		o.Log.Info("debug console shell exited", "err", err)
		if time.Since(began) < restartDelay && !sleepCtx(ctx, restartDelay) {
			return
		}
	}
}

func (o *Options) consoleOnce(ctx context.Context, shell []string) error {
	tty, err := os.OpenFile(o.ConsolePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", o.ConsolePath, err)
	}
	defer tty.Close()
	cmd := o.shellCmd(shell)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	return o.run(ctx, cmd, cmd.Start)
}

// serveVport accepts connections and gives each a shell on a new pty; the
// listener is reopened if it fails.
func (o *Options) serveVport(ctx context.Context, shell []string) {
	for ctx.Err() == nil {
		l, err := o.Listen(o.Vport)
		if err != nil {
			o.Log.Error("debug console listener", "port", o.Vport, "err", err)
			if !sleepCtx(ctx, restartDelay) {
				return
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { l.Close() })
		var wg sync.WaitGroup
		for {
			c, err := l.Accept()
			if err != nil {
				if ctx.Err() == nil {
					o.Log.Error("debug console accept", "err", err)
				}
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := o.serveConn(ctx, c, shell); err != nil {
					o.Log.Info("debug console session ended", "err", err)
				}
			}()
		}
		stop()
		l.Close()
		wg.Wait()
	}
}

func (o *Options) serveConn(ctx context.Context, c net.Conn, shell []string) error {
	defer c.Close()
	ptmx, tty, err := pty.Open()
	if err != nil {
		return err
	}
	defer ptmx.Close()
	cmd := o.shellCmd(shell)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	go func() { _, _ = io.Copy(ptmx, c) }()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, ptmx)
		close(done)
	}()
	err = o.run(ctx, cmd, func() error {
		err := cmd.Start()
		tty.Close() // the shell holds its own copy
		return err
	})
	// Drain what the shell wrote before it exited; the pty reads EIO once
	// no process holds the slave side.
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	return err
}
