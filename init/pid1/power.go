package pid1

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/kguest/kguest/init/logging"
	"golang.org/x/sys/unix"
)

// ConsolePath is where Poweroff writes its last words.
var ConsolePath = "/dev/console"

// keyboardSignals are the signals a console user can send by accident; they
// never stop the init. A handler (not SIG_IGN) is installed so that
// children get the default disposition back when they exec.
var keyboardSignals = []os.Signal{
	unix.SIGINT, unix.SIGQUIT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGHUP,
	// Without a handler a write to a closed stdout or stderr pipe would
	// kill a Go program.
	unix.SIGPIPE,
}

// SetupSignals keeps keyboard signals (and SIGPIPE) from killing the agent,
// and, when the agent is not PID 1, makes it the subreaper of its
// descendants so that container processes are still its to wait for.
func SetupSignals() {
	if !IsPID1() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			slog.Default().Warn("pid1: cannot become child subreaper", "error", err)
		}
	}
	sigs := keyboardSignals
	if IsPID1() {
		// The init must not die: a stray SIGTERM would panic the kernel.
		sigs = append(sigs, unix.SIGTERM)
	}
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, sigs...)
	go func() {
		for s := range ch {
			slog.Default().Debug("pid1: signal ignored", "signal", s.String())
		}
	}()
}

// Poweroff stops the VM: it logs the reason (on the console as well, where
// it is seen even when the logs go elsewhere), syncs and powers off. It never
// returns. When this process is not PID 1 it exits with status 1 instead.
func Poweroff(reason string) {
	slog.Default().Error("powering off", "reason", reason)
	// The logs reach the console asynchronously: let them out first, but
	// never wait long on a console that does not drain.
	logging.Flush(time.Second)
	if !IsPID1() {
		fmt.Fprintf(os.Stderr, "kata-agent: exiting: %s\n", reason)
		os.Exit(1)
	}
	writeConsole(fmt.Sprintf("kata-agent: powering off: %s\n", reason))
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Only reached if power-off is refused. Exiting would panic the
	// kernel, so halt, and failing that, wait forever.
	writeConsole(fmt.Sprintf("kata-agent: power off failed: %v; halting\n", err))
	unix.Reboot(unix.LINUX_REBOOT_CMD_HALT)
	for {
		time.Sleep(time.Hour)
	}
}

// Fatal is what the agent's main calls on an error it cannot recover from,
// in place of os.Exit: as PID 1 it powers the VM off, otherwise it exits
// non-zero. It never returns.
func Fatal(err error) {
	Poweroff(fmt.Sprintf("fatal error: %v", err))
}

// writeConsole never blocks: on a console that does not drain (XOFF, a
// host end that stopped reading) the words are lost, not the power-off.
func writeConsole(msg string) {
	f, err := os.OpenFile(ConsolePath, os.O_WRONLY|unix.O_NOCTTY|os.O_APPEND|unix.O_NONBLOCK, 0)
	if err != nil {
		os.Stderr.WriteString(msg)
		return
	}
	f.WriteString(msg)
	f.Close()
}
