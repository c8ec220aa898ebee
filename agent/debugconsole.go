package agent

import (
	"context"
	"log/slog"

	"github.com/kguest/kguest/agent/console"
	"github.com/kguest/kguest/init/reaper"
)

// StartDebugConsole serves the debug console the kernel command line asks
// for (agent.debug_console, agent.debug_console_vport) for the life of the
// process. Shells are collected by the process's reaper. Failures are
// logged: the agent serves on without a console.
func StartDebugConsole(onConsole bool, vport uint32, log *slog.Logger) {
	if !onConsole && vport == 0 {
		return
	}
	if log == nil {
		log = slog.Default()
	}
	r, err := reaper.Start(log)
	if err != nil {
		log.Error("debug console: reaper", "error", err)
		return
	}
	err = console.Start(context.Background(), console.Options{Console: onConsole, Vport: vport, Reaper: r, Log: log})
	if err != nil {
		log.Error("debug console", "error", err)
		return
	}
	log.Info("debug console", "console", onConsole, "vport", vport)
}
