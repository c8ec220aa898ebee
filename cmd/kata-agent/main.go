// Command kata-agent is the guest agent of a Kata Containers sandbox: the
// VM's init (PID 1), serving the Kata agent API over gRPC and ttrpc on one
// channel, and libcontainer's re-exec entry point ("kata-agent init").
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kguest/kguest/agent"
	"github.com/kguest/kguest/agent/channel"
	// libcontainer's re-exec ("kata-agent init") is handled in that
	// package's init, before the agent's own packages are initialized.
	_ "github.com/kguest/kguest/agent/container/reexec"
	"github.com/kguest/kguest/agent/server"
	"github.com/kguest/kguest/init/cmdline"
	"github.com/kguest/kguest/init/logging"
	"github.com/kguest/kguest/init/pid1"
	"github.com/kguest/kguest/init/reaper"
	"github.com/kguest/kguest/internal/version"
)

const usage = `usage: kata-agent [--version]

kata-agent is configured by the kernel command line (agent.* options) and
the environment (KATA_AGENT_SERVER_ADDR, KATA_AGENT_LOG_LEVEL,
KATA_AGENT_LOG_FORMAT, KATA_AGENT_POLICY_FILE).
`

// action is what the command line asks of main.
type action int

const (
	actRun action = iota
	actVersion
	actHelp
	actBadUsage
)

// parseArgs tells what args (os.Args[1:]) ask for. As PID 1, the kernel
// passes init every command-line word it does not know itself: arguments
// mean nothing then, and exiting would panic the kernel, so they are all
// returned as stray, to be logged and ignored.
func parseArgs(args []string, isPID1 bool) (act action, stray []string) {
	if isPID1 {
		return actRun, args
	}
	if len(args) == 0 {
		return actRun, nil
	}
	switch args[0] {
	case "--version", "-version", "version":
		return actVersion, nil
	case "-h", "--help", "-help", "help":
		return actHelp, nil
	}
	return actBadUsage, args
}

func main() {
	act, stray := parseArgs(os.Args[1:], pid1.IsPID1())
	switch act {
	case actVersion:
		fmt.Printf("kata-agent version %s (API %d)\n", version.Version, version.APIVersion)
		return
	case actHelp:
		fmt.Print(usage)
		return
	case actBadUsage:
		fmt.Fprintf(os.Stderr, "kata-agent: unknown argument %q\n%s", stray[0], usage)
		os.Exit(2)
	}
	defer func() {
		// A panic in the main goroutine must not kill PID 1 (which would
		// panic the kernel): power off cleanly, saying why.
		if r := recover(); r != nil {
			pid1.Poweroff(fmt.Sprintf("panic: %v\n%s", r, debug.Stack()))
		}
	}()
	if err := run(stray); err != nil {
		// As PID 1 this powers the VM off (returning would panic the
		// kernel); otherwise it exits non-zero.
		pid1.Fatal(err)
	}
	// Stopped by a signal (not PID 1): the last log lines are still queued.
	logging.Flush(time.Second)
}

func run(stray []string) error {
	cfg, warns := cmdline.Load()
	// On error the logger still works, on the console; Setup has logged why.
	log, _ := logging.Setup(cfg)
	routeLogrus(log)
	for _, w := range warns {
		log.Warn("kernel command line", "warning", w.String())
	}
	if len(stray) > 0 {
		log.Warn("ignoring arguments passed to init", "args", stray)
	}
	isInit := pid1.IsPID1()
	log.Info("starting", "version", version.Version, "pid1", isInit)

	if isInit {
		if err := pid1.Setup(cfg); err != nil {
			// Each step is independent; carry on with what worked.
			log.Error("pid1 set-up incomplete", "error", err)
		}
		pid1.SetupSignals()
	}
	// Reap from the start: orphans are re-parented to us.
	if _, err := reaper.Start(log); err != nil {
		return fmt.Errorf("reaper: %w", err)
	}

	a, err := agent.New(agent.Config{
		InitDaemon:        isInit,
		HotplugTimeout:    cfg.HotplugTimeout,
		ContainerPipeSize: cfg.ContainerPipeSize,
		Log:               log,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	agent.StartDebugConsole(cfg.DebugConsole, cfg.DebugConsoleVport, log)
	health := &agent.Health{}
	srv := server.New(server.Options{Logger: log})
	srv.Register(a, health)
	if agent.PolicyEnabled() {
		if err := a.LoadPolicy(cfg.PolicyFile); err != nil {
			return fmt.Errorf("policy %s: %w", cfg.PolicyFile, err)
		}
		srv.SetAuthorizer(a.Authorize)
	} else if cfg.PolicyFile != "" {
		log.Warn("policy file configured but this agent is built without the policy engine: it is not loaded and every request is allowed",
			"policy_file", cfg.PolicyFile)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	l, err := channel.Listen(ctx, channel.Config{Addr: cfg.ServerAddr, UseVsock: cfg.UseVsock}, log)
	cancel()
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	log.Info("serving", "addr", l.Addr().String())

	if !isInit {
		// Run as an ordinary process, SIGINT and SIGTERM stop it cleanly.
		go stopOnSignal(srv, health, log)
	}
	err = srv.Serve(l)
	if errors.Is(err, server.ErrServerClosed) && !isInit {
		return nil
	}
	return fmt.Errorf("serve: %w", err)
}

// stopOnSignal shuts the server down on SIGINT or SIGTERM, giving calls in
// flight a few seconds.
func stopOnSignal(srv *server.Server, health *agent.Health, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM)
	s := <-sig
	log.Info("shutting down", "signal", s.String())
	health.SetServing(false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown", "error", err)
	}
}
